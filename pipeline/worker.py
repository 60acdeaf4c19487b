"""What runs inside a Dask task besides the work: breadcrumbs and corrupt-file errors.

Every pass that opens data files on the workers (footers, moments, the transform)
leaves a :func:`breadcrumb` before it reads a file and reports an unreadable one
with :func:`corrupt_file`, so that the culprit is named the same way in every pass.

Memory: zscore leaves the worker's Arrow memory pool as it is (a shared cluster's
other users, and a pool the user chose, are left alone).  Its kernels take their
large arrays from that pool (:func:`pipeline.columns.empty`), so a worker started
by Dask's nanny, whose ``MALLOC_TRIM_THRESHOLD_`` makes every large ``malloc`` a
fresh mapping, reuses memory instead of faulting in new pages for every array.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ClusterError, DataError, ZscoreError, exception_text, option

BREADCRUMBS = "zscore-reading"

# Addresses of the workers that are threads of this process (the embedded threads cluster).
_IN_PROCESS: set[str] = set()


def in_process(addresses: Iterable[str]) -> None:
    """Tell :func:`breadcrumb` that the workers at ``addresses`` are threads of this process.

    Such a worker cannot die alone (it takes the client with it), so nobody would read
    its breadcrumbs; and each one costs a wake-up of the event loop that the task
    threads share with the client (a tenth of the run on 10,000 small files).
    """
    _IN_PROCESS.update(addresses)


def breadcrumb(rel: str) -> None:
    """Tell the scheduler which file this worker starts reading (kept if the worker dies).

    When a task keeps killing its workers, Dask blames whichever tasks were on the
    dying workers, innocent ones included; the last breadcrumb of each dead
    worker names the file that really killed it.  A no-op outside a Dask worker.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    if worker.address in _IN_PROCESS:
        return
    try:
        worker.log_event(BREADCRUMBS, {"file": rel, "worker": worker.address})
    except Exception:  # noqa: BLE001 - a breadcrumb must never fail a task
        pass


def corrupt_file(rel: str, exc: BaseException) -> ZscoreError:
    """The error for a data file that cannot be read past its footer.

    Running out of memory is not the file's fault (pyarrow's ``ArrowMemoryError`` is
    also an ``ArrowException``, caught with the read errors): a :class:`ClusterError`
    (exit 1) that names the file, not a corrupt file (exit 2).
    """
    if isinstance(exc, MemoryError):
        return ClusterError(f"out of memory while reading {rel} ({exception_text(exc, 200)}): "
                            "give the workers more memory, or run fewer of them at once "
                            f"({option('workers')})", path=rel)
    return DataError(f"cannot read {rel}: {exception_text(exc, 300)}; the file is corrupt: "
                     "replace or remove it", path=rel)
