"""How long each phase of a job took, for the manifest (``timings``) and the benchmarks."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .artifact import now_iso

if TYPE_CHECKING:
    from .session import Session


class Timings:
    """Seconds spent in each phase of a job, for the manifest.

    ``before_job``: from the process's start to the job's, minus ``startup``
    (imports and argument parsing, for the command line); ``startup``: starting
    or connecting to the cluster.  Publishing happens after the manifest is
    written, so it has no entry.
    """

    def __init__(self, begun: tuple[str, float] | None = None) -> None:
        # When the job began (ISO time, monotonic clock): the manifest's "started".
        self.started_iso, self.t0 = begun or (now_iso(), time.monotonic())
        self._last = time.time()
        self.seconds: dict[str, float] = {}
        age = process_age()
        if age is not None:
            self.seconds["before_job"] = round(age, 4)

    def started(self, session: Session) -> None:
        """Account the cluster's start-up (it may predate the job: the CLI starts it)."""
        now = time.time()
        startup = session.startup_seconds + (now - self._last)
        if "before_job" in self.seconds:
            self.seconds["before_job"] = round(max(self.seconds["before_job"] -
                                                   session.startup_seconds, 0.0), 4)
        self.seconds["startup"] = round(startup, 4)
        self._last = now

    def lap(self, phase: str) -> None:
        now = time.time()
        self.seconds[phase] = round(now - self._last, 4)
        self._last = now


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc, to the clock tick; else psutil)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after the ")"
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except (ImportError, OSError):
        return None
