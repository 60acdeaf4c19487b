"""Publishing output so that readers never see half of it.

Local and network file systems (atomic rename):

1. Take an exclusive lock file beside ``OUTPUT`` (``.NAME.zscore.lock``) naming
   its holder; remove staging left by killed runs.
2. Workers write into a *sibling* staging directory ``.NAME.zscore-staging-RUN``
   (never inside ``OUTPUT``: readers choke on foreign subdirectories), each file
   through a temporary name and ``os.replace``.
3. The run checks the staging directory, writes ``_SUCCESS`` (the manifest)
   last, checks that it still holds its lock, then publishes with one rename.
   With ``--overwrite`` the old output is swapped out atomically
   (``renameat2(RENAME_EXCHANGE)`` where Linux offers it, otherwise two
   renames, between which ``OUTPUT`` is briefly absent, and the old output is
   put back if the second fails) and then removed.

Publication runs inside :func:`pipeline.interrupt.publishing`: a signal never
cuts it in two, and one that arrives after it lets the run finish (exit 0).

Object stores (no atomic rename): once the lock is held, mark ``OUTPUT`` as
zscore's (``_zscore_output.json``, kept for good) and delete a stale
``_SUCCESS``, write data files under their deterministic names, delete every
other object under ``OUTPUT``, then write ``_SUCCESS`` last.  Readers must gate
on ``_SUCCESS``.  The marker lets a retry replace what a failed run left (see
:mod:`pipeline.targets`).  The lock is a conditional create (``xb``) of
``.NAME.zscore.lock``.

This module knows nothing about statistics; small-file I/O lives in :mod:`pipeline.storage`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import posixpath
import shutil
import time
import uuid
from collections.abc import Iterable
from typing import Any

from .errors import OutputError, StorageError, ZscoreError, os_error_text
from .interrupt import checkpoint, mark_published, publishing
from .lock import Lock
from .storage import MARKER, SUCCESS, Location, atomic_write, fsync_dir, hidden


# ------------------------------------------------------------------ publish
class Commit:
    """Stage, check and publish one run's output; see the module docstring.

    Use as a context manager: on any exception (including a signal turned into
    one) the staging area is removed and nothing is published.

    Attributes
    ----------
    target : Location
        Where workers write data files (the staging directory on local disks,
        ``OUTPUT`` itself on object stores).
    """

    def __init__(self, out: Location, *, overwrite: bool, run_id: str | None = None,
                 warn: Any = None):
        self.out = out
        self.overwrite = overwrite
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.warn = warn or (lambda msg: None)
        self.lock = Lock(out, self.run_id, self.warn)
        parent, name = posixpath.split(out.path.rstrip("/"))
        self._parent, self._name = parent, name
        if out.local:
            staging = posixpath.join(parent, f".{name}.zscore-staging-{self.run_id}")
            self.target = Location(fs=out.fs, path=staging, display=out.display)
        else:
            self.target = out
        self.published = False
        self._old: str | None = None  # the replaced output, removed once published

    # -------------------------------------------------------------- enter
    def __enter__(self) -> Commit:
        try:
            self.lock.acquire()
            self._clean_stale()
            if self.out.local:
                os.makedirs(self.target.path)
            else:
                # The marker first: a run killed after the delete still leaves a prefix
                # that the next run knows to be zscore's.
                self.out.fs.pipe_file(self.out.join(MARKER), json.dumps(
                    {"written_by": "zscore", "run_id": self.run_id}).encode())
                with contextlib.suppress(FileNotFoundError):
                    self.out.fs.rm(self.out.join(SUCCESS))
            checkpoint("locked")
        except OSError as exc:
            self.lock.release()
            raise StorageError(f"cannot prepare output {self.out.display}: "
                               f"{os_error_text(exc)} ({getattr(exc, 'filename', '')})",
                               path=self.out.display) from None
        except BaseException:  # a signal included: the lock, if taken, is released
            self._remove_staging()
            self.lock.release()
            raise
        return self

    def _clean_stale(self) -> None:
        if not self.out.local or not os.path.isdir(self._parent):
            return
        lock_tmp = f".{self._name}.zscore.lock."
        for entry in os.listdir(self._parent):
            path = os.path.join(self._parent, entry)
            if entry.startswith((f".{self._name}.zscore-staging-", f".{self._name}.zscore-old-")):
                self.warn(f"removing {entry}, left in {self._parent} by a run that was killed")
                shutil.rmtree(path, ignore_errors=True)
            elif entry.startswith(lock_tmp) and entry.endswith(".tmp") and _age(path) > 60:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # a lock being created by a run killed at that instant

    # ------------------------------------------------------------ publish
    def publish(self, files: Iterable[str], manifest: dict[str, Any],
                extra: dict[str, bytes] | None = None) -> None:
        """Check that exactly ``files`` (relative paths) were written, then publish.

        ``extra`` maps hidden relative names (``_stats.json``) to their content;
        ``_SUCCESS`` (the JSON ``manifest``) is written after everything else.
        """
        self.lock.check()  # first: a run that lost its lock may have lost its staging too
        expected = set(files)
        fs, root = self.target.fs, self.target.path
        written = {_rel(p, root) for p in fs.find(root)} if fs.exists(root) else set()
        data_written = {r for r in written if not hidden(r)}
        if missing := sorted(expected - data_written):
            raise StorageError(f"output file {missing[0]} was not written "
                               f"({len(missing)} missing); nothing was published")
        if self.out.local:
            # Temporary files of tasks whose worker died mid-write (their retry wrote the
            # file again under its real name).
            for rel in sorted(written - data_written):
                with contextlib.suppress(OSError):
                    os.unlink(posixpath.join(root, rel))
            if extra_files := sorted(data_written - expected):
                raise StorageError(f"unexpected file {extra_files[0]} in the staging area "
                                   f"{root}; nothing was published")
        for name, content in (extra or {}).items():
            self._write(name, content)
        if not self.out.local:
            keep = expected | set(extra or ()) | {SUCCESS, MARKER}
            stale = sorted(r for r in written if r not in keep)
            if stale:
                fs.rm([posixpath.join(root, r) for r in stale])
        success = (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode()
        if self.out.local:
            self._write(SUCCESS, success)  # inside staging: not visible yet
        checkpoint("publish")
        self.lock.check()
        with publishing():
            if self.out.local:
                self._swap_in()
            else:
                self._write(SUCCESS, success)
                self._mark_published()
        checkpoint("published")
        if self._old is not None:
            shutil.rmtree(self._old, ignore_errors=True)

    def _write(self, rel: str, content: bytes) -> None:
        path = self.target.join(rel)
        try:
            if self.out.local:
                atomic_write(path, content)
            else:
                self.target.fs.pipe_file(path, content)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {os_error_text(exc)}", path=path) from None

    def _mark_published(self) -> None:
        self.published = True
        mark_published(self.out.display)

    def _swap_in(self) -> None:
        """The atomic publication (inside :func:`~pipeline.interrupt.publishing`)."""
        staging, out = self.target.path, self.out.path
        try:
            if os.path.isdir(out) and os.listdir(out):
                if not self.overwrite:  # appeared while we ran
                    raise OutputError(f"output {self.out.display} appeared while this run was "
                                      "writing; nothing was published", path=self.out.display)
                old = posixpath.join(self._parent, f".{self._name}.zscore-old-{self.run_id}")
                if _exchange(staging, out):
                    self._mark_published()
                    self._old = staging  # holds the old output now
                else:
                    os.rename(out, old)
                    try:
                        os.rename(staging, out)
                    except OSError:
                        os.rename(old, out)  # put the old output back: nothing published
                        raise
                    self._mark_published()
                    self._old = old
            else:
                os.rename(staging, out)
                self._mark_published()
            fsync_dir(self._parent)
        except OSError as exc:
            raise StorageError(f"cannot publish {self.out.display}: {os_error_text(exc)}",
                               path=self.out.display) from None

    # --------------------------------------------------------------- exit
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if not self.published:
                self._remove_staging()
                if isinstance(exc, ZscoreError):
                    # A run whose lock another run broke fails on its vanished staging
                    # directory; the lock is what to report.
                    self.lock.check()
        finally:
            self.lock.release()

    def _remove_staging(self) -> None:
        if not self.out.local:
            return
        # A task of an aborted run may still be closing a file in there.
        for _ in range(20):
            shutil.rmtree(self.target.path, ignore_errors=True)
            if not os.path.exists(self.target.path):
                break
            time.sleep(0.1)


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0


def _rel(path: str, root: str) -> str:
    path = os.path.abspath(path) if path.startswith("/") else path
    return path[len(root.rstrip("/")) + 1:]


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)
