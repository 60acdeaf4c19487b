"""The output lock: one run at a time may write an ``OUTPUT``.

Local disks: ``.NAME.zscore.lock`` beside ``OUTPUT``, created whole and
atomically (written under a temporary name, then hard-linked into place; an
exclusive create where links are not supported).  Object stores: a
conditional create (``xb``, If-None-Match) of the same name.

The lock records its holder: host, pid, the process's start time (so that a
pid reused by another process, after a crash or in a restarted container, is
not mistaken for the holder), run id and creation time.  The holder refreshes
it every ``HEARTBEAT_SECONDS`` (at most a quarter of the stale age) and checks
that it still holds it before publishing.

A lock is *stale*, and is broken with a warning, when its holder ran on this
host and its process is gone or is another process now, or when its heartbeat
(the lock's modification time) is older than the stale age:
``ZSCORE_LOCK_STALE_SECONDS``, 120 s by default.  A lock that cannot be read
or parsed is stale after that age too; until then it blocks (a lock is briefly
empty while an object store or a file system without hard links creates it).
A run whose lock was broken while it stalled finds out before publishing and
publishes nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import socket
import threading
import time
from typing import Any

from .errors import InputError, LockedError, storage_error
from .storage import Location, is_local

STALE_ENV = "ZSCORE_LOCK_STALE_SECONDS"
DEFAULT_STALE_SECONDS = 120.0
HEARTBEAT_SECONDS = 10.0


def stale_seconds() -> float:
    """The stale age from ``ZSCORE_LOCK_STALE_SECONDS`` (default 120 s).

    Raises
    ------
    InputError
        The variable is set to something other than a positive number.
    """
    text = os.environ.get(STALE_ENV, "").strip()
    if not text:
        return DEFAULT_STALE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{STALE_ENV}={text!r} is not a positive number of seconds; fix or "
                         f"unset it (default {DEFAULT_STALE_SECONDS:g})")
    return value


def process_start(pid: int) -> str | None:
    """What tells this incarnation of process ``pid`` from a later one with the same pid.

    Linux: the boot id and the start time in clock ticks (``/proc/PID/stat``,
    field 22): exact, and unchanged by clock adjustments.  Elsewhere psutil's
    creation time.  None when unknown.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = f.read().rsplit(b")", 1)[1].split()[19].decode()
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{f.read().strip()}:{ticks}"
    except (OSError, IndexError, UnicodeDecodeError):
        pass
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.3f}"
    except Exception:  # noqa: BLE001 - psutil missing, process gone, access denied
        return None


