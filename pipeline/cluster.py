"""Where the work runs: an existing Dask scheduler, or an embedded local cluster.

The address is chosen as dask does: an explicit ``--scheduler`` wins, then the
``DASK_SCHEDULER_ADDRESS`` environment variable, then an embedded cluster
started for this run and shut down at its end.  The embedded cluster never
listens beyond this machine: its workers are threads of this process (no
network at all) or, with ``processes=True``, processes on 127.0.0.1; its
dashboard listens on 127.0.0.1 only.

:class:`Session` runs one pass: it batches files into a bounded number of
tasks, shows progress, returns results in input order, and turns cluster
failures into :mod:`pipeline.errors` exceptions that name the files involved.
This module holds no pipeline logic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import ClusterError, InputError, ZscoreError
from .progress import Console

MAX_TASKS = 512  # per pass: bounds graph size and scheduler overhead for 10,000s of files

_DISTRIBUTED_LOGGERS = ("distributed", "tornado", "bokeh", "asyncio")


def parse_memory(text: str | None) -> int | str | None:
    """``"1GiB"`` -> bytes (as dask parses it); ``None`` and ``"auto"`` pass through."""
    if text is None or text == "auto":
        return text
    from dask.utils import parse_bytes

    try:
        return int(parse_bytes(text))
    except (ValueError, TypeError):
        raise InputError(f"--memory-limit {text!r} is not a size such as 2GiB or 500MB"
                         ) from None


class Session:
    """One client connection plus the console; runs batched passes over files."""

    def __init__(self, client: Any, console: Console | None = None, *, local: bool = False,
                 dashboard: str | None = None):
        self.client = client
        self.console = console or Console.library()
        self.local = local
        self.dashboard = dashboard
        self.startup_seconds = 0.0  # set by connect(): starting or reaching the cluster

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
        """``dataset.inspect``'s mapper: :meth:`map` without weights."""
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
            kept killing its workers or the scheduler went away.
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
            fut = self.client.submit(fn, items[lo:hi], key=f"zscore-{label}-{token}-{b:05d}",
                                     pure=False, retries=0)
            futures.append(fut)
            index[fut.key] = (lo, hi)
        progress = self.console.progress(label, len(items),
                                         sum(weights) if weights and max(weights) > 1 else 0,
                                         total_rows=sum(rows) if rows else 0)
        results: list[Any] = [None] * len(items)
        try:
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
        except ZscoreError:
            self._cancel(futures)
            raise
        except (OSError, TimeoutError):  # distributed's CommClosedError is an OSError
            self._cancel(futures)
            raise self._lost() from None
        except BaseException:
            self._cancel(futures)
            raise
        progress.close()
        return results

    def _culprit(self) -> str | None:
        """The file that workers which died were reading most often (see :func:`breadcrumb`)."""
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

    def _cancel(self, futures: list[Any]) -> None:
        if self.client.status == "running":
            with contextlib.suppress(Exception):
                self.client.cancel(futures, force=True)

    def _failure(self, fut: Any, batch: list[Any], describe: Callable[[Any], str] | None
                 ) -> BaseException:
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
                                "give workers more memory with --memory-limit")
        if kind in ("CancelledError", "FutureCancelledError") or fut.status == "cancelled":
            return self._lost()
        text = " ".join(str(exc).split())[:300]
        return ClusterError(f"a task reading {shown} failed: {kind}: {text}")


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


def quiet_dask_logs() -> None:
    """Silence Dask's loggers, including children that its config gives their own level."""
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in _DISTRIBUTED_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)


def default_workers() -> int:
    from dask.system import CPU_COUNT

    return max(1, int(CPU_COUNT))


@contextlib.contextmanager
def connect(scheduler: str | None = None, *, workers: int | None = None,
            memory_limit: str | None = None, processes: bool = False,
            console: Console | None = None, timeout: float = 20) -> Iterator[Session]:
    """A :class:`Session` on an existing scheduler or an embedded local cluster.

    Parameters
    ----------
    scheduler : str, optional
        ``tcp://host:8786`` or ``tls://...``; default ``$DASK_SCHEDULER_ADDRESS``,
        else an embedded cluster.
    workers : int, optional
        Embedded cluster size (default: the number of cores).
    memory_limit : str, optional
        Per embedded worker, e.g. ``"1GiB"``.
    processes : bool
        Embedded workers as processes on 127.0.0.1 instead of threads.
    """
    console = console or Console.library()
    t0 = time.time()
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    from distributed import Client, LocalCluster

    if not console.verbose:
        # zscore reports failures itself, in one line; Dask's own error logs would repeat
        # them as multi-line noise in Airflow logs.  --verbose shows them.
        quiet_dask_logs()

    if address:
        if workers is not None or memory_limit is not None:
            console.warn("--workers and --memory-limit size the embedded cluster; they are "
                         f"ignored with the scheduler {address}")
        try:
            client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            # RuntimeError: e.g. a tcp:// address while the config requires encryption.
            raise ClusterError(f"cannot connect to the Dask scheduler at {address}: "
                               f"{' '.join(str(exc).split())[:200]}; check the address "
                               "and that the scheduler is running") from None
        try:
            session = Session(client, console, local=False, dashboard=client.dashboard_link)
            session.startup_seconds = time.time() - t0
            console.info(f"scheduler {address}, {session.nthreads} worker threads, dashboard "
                         f"{session.dashboard}")
            yield session
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=5)
        return
    n = workers or default_workers()
    if n < 1:
        raise InputError(f"--workers must be at least 1, not {n}")
    limit = parse_memory(memory_limit)
    kwargs: dict[str, Any] = {"host": "127.0.0.1"} if processes else {}
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(LocalCluster(
                n_workers=n, threads_per_worker=1, processes=processes,
                dashboard_address="127.0.0.1:0", memory_limit=limit if limit else "auto",
                silence_logs=logging.ERROR if not console.verbose else logging.INFO,
                **kwargs))
            client = stack.enter_context(Client(cluster, set_as_default=False))
        except (OSError, RuntimeError) as exc:
            raise ClusterError(f"cannot start the local Dask cluster: {exc}") from None
        dashboard = _local_dashboard(cluster)
        console.info(f"local Dask cluster: {n} worker {'processes' if processes else 'threads'}"
                     + (f", dashboard {dashboard}" if dashboard else ""))
        session = Session(client, console, local=True, dashboard=dashboard)
        session.startup_seconds = time.time() - t0
        yield session


def _local_dashboard(cluster: Any) -> str | None:
    server = getattr(cluster.scheduler, "http_server", None)
    port = getattr(server, "port", None)
    if not port:
        return None
    try:
        import bokeh  # noqa: F401 - the dashboard pages need it
    except ImportError:
        return f"http://127.0.0.1:{port}/status (install bokeh for the graphical pages)"
    return f"http://127.0.0.1:{port}/status"


@contextlib.contextmanager
def session_for(client: Any = None, console: Console | None = None) -> Iterator[Session]:
    """For the Python API: ``client``, else the current default client, else embedded."""
    if isinstance(client, Session):
        yield client
        return
    if client is not None:
        yield Session(client, console)
        return
    try:
        from distributed import default_client

        current = default_client()
    except ValueError:
        current = None
    if current is not None:
        yield Session(current, console)
        return
    with connect(console=console) as session:
        yield session

