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

import fnmatch
import hashlib
import json
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError, InputError, storage_error

MAX_PROBLEMS = 20  # problems listed in one error; the rest are counted


# ---------------------------------------------------------------- locations
@dataclass(frozen=True)
class Location:
    """A resolved path: the fsspec filesystem, the path inside it, and the URL as given.

    ``display`` is the URL without any credentials, for messages and artifacts.
    """

    fs: Any
    path: str
    display: str

    @property
    def local(self) -> bool:
        return is_local(self.fs)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)


def is_local(fs: Any) -> bool:
    """True for filesystems with POSIX semantics (atomic rename, exclusive create)."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def resolve(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
            ) -> Location:
    """Resolve a local path or fsspec URL (``s3://bucket/prefix``) to a :class:`Location`."""
    text = os.fspath(url)
    try:
        fs, path = fsspec.core.url_to_fs(text, **(storage_options or {}))
    except ImportError as exc:
        raise InputError(f"cannot open {redact(text)}: {exc}; install the extra, "
                         "e.g. pip install 'zscore[s3]'") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot open {redact(text)}: {exc}") from None
    if is_local(fs):
        path = os.path.abspath(path)
    return Location(fs=fs, path=path.rstrip("/") or "/", display=redact(text))


def redact(url: str) -> str:
    """Drop ``user:password@`` from a URL so that it can be printed."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    return f"{scheme}://{netloc}{slash}{tail}"


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
    compression: tuple[tuple[str, str], ...] = ()
    dictionary: tuple[str, ...] = ()
    error: str | None = None


def read_footer(fs: Any, file: SourceFile) -> Footer:
    """Read one file's footer; never raises for a bad file, the Footer says why."""
    if file.size == 0:
        return Footer(rel=file.rel, error="is empty (0 bytes), not a Parquet file")
    try:
        pf = open_parquet(fs, file.path)
        md = pf.metadata
        schema = pf.schema_arrow
    except (OSError, pa.ArrowException, ValueError) as exc:
        return Footer(rel=file.rel, error=f"is not a readable Parquet file ({_short(exc)})")
    codecs: dict[str, str] = {}
    dictionary: set[str] = set()
    if md.num_row_groups:
        rg = md.row_group(0)
        for j in range(rg.num_columns):
            col = rg.column(j)
            top = md.schema.column(j).path.split(".")[0]
            codecs.setdefault(top, col.compression)
            if any("DICTIONARY" in e for e in col.encodings):
                dictionary.add(top)
    return Footer(rel=file.rel, rows=md.num_rows,
                  row_groups=tuple(md.row_group(i).num_rows for i in range(md.num_row_groups)),
                  schema=schema, compression=tuple(sorted(codecs.items())),
                  dictionary=tuple(sorted(dictionary)))


def read_footers(fs: Any, files: Sequence[SourceFile]) -> list[Footer]:
    """:func:`read_footer` of a batch of files: the unit of work sent to one task."""
    return [read_footer(fs, f) for f in files]


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


# ------------------------------------------------------------------- schema
def is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


@dataclass(frozen=True)
class Schema:
    """The validated schema of a whole dataset.

    ``fields`` keeps the column order of the first file.  A feature may be
    stored with different numeric widths in different files (pandas writes an
    int column with a null as float64); its dataset type is the widest, see
    :func:`unify_numeric`.
    """

    fields: tuple[pa.Field, ...]
    partition_keys: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> pa.Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def unify_numeric(types: Sequence[pa.DataType]) -> pa.DataType:
    """float32 if every file stores float32 (or narrower floats), float64 otherwise."""
    if all(pa.types.is_floating(t) and t.bit_width <= 32 for t in types):
        return pa.float32()
    if all(t == types[0] for t in types):
        return types[0]
    return pa.float64()


def validate(footers: Sequence[Footer], partition_keys: Sequence[str],
             features: str | Sequence[str] | None = None,
             exclude: str | Sequence[str] = (), origin: str = "--features"
             ) -> tuple[Schema, list[str]]:
    """Check every footer against the dataset's schema and select the features.

    Parameters
    ----------
    footers
        One per file, in sorted relative-path order.
    partition_keys
        Hive keys (not stored in the files).
    features, exclude
        ``--features`` / ``--exclude`` as for :func:`select_features`.  A selected
        feature may be stored with different numeric widths in different files;
        every other column must have one type across files.

    Returns
    -------
    schema, features

    Raises
    ------
    DataError
        One error listing every unreadable file, every column missing from some
        files, and every column whose type differs between files, each with the
        file's path relative to the dataset root.
    InputError
        A bad feature selection (see :func:`select_features`).
    """
    problems: list[str] = [f"{f.rel} {f.error}" for f in footers if f.error]
    good = [f for f in footers if f.schema is not None]
    if not good:
        _raise(problems, footers)
    order: dict[str, pa.Field] = {}
    types: dict[str, Counter[pa.DataType]] = {}
    for f in good:
        assert f.schema is not None
        for fld in f.schema:
            order.setdefault(fld.name, fld)
            types.setdefault(fld.name, Counter())[fld.type] += 1
    fields = []
    for name, fld in order.items():
        counts = types[name]
        if all(is_numeric(t) for t in counts):
            fields.append(fld.with_type(unify_numeric(list(counts))))
        else:
            fields.append(fld.with_type(counts.most_common(1)[0][0]))
    schema = Schema(fields=tuple(fields), partition_keys=tuple(partition_keys))
    try:
        chosen = select_features(schema, features, exclude, origin)
    except InputError as exc:
        if not problems:
            raise
        problems.append(exc.message)
        chosen = []
    for fld in fields:
        name = fld.name
        lacking = [f.rel for f in good if f.schema is not None
                   and f.schema.get_field_index(name) < 0]
        if lacking:
            kind = "selected feature" if name in chosen else "column"
            problems.append(f"{kind} '{name}' is missing from {_some(lacking)} "
                            f"but present in {len(good) - len(lacking)} other file(s)")
        counts = types[name]
        if len(counts) > 1 and not (name in chosen and all(is_numeric(t) for t in counts)):
            majority = fld.type
            for f in good:
                assert f.schema is not None
                i = f.schema.get_field_index(name)
                if i >= 0 and f.schema.field(i).type != majority:
                    problems.append(
                        f"column '{name}' is {f.schema.field(i).type} in {f.rel} but "
                        f"{majority} in {counts[majority]} other file(s); "
                        f"exclude it with --exclude {name} or fix the file")
                    break
    if problems:
        _raise(problems, footers)
    return schema, chosen


def _some(items: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(items[:k])
    return shown + (f" and {len(items) - k} more" if len(items) > k else "")


def _raise(problems: list[str], footers: Sequence[Footer]) -> None:
    if not problems:
        problems = ["no readable Parquet file"]
    shown = problems[:MAX_PROBLEMS]
    more = f"; and {len(problems) - MAX_PROBLEMS} more problems" if len(problems) > MAX_PROBLEMS \
        else ""
    head = f"{len(problems)} problem(s) in the input: " if len(problems) > 1 else ""
    first_path = next((f.rel for f in footers if f.error), None)
    raise DataError(head + "; ".join(shown) + more, path=first_path)


# ----------------------------------------------------------------- features
def select_features(schema: Schema, features: str | Sequence[str] | None = None,
                    exclude: str | Sequence[str] = (), origin: str = "--features") -> list[str]:
    """Resolve ``--features`` / ``--exclude`` (names and shell globs) to column names.

    Default: every integer and floating column, minus hive partition keys, minus
    ``exclude``.  The result keeps the dataset's column order.

    Raises
    ------
    InputError
        A name or pattern matching no column, a non-numeric column asked for
        explicitly, or an empty selection.
    """
    names = [n for n in schema.names if n not in schema.partition_keys]
    wanted = _split(features)
    if wanted:
        chosen = _match(wanted, names, origin)
        for name in chosen:
            t = schema.field(name).type
            if not is_numeric(t):
                raise InputError(f"column '{name}' is {t}, not numeric; only integer and "
                                 "floating columns can be normalized", column=name)
    else:
        chosen = [n for n in names if is_numeric(schema.field(n).type)]
    dropped = set(_match(_split(exclude), schema.names, "--exclude"))
    chosen = [n for n in chosen if n not in dropped]
    if not chosen:
        raise InputError("no numeric feature column selected; available columns: "
                         + ", ".join(names[:30]))
    return chosen


def _split(spec: str | Sequence[str] | None) -> list[str]:
    if not spec:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [s.strip() for s in items if s.strip()]


def _match(patterns: list[str], names: list[str], option: str) -> list[str]:
    chosen: list[str] = []
    for pat in patterns:
        hits = [n for n in names if n == pat or fnmatch.fnmatchcase(n, pat)]
        if not hits:
            what = (f"column '{pat}' of the statistics is not in the input" if option ==
                    "statistics" else f"{option} '{pat}' matches no column")
            raise InputError(f"{what}; available columns: " + ", ".join(names[:30]),
                             column=pat)
        chosen.extend(h for h in hits if h not in chosen)
    return [n for n in names if n in chosen]


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
            filters: Sequence[str] = (), cache: Any = None) -> tuple[Dataset, list[str]]:
    """List ``loc`` (pruned by ``filters``), read every footer through ``mapper``,
    validate, and select features.

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
    return Dataset(location=loc, files=tuple(files), footers=tuple(footers),
                   schema=schema), chosen
