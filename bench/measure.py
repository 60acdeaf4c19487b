"""Run one command as a subprocess and measure it from the outside.

* wall time: from just before ``Popen`` to the moment the process is reaped,
  so interpreter start-up, imports, cluster start and shutdown all count;
* peak RSS of the whole process tree: the process and all its descendants are
  polled with psutil every ``interval`` seconds and their RSS summed (shared
  pages of forked workers are counted once per process, so this is an upper
  bound; a peak shorter than the interval can be missed);
* the peak RSS of each process separately (for per-worker memory);
* CPU time (user + system) of the tree: the larger of ``wait4``'s (the process
  and the descendants it reaped) and the sum of each process's last sampled CPU
  time (worker processes killed at shutdown are never reaped by their parent);
  CPU seconds / wall seconds is how many of the cores it used;
* the CPU time the rest of the machine used meanwhile (all busy time, less the
  tree's and this monitor's own): other work on a 2-core machine slows the run,
  so it is reported next to every number as a sign of interference;
* with ``cluster_pids`` (the processes of an external Dask cluster the command
  uses, started before it): their CPU time during the run counts as the
  command's (``cluster_cpu``), not as other processes'; their memory is not
  in the peak RSS (it was allocated before the run);
* ``create_offset``: psutil's creation time of the process minus the wall clock
  just before it was started.  On Linux psutil derives creation times from the
  boot time, which /proc rounds to a whole second, so a process that measures
  its own age with psutil is off by this much.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass
class ProcessPeak:
    """The largest RSS seen for one process of the tree."""

    pid: int
    role: str
    rss: int = 0


@dataclass
class Measurement:
    """What :func:`run_measured` saw."""

    command: list[str]
    exit_code: int
    wall: float
    peak_rss: int
    cpu: float
    processes: list[ProcessPeak] = field(default_factory=list)
    samples: int = 0
    others_cpu: float = 0.0
    create_offset: float = 0.0
    cluster_cpu: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"command": self.command, "exit_code": self.exit_code,
                "wall_s": round(self.wall, 3), "peak_rss_bytes": self.peak_rss,
                "cpu_s": round(self.cpu, 2), "others_cpu_s": round(self.others_cpu, 2),
                "samples": self.samples, "create_offset_s": round(self.create_offset, 3),
                "cluster_cpu_s": round(self.cluster_cpu, 2),
                "processes": [{"pid": p.pid, "role": p.role, "peak_rss_bytes": p.rss}
                              for p in self.processes]}


def role_of(proc: psutil.Process, root_pid: int) -> str:
    """``main`` for the command itself, ``worker`` for a Dask worker process, else its name."""
    if proc.pid == root_pid:
        return "main"
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return "?"
    if "multiprocessing.spawn" in cmd or "spawn_main" in cmd:
        return "worker"  # distributed's nanny starts each worker with multiprocessing spawn
    if "resource_tracker" in cmd:
        return "resource_tracker"
    return os.path.basename(cmd.split(" ")[0]) or "?"


def run_measured(command: Sequence[str], *, env: Mapping[str, str] | None = None,
                 log_path: str | None = None, interval: float = 0.05,
                 timeout: float | None = None, cluster_pids: Sequence[int] = ()
                 ) -> Measurement:
    """Run ``command`` to completion; stdout and stderr go to ``log_path``.

    Raises
    ------
    subprocess.TimeoutExpired
        After killing the process tree, when ``timeout`` seconds passed.
    """
    peaks: dict[int, ProcessPeak] = {}
    procs: dict[int, psutil.Process] = {}
    cpu_seen: dict[int, float] = {}
    peak_total = samples = 0
    offset = 0.0
    with open(log_path or os.devnull, "wb") as log:
        busy0, own0 = _busy(), time.process_time()
        cluster0 = _cpu_of(cluster_pids)
        epoch0, t0 = time.time(), time.perf_counter()
        popen = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                                 env=dict(env) if env is not None else None)
        root = psutil.Process(popen.pid)
        try:
            offset = root.create_time() - epoch0
        except psutil.Error:
            pass
        procs[popen.pid] = root
        while True:
            pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
            if pid:
                wall = time.perf_counter() - t0
                busy = _busy() - busy0 - (time.process_time() - own0)
                cluster = _cpu_of(cluster_pids) - cluster0
                break
            total = 0
            try:
                for child in root.children(recursive=True):
                    procs.setdefault(child.pid, child)
            except psutil.Error:
                pass
            for p in list(procs.values()):
                try:
                    with p.oneshot():
                        rss = p.memory_info().rss
                        t = p.cpu_times()
                except psutil.Error:
                    continue
                cpu_seen[p.pid] = t.user + t.system
                total += rss
                peak = peaks.get(p.pid)
                if peak is None:
                    peak = peaks[p.pid] = ProcessPeak(p.pid, role_of(p, popen.pid))
                peak.rss = max(peak.rss, rss)
            peak_total = max(peak_total, total)
            samples += 1
            if timeout is not None and time.perf_counter() - t0 > timeout:
                _kill_tree(root)
                os.waitpid(popen.pid, 0)
                raise subprocess.TimeoutExpired(list(command), timeout)
            time.sleep(interval)
        popen.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    cpu = max(usage.ru_utime + usage.ru_stime, sum(cpu_seen.values())) + cluster
    return Measurement(command=list(command), exit_code=popen.returncode, wall=wall,
                       peak_rss=peak_total, cpu=cpu,
                       processes=sorted(peaks.values(), key=lambda p: -p.rss),
                       samples=samples, others_cpu=max(busy - cpu, 0.0),
                       create_offset=offset, cluster_cpu=cluster)


def _cpu_of(pids: Sequence[int]) -> float:
    """CPU seconds used so far by the processes ``pids`` (those that still run)."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _busy() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def _kill_tree(root: psutil.Process) -> None:
    try:
        victims = [root, *root.children(recursive=True)]
    except psutil.Error:
        victims = [root]
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
