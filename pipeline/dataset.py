"""Finding a dataset's files and checking them before any heavy compute.

A dataset is a directory (local path or fsspec URL) of Parquet files, possibly
hive-partitioned (``day=2026-01-01/part-0.parquet``) and nested.  Like other
Parquet readers, zscore ignores every file or directory whose name starts with
``.`` or ``_`` (``_SUCCESS``, ``_metadata``, ``.crc`` files, staging areas);
every other file is data and must be Parquet.

This module lists files, reads their footers (on the cluster, through a
``mapper`` it is handed), and turns the footers into one validated
:class:`Schema`.  It computes no statistics.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa

from .errors import (
    DataError,
    InputError,
    StorageError,
    exception_text,
    option,
    os_error_text,
    storage_error,
)
from .schema import Footer, Schema, validate
from .storage import Location, hidden, is_local, open_parquet
from .worker import breadcrumb


# -------------------------------------------------------------------- files
@dataclass(frozen=True, order=True)
class SourceFile:
    """One data file: its path relative to the dataset root (the sort key) and identity."""

    rel: str
    path: str = field(compare=False)
    size: int = field(compare=False)
    version: str = field(compare=False)  # mtime, or the ETag on object stores
    partition: tuple[tuple[str, str], ...] = field(compare=False, default=())


def partition_of(rel: str) -> tuple[tuple[str, str], ...]:
    """The hive ``key=value`` pairs in the directories of ``rel``."""
    pairs = []
    for part in rel.split("/")[:-1]:
        key, eq, value = part.partition("=")
        if eq and key:
            pairs.append((key, value))
    return tuple(pairs)


@dataclass(frozen=True)
class Listing:
    """What listing a dataset found: its data files and the symbolic links followed.

    ``links`` holds ``(relative path of the link, real path of its target)``
    for every link met (local file systems only): the input extends to those
    targets, and nothing may be written there either.
    """

    files: list[SourceFile]
    links: tuple[tuple[str, str], ...] = ()


def list_files(loc: Location, filters: Sequence[str] = ()) -> list[SourceFile]:
    """Every data file under ``loc``, sorted by relative path (see :func:`scan`)."""
    return scan(loc, filters).files


def scan(loc: Location, filters: Sequence[str] = ()) -> Listing:
    """List every data file under ``loc``, sorted by relative path.

    ``filters`` are ``--filter`` expressions on hive keys (see
    :mod:`pipeline.partitions`); directories they exclude are not even listed.
    On local file systems symbolic links are followed: a linked file or
    directory counts as what it points to, at the link's relative path.

    Raises
    ------
    InputError
        If ``loc`` does not exist, a filter is bad, no data file is left, or a
        link is broken, loops, or a file is not a regular file.
    StorageError
        A directory that cannot be read (permission refused): never skipped.
    """
    from .partitions import parse_all

    parsed = parse_all(filters)
    lister = _LocalLister(loc) if is_local(loc.fs) else None
    try:
        entries, root = _entries(loc, parsed, lister)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - object stores raise their own exception types
        raise storage_error(exc, "cannot list input", loc.display) from None
    files = []
    prefix = root.rstrip("/") + "/"
    for key, info in entries.items():
        rel = key[len(prefix):] if key.startswith(prefix) else posixpath.basename(key)
        if hidden(rel) or info.get("type", "file") != "file":
            continue
        files.append(SourceFile(rel=rel, path=info.get("name", key),
                                size=int(info.get("size") or 0), version=_version(info),
                                partition=partition_of(rel)))
    _check_names(files)
    if not files:
        which = " matching " + " and ".join(option("filters", [f], cli=repr(f))
                                            for f in filters) if filters else ""
        raise InputError(f"input {loc.display} holds no data files{which} "
                         "(files starting with '.' or '_' are ignored)")
    files.sort()
    keys = [tuple(k for k, _ in f.partition) for f in files]
    if len(set(keys)) > 1:
        raise DataError(f"hive partition keys differ between {files[0].rel} and "
                        f"{files[keys.index(next(k for k in keys if k != keys[0]))].rel}; "
                        "every file must sit under the same key=value directories")
    return Listing(files=files, links=tuple(lister.links) if lister is not None else ())


def _entries(loc: Location, parsed: Sequence[Any], lister: _LocalLister | None
             ) -> tuple[dict[str, dict[str, Any]], str]:
    """Every file under ``loc`` (path -> fsspec info) and the root relative paths start at."""
    from .partitions import walk

    fs = loc.fs
    if _is_file(loc):
        if parsed:
            text = parsed[0].text
            raise InputError(f"{option('filters', [text], cli=repr(text))} needs a directory of "
                             f"hive partitions, but the input {loc.display} is one file")
        # A single file keeps the name it was given (a link's own name, as inside a directory).
        name = posixpath.basename(loc.display.rstrip("/")) or posixpath.basename(loc.path)
        root = posixpath.dirname(loc.path)
        return {posixpath.join(root, name): {**fs.info(loc.path), "name": loc.path}}, root
    if lister is not None:
        return walk(lister, loc.path, parsed), loc.path
    if parsed:
        return walk(partial(_remote_ls, fs), loc.path, parsed), loc.path
    return fs.find(loc.path, detail=True, withdirs=False), loc.path


def _is_file(loc: Location) -> bool:
    """Whether the input is one file (else a directory); it must exist and be reachable."""
    if is_local(loc.fs):
        try:  # not os.path.exists: it says "absent" for a path it may not look at
            mode = os.stat(loc.path).st_mode
        except FileNotFoundError:
            raise InputError(f"input {loc.display} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read the input {loc.display}: {os_error_text(exc)}",
                               path=loc.display) from None
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            kind = next((k for test, k in _SPECIAL if test(mode)), "not a regular file")
            raise DataError(f"input {loc.display} is {kind}, not a directory or a Parquet file",
                            path=loc.display)
        return stat.S_ISREG(mode)
    elif loc.fs.exists(loc.path):
        return bool(loc.fs.isfile(loc.path))
    raise InputError(f"input {loc.display} does not exist")


def _remote_ls(fs: Any, directory: str) -> list[dict[str, Any]]:
    return [info for info in fs.ls(directory, detail=True)
            if not hidden(posixpath.basename(info["name"].rstrip("/")))]


_SPECIAL = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class _LocalLister:
    """Lists one local directory the way its files will be read: symbolic links followed.

    fsspec reports a link as "other" and never descends into a linked directory,
    which dropped linked data without a word; here a link is what it points to.
    A broken link, a link loop or a special file is an error naming it, and so is
    a directory that cannot be read: nothing is skipped silently.
    """

    def __init__(self, loc: Location):
        self.root = loc.path
        self.display = loc.display
        self.links: list[tuple[str, str]] = []

    def where(self, path: str) -> str:
        rel = posixpath.relpath(path, self.root)
        return self.display if rel == "." else posixpath.join(self.display, rel)

    def __call__(self, directory: str) -> list[dict[str, Any]]:
        try:
            with os.scandir(directory) as it:
                entries = [e for e in it if not hidden(e.name)]
            return [info for e in entries if (info := self._info(e, directory)) is not None]
        except OSError as exc:
            # The entry being listed or followed, else the directory itself.
            where = self.where(exc.filename) if isinstance(exc.filename, str) else \
                self.where(directory)
            raise StorageError(f"cannot list the input: {where}: {os_error_text(exc)}",
                               path=where) from None

    def _info(self, entry: os.DirEntry[str], directory: str) -> dict[str, Any] | None:
        path = entry.path
        try:
            if entry.is_symlink():
                st = self._follow(path, directory)
            else:
                st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None  # removed while we listed: not part of the input any more
        if stat.S_ISDIR(st.st_mode):
            return {"name": path, "type": "directory"}
        if stat.S_ISREG(st.st_mode):
            return {"name": path, "type": "file", "size": st.st_size, "mtime": st.st_mtime}
        kind = next((k for test, k in _SPECIAL if test(st.st_mode)), "not a regular file")
        raise DataError(f"{self.where(path)} is {kind}, not a Parquet file; remove it or "
                        "rename it to start with '_' or '.'", path=self.where(path))

    def _follow(self, path: str, directory: str) -> os.stat_result:
        where = self.where(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"{where} is a broken symbolic link (to {os.readlink(path)}); "
                            "restore its target or remove it", path=where) from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise DataError(f"{where} is a symbolic link loop; remove it", path=where) from None
        target = os.path.realpath(path)
        if stat.S_ISDIR(st.st_mode):
            here = os.path.realpath(directory)
            if here == target or here.startswith(target.rstrip("/") + "/"):
                raise DataError(f"{where} is a symbolic link to {target}, which contains the "
                                "link itself: a loop; remove it", path=where)
        self.links.append((posixpath.relpath(path, self.root), target))
        return st


def _check_names(files: Sequence[SourceFile]) -> None:
    """Refuse file names that are not UTF-8 (decoded with surrogate escapes by Python).

    pyarrow, Dask and every Parquet reader take paths as UTF-8: such a file could be
    neither read here nor read back from the output.
    """
    bad = []
    for f in files:
        try:
            f.rel.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(f.rel)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"file name {bad[0]}{more} is not valid UTF-8, which Parquet readers "
                        "(pyarrow, Dask) cannot open; rename it", path=bad[0])


def _version(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "generation"):
        if info.get(key):
            return str(info[key]).strip('"')
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        if info.get(key) is not None:
            value = info[key]
            return repr(value.timestamp()) if hasattr(value, "timestamp") else repr(value)
    return ""


def fingerprint(files: Sequence[SourceFile]) -> str:
    """sha256 of the sorted (relative path, size, version) of every file."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(json.dumps([f.rel, f.size, f.version]).encode())
    return h.hexdigest()


