"""What runs inside a Dask task besides the work: breadcrumbs, corrupt-file errors, the memory pool.

Every pass that opens data files on the workers (footers, moments, the transform)
leaves a :func:`breadcrumb` before it reads a file and reports an unreadable one
with :func:`corrupt_file`, so that the culprit is named the same way in every pass.
Every task runs through :func:`run_task` (see :func:`reusing_pool`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import DataError, exception_text

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


def corrupt_file(rel: str, exc: BaseException) -> DataError:
    """The error for a data file that cannot be read past its footer."""
    return DataError(f"cannot read {rel}: {exception_text(exc, 300)}; the file is corrupt: "
                     "replace or remove it", path=rel)


# Arrow's default pool in Linux wheels; only when it is still in place is it replaced.
_STOCK_POOL = "mimalloc"
_pool_lock = threading.Lock()
_pool_tasks = 0
_pool_saved: Any = None  # the pool to restore when the last running task ends


def run_task(fn: Callable[[Any], Any], batch: Any) -> Any:
    """``fn(batch)``, the body of every task a :class:`~pipeline.session.Session` submits."""
    with reusing_pool():
        return fn(batch)


@contextlib.contextmanager
def reusing_pool() -> Iterator[None]:
    """While zscore's tasks run in this process, Arrow allocates from its jemalloc pool.

    Arrow's stock pool (mimalloc) hands freed memory back to the kernel at once, so
    each file's buffers are fresh pages that the kernel must fault in and zero.  In
    the task thread of a ``dask worker`` process that cost about a quarter of the CPU
    time (one file of bench M: fit 94-103 ms, transform 234-257 ms; with jemalloc
    68-72 and 172-175 ms).  jemalloc keeps freed pages for about a second (Arrow's
    setting), long enough for the next file to reuse them, and leaves the C library's
    ``malloc`` alone (unlike ``mallopt``, which would also change what Dask reports as
    unmanaged memory).  The same for the embedded cluster's threads, which used to
    make Arrow share ``malloc`` for good: against that, jemalloc during the tasks only
    measured 0.97x the CPU on M (peak memory 623 against 685 MiB) and 0.93x on 10,000
    small files (whole runs, 5 and 3 pairs), and leaves the caller's process with the
    pool it had.  The process-wide default pool is swapped when the first task
    starts and put back when the last one ends, so the workers of a shared cluster are
    as they were between zscore's tasks; other code that allocates with Arrow in the
    same process while a zscore task runs gets jemalloc too (its buffers stay valid:
    each one is freed to the pool it came from).  Nothing changes when the pool is not
    Arrow's stock one (the user chose one), when ``ARROW_DEFAULT_MEMORY_POOL`` is set,
    or when this pyarrow has no jemalloc.
    """
    global _pool_tasks, _pool_saved
    import pyarrow as pa

    with _pool_lock:
        if _pool_tasks == 0:
            _pool_saved = _swap_in_jemalloc(pa)
        _pool_tasks += 1
    try:
        yield
    finally:
        with _pool_lock:
            _pool_tasks -= 1
            if _pool_tasks == 0 and _pool_saved is not None:
                if pa.default_memory_pool().backend_name == "jemalloc":
                    pa.set_memory_pool(_pool_saved)  # unless someone chose another since
                _pool_saved = None


def _swap_in_jemalloc(pa: Any) -> Any:
    """Make jemalloc Arrow's default pool; the pool it replaced, or None if left as it was."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "").strip():
        return None
    current = pa.default_memory_pool()
    if current.backend_name != _STOCK_POOL:
        return None
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except (NotImplementedError, pa.ArrowException):  # a build without jemalloc
        return None
    return current
