"""Where the work runs: an existing Dask scheduler, or an embedded local cluster.

The address is chosen as dask does: an explicit ``--scheduler`` wins, then the
``DASK_SCHEDULER_ADDRESS`` environment variable, then an embedded cluster
started for this run and shut down at its end.  The embedded cluster never
listens beyond this machine: the scheduler, its dashboard and every worker's
HTTP server (``/health``, ``/metrics``) listen on 127.0.0.1 only, whether the
workers are threads of this process or, with ``processes=True``, processes.

Bad options fail fast: a worker count below 1, a memory limit below
:data:`MIN_MEMORY` and an address with an unknown protocol or no port are
refused before anything starts (exit 2).  An unreachable scheduler, or one
that does not answer the Dask handshake (a plain TCP or HTTP server), fails
within Dask's connect timeout (``distributed.comm.timeouts.connect``, 30 s by
default); a scheduler without workers, at the start or later, within
``distributed.scheduler.no-workers-timeout`` (300 s when unset; see
:func:`~pipeline.session.no_workers_timeout`).  One line, exit 1.

:class:`~pipeline.session.Session` (re-exported here) runs the passes.  This
module holds no pipeline logic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ClusterError, InputError
from .interrupt import checkpoint
from .progress import Console
from .session import MAX_TASKS, Session, plan_batches
from .worker import in_process

__all__ = ["MAX_TASKS", "MIN_MEMORY", "Session", "check_address",
           "connect", "parse_memory", "plan_batches", "session_for"]

_DISTRIBUTED_LOGGERS = ("distributed", "tornado", "bokeh", "asyncio")


# A worker uses about 200 MB before it reads any data (measured: a --processes worker idles
# at 165 MB RSS, the threads-mode process at 200 MB), and Dask pauses it at 80 % of its limit:
# below this a run does not slow down, it never ends.
MIN_MEMORY = 512 << 20


def parse_memory(text: str | None) -> int | str | None:
    """``"1GiB"`` -> bytes (as dask parses it); ``None`` and ``"auto"`` pass through.

    ``"0"`` means no limit, as for ``dask worker``.

    Raises
    ------
    ValueError
        Not a size, or a size below :data:`MIN_MEMORY`.
    """
    if text is None or text == "auto":
        return text
    from dask.utils import parse_bytes

    try:
        size = int(parse_bytes(text))
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is not a size such as 2GiB or 500MB") from None
    if 0 < size < MIN_MEMORY:
        raise ValueError(f"{text} is less than the {MIN_MEMORY >> 20}MiB a worker needs (it "
                         "uses about 200 MB before reading any data)")
    if size < 0:
        raise ValueError(f"{text!r} is negative")
    return size


def check_address(address: str) -> str:
    """The scheduler ``address`` with its protocol (``tcp://`` by default), if well formed.

    Raises
    ------
    ValueError
        Unknown protocol, no host, or no port.
    """
    from distributed.comm.addressing import parse_address, unparse_address
    from distributed.comm.registry import backends, get_backend

    scheme, loc = parse_address(address.strip())
    try:
        backend = get_backend(scheme)
    except ValueError:
        known = ", ".join(f"{k}://" for k in sorted(backends) if k != "inproc")
        raise ValueError(f"unknown protocol {scheme}:// in {address!r} (known: {known})"
                         ) from None
    try:
        host, _ = backend.get_address_host_port(loc)
    except ValueError:
        host = ""
    if not host:
        raise ValueError(f"{address!r} is not an address like tcp://host:8786")
    return unparse_address(scheme, loc)


def quiet_dask_logs() -> None:
    """Silence Dask's loggers, including children that its config gives their own level."""
    import distributed  # noqa: F401 - its modules' loggers must exist to be silenced

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in _DISTRIBUTED_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)


def default_workers() -> int:
    from dask.system import CPU_COUNT

    return max(1, int(CPU_COUNT))


@contextlib.contextmanager
def connect(scheduler: str | None = None, *, workers: int | None = None,
            memory_limit: str | None = None, processes: bool = False,
            console: Console | None = None, timeout: float | None = None
            ) -> Iterator[Session]:
    """A :class:`Session` on an existing scheduler or an embedded local cluster.

    Parameters
    ----------
    scheduler : str, optional
        ``tcp://host:8786`` or ``tls://...``; default ``$DASK_SCHEDULER_ADDRESS``,
        else an embedded cluster.
    workers : int, optional
        Embedded cluster size (default: the number of cores).
    memory_limit : str, optional
        Per embedded worker, e.g. ``"1GiB"``; at least :data:`MIN_MEMORY`.
    processes : bool
        Embedded workers as processes instead of threads of this process.
    timeout : float, optional
        Seconds to reach a scheduler and find a worker there (default: Dask's
        ``distributed.comm.timeouts.connect``).

    Raises
    ------
    InputError
        A malformed address or option (nothing was started).
    ClusterError
        The scheduler cannot be reached, does not speak Dask, or has no workers;
        or the local cluster cannot start.
    """
    console = console or Console.library()
    t0 = time.time()
    address = _address(scheduler)
    if not console.verbose:
        # zscore reports failures itself, in one line; Dask's own error logs would repeat
        # them as multi-line noise in Airflow logs.  --verbose shows them.
        quiet_dask_logs()
    checkpoint("startup")
    if address:
        if workers is not None or memory_limit is not None:
            console.warn("--workers and --memory-limit size the embedded cluster; they are "
                         f"ignored with the scheduler {address}")
        with _remote(address, _timeout(timeout)) as client:
            session = Session(client, console, local=False, dashboard=client.dashboard_link)
            session.startup_seconds = time.time() - t0
            console.info(f"scheduler {address}, {session.nthreads} worker threads, dashboard "
                         f"{session.dashboard}")
            yield session
        return
    with _local(workers, memory_limit, processes, console) as (cluster, client):
        dashboard = _local_dashboard(cluster)
        console.info(f"local Dask cluster: {len(cluster.workers)} worker "
                     f"{'processes' if processes else 'threads'}"
                     + (f", dashboard {dashboard}" if dashboard else ""))
        session = Session(client, console, local=True, dashboard=dashboard)
        session.startup_seconds = time.time() - t0
        yield session


