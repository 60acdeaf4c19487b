"""An external Dask cluster for ``bench/run.py --scheduler``: started here or given.

``--scheduler spawn`` starts what the issue measures, on loopback only: a
``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` (two worker
processes of one thread, each under a nanny), and stops them with SIGTERM at
the end.  ``--scheduler tcp://HOST:PORT`` uses a running cluster as it is.

Either way the processes of the cluster that run on this machine are found
(scheduler, workers, nannies), so that their CPU time during a run is counted
as the run's, not as interference from other processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psutil


@contextlib.contextmanager
def cluster(address: str, *, workers: int = 2, threads: int = 1, log: Any = print
            ) -> Iterator[tuple[str, list[int]]]:
    """``(address, local pids)`` of the cluster at ``address``, or of one started (``spawn``)."""
    if address != "spawn":
        yield address, local_pids(address)
        return
    bindir = os.path.dirname(sys.executable)
    with tempfile.TemporaryDirectory(prefix="zscore-bench-") as tmp:
        sfile = os.path.join(tmp, "scheduler.json")
        procs = [subprocess.Popen([os.path.join(bindir, "dask"), "scheduler", "--host",
                                   "127.0.0.1", "--port", "0", "--dashboard-address",
                                   "127.0.0.1:0", "--scheduler-file", sfile],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        try:
            _wait_for(lambda: os.path.exists(sfile), 60, "the scheduler file")
            procs.append(subprocess.Popen(
                [os.path.join(bindir, "dask"), "worker", "--scheduler-file", sfile,
                 "--nworkers", str(workers), "--nthreads", str(threads), "--host",
                 "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            addr = _address(sfile, workers)
            log(f"external cluster {addr}: {workers} worker processes x {threads} thread")
            yield addr, local_pids(addr)
        finally:
            for p in reversed(procs):
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGTERM)
            for p in reversed(procs):
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _address(sfile: str, workers: int) -> str:
    from distributed import Client

    with Client(scheduler_file=sfile, timeout=60) as client:
        client.wait_for_workers(workers, timeout=120)
        return str(client.scheduler.address)


def _wait_for(ready: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"the external cluster did not start: no {what} after {seconds} s")
        time.sleep(0.1)


def local_pids(address: str) -> list[int]:
    """The scheduler's, workers' and nannies' pids, if they run on this machine."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        host = socket.gethostname()
        # Built-ins only: a function of this module would not unpickle on the cluster.
        found = [(client.run_on_scheduler(socket.gethostname),
                  client.run_on_scheduler(os.getpid))]
        nodes, pids_ = client.run(socket.gethostname), client.run(os.getpid)
        found += [(nodes[w], pids_[w]) for w in pids_]
    pids: set[int] = set()
    for node, pid in found:
        if node != host:
            continue
        pids.add(pid)
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid).parent()
            if parent is not None and "dask" in " ".join(parent.cmdline()):
                pids.add(parent.pid)  # the nanny
    return sorted(pids)
