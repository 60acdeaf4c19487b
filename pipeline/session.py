"""Running one pass over files on a Dask cluster: batches, progress, failures named.

:class:`Session` batches files into a bounded number of tasks, shows progress,
returns results in input order, and turns cluster failures into
:mod:`pipeline.errors` exceptions that name the files involved.  Where the
cluster comes from is :mod:`pipeline.cluster`'s business.  This module holds no
pipeline logic.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ClusterError, ZscoreError, option
from .interrupt import check, checkpoint
from .progress import Console
from .worker import BREADCRUMBS

MAX_TASKS = 512  # per pass: bounds graph size and scheduler overhead for 10,000s of files


class Session:
    """One client connection plus the console; runs batched passes over files."""

    def __init__(self, client: Any, console: Console | None = None, *, local: bool = False,
                 dashboard: str | None = None):
        self.client = client
        self.console = console or Console.library()
        self.local = local
        self.dashboard = dashboard
        self.startup_seconds = 0.0  # set by connect(): starting or reaching the cluster
        # An embedded cluster keeps its workers (nannies restart dead ones); an external
        # one can lose them all, and Dask then waits for new ones for ever.
        self.no_workers_seconds = None if local else no_workers_timeout()
        self._stalled: ZscoreError | None = None

    @property
    def nthreads(self) -> int:
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # noqa: BLE001 - only a sizing hint
            return 1

    def warn(self, text: str) -> None:
        self.console.warn(text)

    def mapper(self, fn: Callable[[list[Any]], list[Any]], items: Sequence[Any], *,
               label: str) -> list[Any]:
        """``dataset.load_dataset``'s mapper: :meth:`map` without weights."""
        return self.map(fn, items, label=label)

    def map(self, fn: Callable[[list[Any]], list[Any]], items: Sequence[Any], *, label: str,
            weights: Sequence[int] | None = None, rows: Sequence[int] | None = None,
            describe: Callable[[Any], str] | None = None,
            on_result: Callable[[Any, Any], None] | None = None) -> list[Any]:
        """Run ``fn(batch) -> per-item results`` over batches of ``items`` on the cluster.

        Returns the per-item results in the order of ``items``.  ``describe``
        names an item (a file) in error messages; ``on_result(item, result)`` is
        called on the client as results arrive (in completion order).

        Raises
        ------
        ZscoreError
            The first error a task raised (a :class:`~pipeline.errors.DataError`
            names its file), or :class:`~pipeline.errors.ClusterError` when a task
            kept killing its workers, the scheduler went away, or it had no workers
            for longer than :func:`no_workers_timeout`.
        """
        from distributed import as_completed

        items = list(items)
        if not items:
            return []
        batches = plan_batches(list(weights) if weights is not None else None, self.nthreads,
                               len(items))
        weights = list(weights) if weights is not None else [1] * len(items)
        token = uuid.uuid4().hex[:8]
        futures = []
        index = {}
        for b, (lo, hi) in enumerate(batches):
            fut = self.client.submit(fn, items[lo:hi],
                                     key=f"zscore-{label}-{token}-{b:05d}", pure=False,
                                     retries=0)
            futures.append(fut)
            index[fut.key] = (lo, hi)
        progress = self.console.progress(label, len(items),
                                         sum(weights) if weights and max(weights) > 1 else 0,
                                         total_rows=sum(rows) if rows else 0)
        results: list[Any] = [None] * len(items)
        try:
            checkpoint(label)
            with _NoWorkers(self, futures):
                for fut in as_completed(futures, loop=self.client.loop):
                    lo, hi = index[fut.key]
                    if fut.status != "finished":
                        raise self._failure(fut, items[lo:hi], describe)
                    batch = fut.result()
                    results[lo:hi] = batch
                    if on_result is not None:
                        for item, res in zip(items[lo:hi], batch, strict=True):
                            on_result(item, res)
                    progress.update(hi - lo, sum(weights[lo:hi]) if progress.total_bytes else 0,
                                    sum(rows[lo:hi]) if rows else 0)
                    fut.release()
                    check()
        except ZscoreError:
            self._stop(futures, progress)
            raise
        except (OSError, TimeoutError):  # distributed's CommClosedError is an OSError
            self._stop(futures, progress)
            raise self._lost() from None
        except BaseException:
            self._stop(futures, progress)
            raise
        progress.close()
        return results

    def _culprit(self) -> str | None:
        """The file that workers which died were reading most often (their breadcrumbs)."""
        from collections import Counter

        try:
            events = self.client.get_events(BREADCRUMBS)
            alive = set(self.client.scheduler_info(n_workers=-1)["workers"])
        except Exception:  # noqa: BLE001 - best effort: fall back to Dask's guess
            return None
        last: dict[str, str] = {}
        for _, msg in events:
            if isinstance(msg, dict) and "worker" in msg:
                last[msg["worker"]] = msg["file"]
        dead = Counter(f for w, f in last.items() if w not in alive)
        return dead.most_common(1)[0][0] if dead else None

    def _lost(self) -> ClusterError:
        address = getattr(self.client.scheduler, "address", None) or "?"
        return ClusterError(f"lost the connection to the Dask scheduler {address}; nothing "
                            "was published; rerun when the cluster is back")

    def _stop(self, futures: list[Any], progress: Any) -> None:
        progress.abort()
        self._cancel(futures)

    def _cancel(self, futures: list[Any]) -> None:
        if self.client.status == "running":
            with contextlib.suppress(Exception):
                self.client.cancel(futures, force=True)

    def _failure(self, fut: Any, batch: list[Any], describe: Callable[[Any], str] | None
                 ) -> BaseException:
        if self._stalled is not None:
            return self._stalled
        names = [describe(i) if describe else _name(i) for i in batch]
        shown = ", ".join(names[:3]) + (f" (and {len(names) - 3} more)" if len(names) > 3
                                        else "")
        try:
            exc = fut.exception()
        except Exception as e:  # noqa: BLE001 - a cancelled future raises here
            exc = e
        if isinstance(exc, ZscoreError):
            return exc
        kind = type(exc).__name__
        if kind == "KilledWorker":
            culprit = self._culprit()
            if culprit:
                shown = culprit
            return ClusterError(f"the task reading {shown} killed its worker repeatedly "
                                "(crash or out of memory on that input); check the file or "
                                f"give workers more memory with {option('memory_limit')}")
        if kind in ("CancelledError", "FutureCancelledError") or fut.status == "cancelled":
            return self._lost()
        text = " ".join(str(exc).split())[:300]
        return ClusterError(f"a task reading {shown} failed: {kind}: {text}")