# ------------------------------------------------------------------ footers
def read_footer(fs: Any, file: SourceFile) -> Footer:
    """Read one file's footer; never raises for a bad file, the Footer says why."""
    if file.size == 0:
        return Footer(rel=file.rel, error="is empty (0 bytes), not a Parquet file")
    breadcrumb(file.rel)
    try:
        pf = open_parquet(fs, file.path)
        md = pf.metadata
        schema = pf.schema_arrow
    except (OSError, pa.ArrowException, ValueError) as exc:
        return Footer(rel=file.rel, error=f"is not a readable Parquet file ({_short(exc)})")
    return Footer(rel=file.rel, rows=md.num_rows,
                  row_groups=tuple(md.row_group(i).num_rows for i in range(md.num_row_groups)),
                  schema=schema)


def read_footers(fs: Any, files: Sequence[SourceFile]) -> list[Footer]:
    """:func:`read_footer` of a batch of files: the unit of work sent to one task."""
    return [read_footer(fs, f) for f in files]


def _short(exc: BaseException) -> str:
    return exception_text(exc)


# ------------------------------------------------------------------ dataset
@dataclass(frozen=True)
class Dataset:
    """A listed and validated dataset: location, files, footers and schema."""

    location: Location
    files: tuple[SourceFile, ...]
    footers: tuple[Footer, ...]
    schema: Schema

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.footers)

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.files)


