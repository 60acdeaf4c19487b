"""The output lock: one run at a time may write an ``OUTPUT``.

Local disks: an exclusive-create file beside ``OUTPUT``.  Object stores: a
conditional create (``xb``, If-None-Match) of the same name.  The holder's
heartbeat refreshes it; a dead holder's lock is broken with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import socket
import threading
import time
from typing import Any

from .errors import LockedError, storage_error
from .location import Location, is_local

LOCK_STALE_SECONDS = float(os.environ.get("ZSCORE_LOCK_STALE_SECONDS", 120))
HEARTBEAT_SECONDS = 10.0


class Lock:
    """An exclusive lock beside ``OUTPUT``, held for one run, with a heartbeat.

    A lock is stale when its holder ran on this host and its process is gone, or
    when its heartbeat is older than ``LOCK_STALE_SECONDS`` (set by the
    ``ZSCORE_LOCK_STALE_SECONDS`` environment variable).  A stale lock is broken
    with a warning; a live one makes the run fail fast with :class:`LockedError`.
    """

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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "run_id": self.run_id, "started": time.time()}).encode()

    def _create(self) -> bool:
        try:
            if is_local(self.fs):
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "wb") as f:
                    f.write(self._content())
            else:
                with self.fs.open(self.path, "xb") as f:
                    f.write(self._content())
            return True
        except FileExistsError:
            return False
        except Exception as exc:  # noqa: BLE001 - object stores raise their own exception types
            raise storage_error(exc, "cannot create lock", self.display) from None

    def _holder(self) -> tuple[dict[str, Any], float]:
        try:
            with self.fs.open(self.path, "rb") as f:
                info = json.loads(f.read() or b"{}")
            modified = self.fs.modified(self.path).timestamp()
        except (OSError, ValueError):
            return {}, time.time()
        return info, modified

    def _stale(self, info: dict[str, Any], modified: float) -> bool:
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            try:
                os.kill(info["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return False
        return time.time() - modified > LOCK_STALE_SECONDS

    def acquire(self) -> None:
        for _ in range(3):
            if self._create():
                break
            info, modified = self._holder()
            if not self._stale(info, modified):
                raise LockedError(
                    f"output is locked by {self.display}, held by run {info.get('run_id', '?')} "
                    f"(pid {info.get('pid', '?')} on {info.get('host', '?')}); another zscore "
                    "is writing it: wait for it, or delete the lock if that run is dead",
                    path=self.display)
            self.warn(f"breaking stale lock {self.display} of run {info.get('run_id', '?')} "
                      f"(pid {info.get('pid', '?')} on {info.get('host', '?')})")
            with contextlib.suppress(OSError):
                self.fs.rm(self.path)
        else:
            raise LockedError(f"could not take the lock {self.display}", path=self.display)
        self._thread = threading.Thread(target=self._beat, name="zscore-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                if is_local(self.fs):
                    os.utime(self.path)
                else:
                    self.fs.pipe_file(self.path, self._content())

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info, _ = self._holder()
        if info.get("run_id") == self.run_id:
            with contextlib.suppress(OSError):
                self.fs.rm(self.path)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