class Lock:
    """An exclusive lock beside ``OUTPUT``, held for one run, with a heartbeat."""

    def __init__(self, out: Location, run_id: str, warn: Any = None):
        parent, name = posixpath.split(out.path.rstrip("/"))
        self.fs = out.fs
        self.path = posixpath.join(parent, f".{name}.zscore.lock")
        # Local paths carry no secret; the real path names the lock even when OUTPUT
        # was given through a symbolic link.
        self.display = self.path if out.local else posixpath.join(
            posixpath.dirname(out.display.rstrip("/")), f".{name}.zscore.lock")
        self.run_id = run_id
        self.warn = warn or (lambda msg: None)
        self.stale = stale_seconds()
        self.lost = False  # set by the heartbeat when another run holds the lock now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created = time.time()

    def _content(self) -> bytes:
        pid = os.getpid()
        return json.dumps({"host": socket.gethostname(), "pid": pid, "start": process_start(pid),
                           "run_id": self.run_id, "started": self._created,
                           "beat": time.time()}).encode()

    def _create(self) -> bool:
        try:
            if is_local(self.fs):
                return _create_local(self.path, self._content(), self.run_id)
            with self.fs.open(self.path, "xb") as f:
                f.write(self._content())
            return True
        except FileExistsError:
            return False
        except Exception as exc:  # noqa: BLE001 - object stores raise their own exception types
            raise storage_error(exc, "cannot create lock", self.display) from None

    def _holder(self) -> tuple[dict[str, Any], float] | None:
        """(holder, modification time), the holder ``{}`` if unreadable; None: no lock."""
        try:
            modified = self.fs.modified(self.path).timestamp()
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - unknown age: judged as new, so never broken
            modified = time.time()
        try:
            with self.fs.open(self.path, "rb") as f:
                info = json.loads(f.read())
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - empty, truncated, not JSON, unreadable
            info = {}
        return (info if isinstance(info, dict) else {}), modified

    def _stale(self, info: dict[str, Any], modified: float) -> str | None:
        """Why the lock is stale, or None when its holder may be alive."""
        pid = info.get("pid")
        if info.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return "its process is gone"
            except PermissionError:
                pass  # alive, and another user's
            recorded = info.get("start")
            now = process_start(pid)
            if isinstance(recorded, str) and now is not None and now != recorded:
                return f"pid {pid} is another process now"
        age = time.time() - modified
        if age > self.stale:
            return f"its heartbeat is {age:.0f} s old (stale after {self.stale:g} s)"
        return None

    def acquire(self) -> None:
        """Take the lock, breaking a stale one with a warning.

        Raises
        ------
        LockedError
            A live run holds it (exit code 1: retry later).
        """
        for _ in range(5):
            if self._create():
                break
            held = self._holder()
            if held is None:
                continue  # released meanwhile
            info, modified = held
            reason = self._stale(info, modified)
            if reason is None:
                raise LockedError(self._busy(info, modified), path=self.display)
            self.warn(f"breaking stale lock {self.display}, {_describe(info)}: {reason}")
            try:
                self.fs.rm(self.path)
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001 - object stores raise their own types
                raise storage_error(exc, "cannot remove stale lock", self.display) from None
        else:
            raise LockedError(f"could not take the lock {self.display}: other runs keep "
                              "taking it", path=self.display)
        self._thread = threading.Thread(target=self._beat, name="zscore-lock", daemon=True)
        self._thread.start()

    def _busy(self, info: dict[str, Any], modified: float) -> str:
        if info:
            return (f"output is locked by {self.display}, {_describe(info)}; another zscore is "
                    "writing it: wait for it, or delete the lock if that run is dead")
        return (f"output is locked by {self.display}, which cannot be read (written "
                f"{max(0.0, time.time() - modified):.0f} s ago; broken once older than "
                f"{self.stale:g} s): another zscore may be creating it; wait, or delete the "
                "lock if no zscore is writing this output")

    def _mine(self) -> bool:
        held = self._holder()
        return held is not None and held[0].get("run_id") == self.run_id

    def _beat(self) -> None:
        interval = min(HEARTBEAT_SECONDS, self.stale / 4)
        while not self._stop.wait(interval):
            try:
                held = self._holder()
                if held is None or (held[0] and held[0].get("run_id") != self.run_id):
                    self.lost = True  # gone, or another run's: never refresh that one
                    return
                if is_local(self.fs):
                    os.utime(self.path)
                else:
                    self.fs.pipe_file(self.path, self._content())
            except Exception:  # noqa: BLE001 - transient; check() decides before publishing
                continue

    def check(self) -> None:
        """Before publishing: this run must still hold its lock.

        Raises
        ------
        LockedError
            Another run broke this run's lock (it stalled past the stale age) and
            may be writing ``OUTPUT``: this run must not publish.
        """
        held = self._holder()
        if held is not None and held[0].get("run_id") == self.run_id and not self.lost:
            return
        now = "it was removed" if held is None else f"it is now {_describe(held[0])}" \
            if held[0] else "it cannot be read now"
        raise LockedError(f"this run lost its lock {self.display} ({now}): another run broke "
                          f"it while this one stalled for more than {self.stale:g} s; nothing "
                          "was published", path=self.display)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._mine():
            with contextlib.suppress(Exception):
                self.fs.rm(self.path)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _create_local(path: str, content: bytes, run_id: str) -> bool:
    """Create ``path`` with ``content``, atomically: never visible empty or half written."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{run_id}.tmp"
    with open(tmp, "wb") as f:
        f.write(content)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        pass  # no hard links here (some FUSE and SMB mounts): an exclusive create
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return True


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "which cannot be read"
    return (f"held by run {info.get('run_id', '?')} (pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')})")