Mapper = Callable[..., list[Any]]


def load_dataset(loc: Location, mapper: Mapper, features: str | Sequence[str] | None = None,
            exclude: str | Sequence[str] = (), origin: str = "features",
            filters: Sequence[str] = (), cache: Any = None, listing: Listing | None = None,
            warn: Callable[[str], None] | None = None) -> tuple[Dataset, list[str]]:
    """List ``loc`` (pruned by ``filters``), read every footer through ``mapper``,
    validate, and select features.

    ``warn`` is told about schema drift that is allowed (see
    :func:`pipeline.schema.validate`).

    ``mapper(fn, items, label=...)`` runs ``fn(batch)`` over batches of ``items``
    (on the cluster) and returns the per-item results in order.  With a
    :class:`~pipeline.cache.Cache`, only files new or changed since it was filled
    are opened.  ``listing``: the result of :func:`scan` when the caller already
    listed ``loc`` (to check its destinations first).
    """
    files = (listing or scan(loc, filters)).files
    keys = tuple(k for k, _ in files[0].partition)
    fs = loc.fs
    known = cache.footers(files) if cache is not None else {}
    todo = [f for f in files if f.rel not in known]
    fresh = mapper(partial(read_footers, fs), todo, label="footers") if todo else []
    if cache is not None and todo:
        cache.put_footers(todo, fresh)
    by_rel = {**known, **{ft.rel: ft for ft in fresh}}
    footers = [by_rel[f.rel] for f in files]
    schema, chosen = validate(footers, keys, features, exclude, origin)
    if warn is not None:
        for note in schema.notes:
            warn(note)
    return Dataset(location=loc, files=tuple(files), footers=tuple(footers),
                   schema=schema), chosen