NO_WORKERS_SECONDS = 300.0  # when Dask's distributed.scheduler.no-workers-timeout is unset


def no_workers_timeout() -> float:
    """How long a run waits while its cluster has no worker at all (then it fails, exit 1).

    Dask's own ``distributed.scheduler.no-workers-timeout`` (for example
    ``DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT=10m``), else 300 s: long enough
    for an adaptive cluster to start a worker, short of hanging for ever.
    """
    import dask
    from dask.utils import parse_timedelta

    value = dask.config.get("distributed.scheduler.no-workers-timeout", None)
    seconds = parse_timedelta(value, default="seconds") if value is not None else None
    return float(seconds) if seconds else NO_WORKERS_SECONDS


class _NoWorkers:
    """While a pass runs: cancel it once the cluster has had no worker for too long."""

    def __init__(self, session: Session, futures: list[Any]):
        self.session, self.futures = session, futures
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _NoWorkers:
        if self.session.no_workers_seconds:
            self._thread = threading.Thread(target=self._watch, name="zscore-workers",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        session, limit = self.session, float(self.session.no_workers_seconds or 0)
        since: float | None = None
        while not self._done.wait(1.0):
            try:
                workers = len(session.client.nthreads())
            except Exception:  # noqa: BLE001 - a lost scheduler is the pass's own error
                continue
            if workers:
                since = None
                continue
            since = since or time.monotonic()
            if time.monotonic() - since > limit:
                address = getattr(session.client.scheduler, "address", None) or "?"
                session._stalled = ClusterError(
                    f"the Dask scheduler {address} has had no workers for {limit:g} s; nothing "
                    "was published; rerun when it has workers (distributed.scheduler."
                    "no-workers-timeout sets how long to wait)")
                session._cancel(self.futures)
                return


def _name(item: Any) -> str:
    """A file's relative path for messages (items are SourceFiles or tuples starting with one)."""
    first = item[0] if isinstance(item, tuple) and item else item
    return str(getattr(first, "rel", None) or item)


BYTES_PER_TASK = 32 << 20  # enough work per task that its ~3 ms of scheduling is noise
ITEMS_PER_TASK = 64  # for unweighted items (footers): a few ms of work each


def plan_batches(weights: Sequence[int] | None, nthreads: int, n: int | None = None
                 ) -> list[tuple[int, int]]:
    """Split ``n`` items (``len(weights)``) into contiguous ``(lo, hi)`` batches.

    As many tasks as the work is worth (bytes / ``BYTES_PER_TASK``, or items /
    ``ITEMS_PER_TASK``), but at least ``8 * nthreads`` for load balance and
    progress, at most ``MAX_TASKS``, and never more than there are items.  Cuts
    fall where the running weight crosses an equal share.
    """
    n = len(weights) if weights is not None else int(n or 0)
    if weights is None or not sum(weights):
        weights, worth = [1] * n, -(-n // ITEMS_PER_TASK)
    else:
        worth = -(-sum(weights) // BYTES_PER_TASK)
    tasks = min(n, MAX_TASKS, max(8 * nthreads, worth))
    if tasks == n:
        return [(i, i + 1) for i in range(n)]
    total = float(sum(weights))
    bounds = [0]
    acc = 0.0
    for i, wi in enumerate(weights):
        acc += wi
        if acc >= total * len(bounds) / tasks and i + 1 < n and len(bounds) < tasks:
            bounds.append(i + 1)
    bounds.append(n)
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]
