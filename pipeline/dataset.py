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

import hashlib
import json
import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .cluster import breadcrumb
from .errors import DataError, InputError, exception_text, storage_error
from .location import Location, is_local
from .schema import Schema, validate


# -------------------------------------------------------------------- files
@dataclass(frozen=True, order=True)
class SourceFile:
    """One data file: its path relative to the dataset root (the sort key) and identity."""

    rel: str
    path: str = field(compare=False)
    size: int = field(compare=False)
    version: str = field(compare=False)  # mtime, or the ETag on object stores
    partition: tuple[tuple[str, str], ...] = field(compare=False, default=())


def hidden(rel: str) -> bool:
    """True when any component of ``rel`` starts with ``.`` or ``_`` (ignored by readers)."""
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def partition_of(rel: str) -> tuple[tuple[str, str], ...]:
    """The hive ``key=value`` pairs in the directories of ``rel``."""
    pairs = []
    for part in rel.split("/")[:-1]:
        key, eq, value = part.partition("=")
        if eq and key:
            pairs.append((key, value))
    return tuple(pairs)


def list_files(loc: Location, filters: Sequence[str] = ()) -> list[SourceFile]:
    """Every data file under ``loc``, sorted by relative path.

    ``filters`` are ``--filter`` expressions on hive keys (see
    :mod:`pipeline.partitions`); directories they exclude are not even listed.

    Raises
    ------
    InputError
        If ``loc`` does not exist, a filter is bad, or no data file is left.
    """
    from .partitions import parse_all, walk

    fs = loc.fs
    parsed = parse_all(filters)
    try:
        if not fs.exists(loc.path):
            raise InputError(f"input {loc.display} does not exist")
        if fs.isfile(loc.path):
            info = fs.info(loc.path)
            entries = {loc.path: info}
            root = posixpath.dirname(loc.path)
        elif parsed:
            entries = walk(fs, loc.path, parsed, lambda name: name.startswith((".", "_")))
            root = loc.path
        else:
            entries = fs.find(loc.path, detail=True, withdirs=False)
            root = loc.path
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - object stores raise their own exception types
        raise storage_error(exc, "cannot list input", loc.display) from None
    files = []
    prefix = root.rstrip("/") + "/"
    for path, info in entries.items():
        path = path if not is_local(fs) else os.path.abspath(path)
        rel = path[len(prefix):] if path.startswith(prefix) else posixpath.basename(path)
        if hidden(rel) or info.get("type", "file") != "file":
            continue
        files.append(SourceFile(rel=rel, path=path, size=int(info.get("size") or 0),
                                version=_version(info), partition=partition_of(rel)))
    _check_names(files)
    if not files:
        which = " matching " + " and ".join(f"--filter {f!r}" for f in filters) if filters \
            else ""
        raise InputError(f"input {loc.display} holds no data files{which} "
                         "(files starting with '.' or '_' are ignored)")
    files.sort()
    keys = [tuple(k for k, _ in f.partition) for f in files]
    if len(set(keys)) > 1:
        raise DataError(f"hive partition keys differ between {files[0].rel} and "
                        f"{files[keys.index(next(k for k in keys if k != keys[0]))].rel}; "
                        "every file must sit under the same key=value directories")
    return files


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


def open_parquet(fs: Any, path: str) -> pq.ParquetFile:
    """Open one Parquet file for reading, natively for local paths."""
    if is_local(fs):
        return pq.ParquetFile(path, memory_map=False)
    return pq.ParquetFile(fs.open(path, "rb", cache_type="none"), pre_buffer=True)


# ------------------------------------------------------------------ footers
@dataclass(frozen=True)
class Footer:
    """What a file's footer says (or why it could not be read)."""

    rel: str
    rows: int = 0
    row_groups: tuple[int, ...] = ()
    schema: pa.Schema | None = None
    error: str | None = None


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


def inspect(loc: Location, mapper: Mapper, features: str | Sequence[str] | None = None,
            exclude: str | Sequence[str] = (), origin: str = "--features",
            filters: Sequence[str] = (), cache: Any = None,
            warn: Callable[[str], None] | None = None) -> tuple[Dataset, list[str]]:
    """List ``loc`` (pruned by ``filters``), read every footer through ``mapper``,
    validate, and select features.

    ``warn`` is told about schema drift that is allowed (see
    :func:`pipeline.schema.validate`).

    ``mapper(fn, items, label=...)`` runs ``fn(batch)`` over batches of ``items``
    (on the cluster) and returns the per-item results in order.  With a
    :class:`~pipeline.cache.Cache`, only files new or changed since it was filled
    are opened.
    """
    files = list_files(loc, filters)
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