def _address(scheduler: str | None) -> str | None:
    """The scheduler to use (explicit, else ``DASK_SCHEDULER_ADDRESS``), checked; None: embedded."""
    if scheduler:
        origin, address = "scheduler address", scheduler
    elif os.environ.get("DASK_SCHEDULER_ADDRESS", "").strip():
        origin, address = "DASK_SCHEDULER_ADDRESS", os.environ["DASK_SCHEDULER_ADDRESS"]
    else:
        return None
    try:
        return check_address(address)
    except ValueError as exc:
        raise InputError(f"{origin}: {exc}" + ("; fix or unset it" if origin.isupper() else "")
                         ) from None


def _timeout(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    import dask
    from dask.utils import parse_timedelta

    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"),
                                 default="seconds") or 30)


@contextlib.contextmanager
def _remote(address: str, timeout: float) -> Iterator[Any]:
    """A client of the scheduler at ``address`` (its workers are watched pass by pass)."""
    from distributed import Client

    _handshake(address, timeout)
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
        # RuntimeError: e.g. a tcp:// address while the config requires encryption.
        raise ClusterError(f"cannot connect to the Dask scheduler at {address}: "
                           f"{' '.join(str(exc).split())[:200]}; check the address "
                           "and that the scheduler is running") from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=5)


def _handshake(address: str, timeout: float) -> None:
    """Open and close one connection to ``address``, all of it within ``timeout`` seconds.

    Dask's own connect bounds the TCP connection but not its handshake: a server
    that accepts and never answers hangs ``Client()`` for ever, and one that
    answers in another protocol (HTTP) makes it try to allocate exabytes.
    """
    import asyncio

    from distributed.comm import connect as comm_connect
    from distributed.security import Security

    args = Security().get_connection_args("client")

    async def probe() -> None:
        comm = await comm_connect(address, timeout=timeout, **args)
        await comm.close()

    try:
        # A little longer than Dask's connect timeout, so that a refused connection is
        # reported as such (an OSError, below) rather than as a silent server.
        asyncio.run(asyncio.wait_for(probe(), timeout + 2))
    except TimeoutError:  # ours
        raise ClusterError(f"{address} accepted the connection but did not answer as a Dask "
                           f"scheduler within {timeout:g} s; check the address and port"
                           ) from None
    except OSError as exc:
        raise ClusterError(f"cannot connect to the Dask scheduler at {address}: "
                           f"{' '.join(str(exc).split())[:200]}; check the address and that "
                           "the scheduler is running") from None
    except Exception as exc:  # noqa: BLE001 - whatever a foreign protocol makes Dask raise
        raise ClusterError(f"{address} answered, but not as a Dask scheduler "
                           f"({type(exc).__name__}); check the address and port") from None


@contextlib.contextmanager
def _local(workers: int | None, memory_limit: str | None, processes: bool, console: Console
           ) -> Iterator[tuple[Any, Any]]:
    """An embedded LocalCluster listening on 127.0.0.1 only, and its client."""
    import dask
    from distributed import Client, LocalCluster

    n = default_workers() if workers is None else workers
    if n < 1:
        raise InputError(f"the number of workers must be at least 1, not {n}")
    try:
        limit = parse_memory(memory_limit)
    except ValueError as exc:
        raise InputError(f"memory limit {exc}") from None
    with contextlib.ExitStack() as stack:
        try:
            # No statistical profiler in the workers: every 10 ms it walks the stacks of the
            # task threads holding the GIL (4 % of the CPU of a run on M, threads or
            # processes), for a dashboard page nobody asked for.  An external cluster keeps
            # its owner's setting.
            stack.enter_context(dask.config.set({"distributed.worker.profile.enabled": False}))
            cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=processes,
                # Loopback only, everywhere: without these, threads-mode workers open their
                # HTTP server (/health, /metrics) on 0.0.0.0 and [::].
                host="127.0.0.1" if processes else None, dashboard_address="127.0.0.1:0",
                worker_dashboard_address="127.0.0.1:0",
                memory_limit="auto" if limit is None else limit,
                # Dask's own logs only with --verbose: a worker process outliving its
                # scheduler by a heartbeat at Ctrl-C logs an ERROR with a traceback.
                silence_logs=logging.CRITICAL if not console.verbose else logging.INFO)
            stack.callback(_quietly, cluster.close)
            if not processes:
                in_process(w.address for w in cluster.workers.values())
            client = Client(cluster, set_as_default=False)
            stack.callback(_quietly, client.close)
        except (OSError, RuntimeError) as exc:
            raise ClusterError(f"cannot start the local Dask cluster: {exc}") from None
        yield cluster, client


def _quietly(close: Callable[[], Any]) -> None:
    # Shutting the embedded cluster down is not part of the job: a failure there must neither
    # turn a published run into an error nor replace the error that ended a failed one.
    with contextlib.suppress(Exception):
        close()


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

