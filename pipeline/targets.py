"""Where a job writes, checked before anything is computed or written.

A job reads ``INPUT`` and writes ``OUTPUT`` (through a staging directory and a
lock beside it, ``.NAME.zscore-staging-RUN`` and ``.NAME.zscore.lock``; the
report is part of ``OUTPUT``), the statistics file (``--stats``) and the cache
(``--cache``, which writes its ``footers/`` and ``moments/`` directories).
Before any compute each destination is checked:

* against the input, on real paths (symbolic links and ``..`` resolved, see
  :mod:`pipeline.storage`) and by device and inode (so that a bind mount or a
  case-insensitive spelling of the input is the input): nothing may be written
  inside the input or inside a directory or file it links to, and no
  destination may contain it;
* against each other: statistics or a cache inside ``OUTPUT`` would be
  replaced by the publish, or published as data;
* for what is already there: ``OUTPUT`` must be absent, empty, or a zscore
  output (replaced only with ``overwrite``), and no mount point (it is published
  by renaming a directory into its place); the statistics file must not be a
  directory; no destination may be a link loop or sit under a file; the
  statistics file's directory must take a new file (probed, local disks).

On object stores paths compare by bucket and prefix, and "checked" means that
the URL resolves and its bucket exists and answers: permissions there are only
known by writing.  That is why :mod:`pipeline.jobs` writes the statistics file
before it publishes ``OUTPUT``, and why the output's lock, taken before any
data is read, is the write probe for ``OUTPUT``.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import OutputError, StorageError, option, os_error_text, storage_error
from .storage import MARKER, STATS_NAME, SUCCESS, Location

CACHE_DIRS = ("footers", "moments")
_MANIFEST_KEYS = ("run_id", "command", "tool_version", "files")
_SHOWN = 5


@dataclass(frozen=True)
class _Place:
    fs: Any
    path: str
    text: str  # how messages name it: "the input in/", "/data/x, which the input links to"


def _input_places(inp: Location, links: Sequence[tuple[str, str]] = ()) -> list[_Place]:
    """The input and every real target of the symbolic links its listing followed."""
    places = [_Place(inp.fs, inp.path, f"the input {inp.display}")]
    places += [_Place(inp.fs, target, f"{target}, which the input {inp.display} links to "
                                      f"(from {rel})") for rel, target in links]
    return places


def check(inp: Location, links: Sequence[tuple[str, str]] = (), *,
          output: Location | None = None, overwrite: bool = False,
          stats: Location | None = None, cache: Location | None = None) -> None:
    """Refuse, before anything is written, destinations that would harm data.

    Parameters
    ----------
    inp : Location
        The input; ``links`` are the ``(relative path, real target)`` of the
        symbolic links its listing followed (:attr:`pipeline.dataset.Listing.links`).
    output : Location, optional
        ``OUTPUT`` of a run or transform.
    overwrite : bool
        Whether an existing zscore output may be replaced.
    stats : Location, optional
        The statistics file to write.
    cache : Location, optional
        The cache directory.

    Raises
    ------
    OutputError
        A destination overlaps the input or another destination, or is the wrong
        kind of thing (exit code 2).
    StorageError
        A destination's directory may not be written (exit code 1).
    """
    ids = _Identity()
    sources = _input_places(inp, links)
    if output is not None:
        _check_output(output, overwrite, sources, ids)
    if stats is not None:
        _check_stats(stats, sources, output, ids)
    if cache is not None:
        _check_cache(cache, sources, output, stats, ids)


# ------------------------------------------------------------------ output
def _check_output(out: Location, overwrite: bool, sources: list[_Place], ids: _Identity
                  ) -> None:
    for src in sources:
        how = _relation(out.fs, out.path, src, ids)
        if how is not None:
            raise OutputError(f"output {out.display} {how} {src.text}; choose an output "
                              "outside the input", path=out.display)
    _check_bucket(out, "output", whole_bucket_ok=False)
    if out.local:
        # Writability is proven by the lock, created beside OUTPUT before any data is read.
        _check_parent(out, f"output {out.display}", writable=False)
        if os.path.ismount(out.path):
            raise OutputError(f"output {out.display} is a mount point, which cannot be "
                              "replaced by renaming a finished directory into its place (how "
                              "zscore publishes); give a directory inside it, e.g. "
                              f"{out.display.rstrip('/')}/out", path=out.display)
    try:
        _check_contents(out, overwrite)
    except OutputError:
        raise
    except Exception as exc:  # noqa: BLE001 - object stores raise their own exception types
        raise storage_error(exc, "cannot inspect output", out.display) from None


def _check_contents(out: Location, overwrite: bool) -> None:
    """``OUTPUT`` may be absent, empty, or a zscore output (replaced with ``overwrite``).

    A zscore output is one holding a ``_SUCCESS`` that is a zscore manifest, or,
    on object stores, the marker (``_zscore_output.json``) that every run writes
    before it deletes ``_SUCCESS``: without ``_SUCCESS`` such a prefix holds what a
    failed run left, never published, and is replaced even without ``overwrite``
    (the retry of a failed first run is the same command).
    Anything else (a Spark output with its empty ``_SUCCESS``, a home directory)
    is never deleted.
    """
    fs = out.fs
    if not out.local:
        fs.invalidate_cache(out.path)
    if not fs.exists(out.path):
        return
    if fs.isfile(out.path):
        raise OutputError(f"output {out.display} is a file; give a directory path",
                          path=out.display)
    names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(out.path, detail=False))
    entries = [n for n in names if n != MARKER]
    if not entries:
        return
    if SUCCESS in entries and _is_manifest(fs, posixpath.join(out.path, SUCCESS)):
        if overwrite:
            return
        raise OutputError(f"output {out.display} exists and holds a zscore output; pass "
                          f"{option('overwrite')} to replace it or choose another path",
                          path=out.display)
    if MARKER in names:
        return  # what a failed zscore run left on an object store: nothing was published
    shown = ", ".join(entries[:_SHOWN]) + (", ..." if len(entries) > _SHOWN else "")
    theirs = "; its _SUCCESS was not written by zscore" if SUCCESS in entries else ""
    raise OutputError(f"output {out.display} is not empty and is not a zscore output "
                      f"({_count(len(entries))}: {shown}){theirs}; zscore replaces only an "
                      "empty directory or its own output: empty it or choose another path",
                      path=out.display)


def _is_manifest(fs: Any, path: str) -> bool:
    try:
        manifest = json.loads(fs.cat_file(path))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and all(k in manifest for k in _MANIFEST_KEYS) and \
        isinstance(manifest["files"], list)


# ------------------------------------------------------------------- stats
def _check_stats(stats: Location, sources: list[_Place], out: Location | None,
                 ids: _Identity) -> None:
    name = f"statistics file {stats.display}"
    for src in sources:
        how = _relation(stats.fs, stats.path, src, ids)
        if how in ("is", "lies inside"):
            raise OutputError(f"{name} {how} {src.text}; write it outside the input",
                              path=stats.display)
    how = _relation(stats.fs, stats.path, _place(out), ids) if out is not None else None
    if out is not None and how is not None:
        saved = f"{out.display.rstrip('/')}/{STATS_NAME}"
        raise OutputError(f"{name} {how} the output {out.display}, which publishing replaces "
                          f"(the statistics are saved as {saved} anyway); write it elsewhere",
                          path=stats.display)
    _check_bucket(stats, "statistics file")
    if stats.local:
        if os.path.isdir(stats.path):
            raise OutputError(f"{name} is a directory; give the path of a file", path=stats.display)
        _check_parent(stats, name)


# ------------------------------------------------------------------- cache
def _check_cache(cache: Location, sources: list[_Place], out: Location | None,
                 stats: Location | None, ids: _Identity) -> None:
    for sub in CACHE_DIRS:
        path, shown = cache.join(sub), f"{cache.display.rstrip('/')}/{sub}"
        for src in sources:
            how = _relation(cache.fs, path, src, ids)
            if how is not None:
                raise OutputError(f"cache {cache.display} would write {shown}, which {how} "
                                  f"{src.text}; choose a cache outside the input",
                                  path=cache.display)
        if out is not None and _relation(cache.fs, path, _place(out), ids) is not None:
            raise OutputError(f"cache {cache.display} overlaps the output {out.display}, which "
                              "publishing replaces; choose a cache outside it",
                              path=cache.display)
        if stats is not None and _relation(stats.fs, stats.path,
                                           _Place(cache.fs, path, ""), ids) is not None:
            raise OutputError(f"statistics file {stats.display} overlaps the cache's "
                              f"{shown}; write it elsewhere", path=stats.display)
    if cache.local:
        if os.path.exists(cache.path) and not os.path.isdir(cache.path):
            raise OutputError(f"cache {cache.display} is a file; give a directory path",
                              path=cache.display)
        _check_parent(cache, f"cache {cache.display}", writable=False)


# ------------------------------------------------------------------ shared
def _place(loc: Location) -> _Place:
    return _Place(loc.fs, loc.path, loc.display)


def _check_parent(loc: Location, name: str, writable: bool = True) -> None:
    """``loc`` is no link loop and the nearest existing directory above it is a directory
    this user may write."""
    if os.path.islink(loc.path):  # a link left by realpath: it loops (or nests too deep)
        raise OutputError(f"{name} is a symbolic link loop; remove it", path=loc.display)
    parent = os.path.dirname(loc.path)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if os.path.islink(parent):
        raise OutputError(f"{name} cannot be created: {parent} is a symbolic link loop",
                          path=loc.display)
    if not os.path.isdir(parent):
        raise OutputError(f"{name} cannot be created: {parent} is not a directory",
                          path=loc.display)
    if writable:
        # A real probe, not os.access: that says yes to root on /sys, ignores read-only
        # mounts seen through some file systems, ACLs and NFS root squashing.
        try:
            fd, probe = tempfile.mkstemp(prefix=".zscore-probe-", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StorageError(f"cannot write {name}: {parent}: {os_error_text(exc)}",
                               path=loc.display) from None


def _check_bucket(loc: Location, name: str, whole_bucket_ok: bool = True) -> None:
    """On object stores: the bucket exists and answers (and is not the whole destination)."""
    split = getattr(loc.fs, "split_path", None)
    if loc.local or split is None:
        return
    bucket, key = split(loc.path)[:2]
    if not key and not whole_bucket_ok:
        raise OutputError(f"{name} {loc.display} is a whole bucket; give a prefix inside it, "
                          f"e.g. {loc.display.rstrip('/')}/out (its lock goes beside it)",
                          path=loc.display)
    try:
        found = loc.fs.exists(bucket)
    except Exception as exc:  # noqa: BLE001 - object stores raise their own exception types
        raise storage_error(exc, f"cannot reach the bucket of {name}", loc.display) from None
    if not found:
        raise OutputError(f"{name} {loc.display}: bucket '{bucket}' does not exist or is not "
                          "visible with these credentials; create it or fix the URL",
                          path=loc.display)


def _relation(fs: Any, path: str, other: _Place, ids: _Identity) -> str | None:
    """How ``path`` relates to ``other``: "is", "lies inside", "contains", or None."""
    if type(fs) is not type(other.fs):
        return None
    a, b = path.rstrip("/"), other.path.rstrip("/")
    if a == b:
        return "is"
    if a.startswith(b + "/"):
        return "lies inside"
    if b.startswith(a + "/"):
        return "contains"
    if not ids.local(fs):
        return None
    # Different strings for one directory: a bind mount, a case-insensitive file system.
    self_a, up_a = ids.of(a)
    self_b, up_b = ids.of(b)
    if self_a is not None and self_a == self_b:
        return "is"
    if self_b is not None and self_b in up_a:
        return "lies inside"
    if self_a is not None and self_a in up_b:
        return "contains"
    return None


class _Identity:
    """(device, inode) of a path and of each existing directory above it, memoised."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[int, int] | None, frozenset[tuple[int, int]]]] = {}

    @staticmethod
    def local(fs: Any) -> bool:
        from .storage import is_local

        return is_local(fs)

    def of(self, path: str) -> tuple[tuple[int, int] | None, frozenset[tuple[int, int]]]:
        if path not in self._seen:
            try:
                st = os.stat(path)
                me: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except OSError:
                me = None
            parent = os.path.dirname(path)
            above = self.of(parent)[1] if parent != path else frozenset()
            self._seen[path] = (me, above | {me} if me is not None else above)
        return self._seen[path]


def _count(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"
