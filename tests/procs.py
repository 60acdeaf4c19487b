"""Real ``dask scheduler`` / ``dask worker`` / ``zscore`` processes for distributed tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Cluster:
    def __init__(self, scheduler: subprocess.Popen, workers: list[subprocess.Popen],
                 address: str):
        self.scheduler = scheduler
        self.workers = workers
        self.address = address

    def worker_pids(self) -> list[int]:
        """PIDs of the processes that run tasks (the nannies' children), as the scheduler sees."""
        from distributed import Client

        with Client(self.address, timeout=30) as c:
            return sorted(c.run(os.getpid).values())


@contextmanager
def dask_cluster(tmp: Path, n_workers: int = 2, memory_limit: str = "0",
                 env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """``dask scheduler --host 127.0.0.1`` plus ``n_workers`` ``dask worker`` processes."""
    sched_file = tmp / "scheduler.json"
    env = {**os.environ, **(env or {})}
    scheduler = subprocess.Popen(
        [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", sched_file],
        stdout=subprocess.DEVNULL, stderr=(tmp / "scheduler.log").open("w"), env=env)
    procs = [scheduler]
    try:
        wait_for(lambda: sched_file.exists() and sched_file.stat().st_size, 30, "scheduler")
        address = json.loads(sched_file.read_text())["address"]
        workers = [subprocess.Popen(
            [BIN / "dask", "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
             "--memory-limit", memory_limit, "--name", f"w{i}", "--death-timeout", "10"],
            stdout=subprocess.DEVNULL, stderr=(tmp / f"worker{i}.log").open("w"), env=env)
            for i in range(n_workers)]
        procs += workers
        from distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(n_workers, timeout=60)
        yield Cluster(scheduler, workers, address)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for child in _children(p.pid):
                    child.kill()
                p.kill()
                p.wait()


def _children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def zscore_cmd(*args) -> list[str]:
    return [str(BIN / "zscore"), *[str(a) for a in args]]


class Running:
    """A ``zscore`` process whose stderr lines are collected as they come."""

    def __init__(self, *args, env: dict[str, str] | None = None, group: bool = False):
        # group: in a process group of its own, for os.killpg (as a terminal's Ctrl-C does)
        self.proc = subprocess.Popen(zscore_cmd(*args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, start_new_session=group)
        self.lines: list[str] = []
        self._out: list[str] = []
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self._out.append(self.proc.stdout.read())

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        """Exit code, stdout, stderr; the process is killed if it outlives ``timeout``."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for t in self._readers:
            t.join(timeout=10)
        return code, "".join(self._out), "".join(self.lines)


def start_zscore(*args, env: dict[str, str] | None = None, group: bool = False) -> Running:
    return Running(*args, env=env, group=group)


def run_zscore(*args, timeout: float = 120, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    return subprocess.run(zscore_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def run_unprivileged(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """``zscore`` without the power to ignore file permissions.

    As root (CI) the process keeps uid 0, so it can still reach the checkout and
    its venv wherever they live, but loses CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH:
    mode bits then apply to it as to any user.
    """
    cmd = zscore_cmd(*args)
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (embedded --processes workers, resource tracker)."""
    return [p.pid for p in _children(pid)]


def _signal_mask(pid: int, field: str, sig: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except OSError:
        pass
    return False


def handles(pid: int, sig: int) -> bool:
    """True once process ``pid`` catches ``sig`` (its handler is installed), from /proc."""
    return _signal_mask(pid, "SigCgt", sig)


def ignores(pid: int, sig: int) -> bool:
    """True when process ``pid`` ignores ``sig``, from /proc."""
    return _signal_mask(pid, "SigIgn", sig)


def listeners(pids: list[int]) -> list[str]:
    """The local addresses (``127.0.0.1:4321``, ``[::]:80``) TCP sockets of ``pids`` listen on."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    wanted = {f"pid={p}," for p in pids}
    return sorted(line.split()[3] for line in out.splitlines()
                  if any(w in line for w in wanted))


def paused(run: Running, phase: str, timeout: float = 60) -> None:
    """Wait until ``run`` pauses at ``phase`` (ZSCORE_TEST_PAUSE; see pipeline.interrupt)."""
    wait_for(lambda: run.saw(f"zscore: test pause at {phase}") or run.proc.poll() is not None,
             timeout, f"the pause at {phase}")
    assert run.proc.poll() is None, "".join(run.lines)


def zscore(capsys, *args) -> tuple[int, str, str]:
    """Run the command line in this process: (exit code, stdout, stderr)."""
    from pipeline.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one line of ``err`` that says ``error:`` (there must be exactly one)."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]
