"""What runs inside a Dask task besides the work itself: breadcrumbs and the corrupt-file error.

Every pass that opens data files on the workers (footers, moments, the transform)
leaves a :func:`breadcrumb` before it reads a file and reports an unreadable one
with :func:`corrupt_file`, so that the culprit is named the same way in every pass.
"""

from __future__ import annotations

from .errors import DataError, exception_text

BREADCRUMBS = "zscore-reading"


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
    try:
        worker.log_event(BREADCRUMBS, {"file": rel, "worker": worker.address})
    except Exception:  # noqa: BLE001 - a breadcrumb must never fail a task
        pass


def corrupt_file(rel: str, exc: BaseException) -> DataError:
    """The error for a data file that cannot be read past its footer."""
    return DataError(f"cannot read {rel}: {exception_text(exc, 300)}; the file is corrupt: "
                     "replace or remove it", path=rel)
