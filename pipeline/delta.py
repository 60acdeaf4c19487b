"""Delta Lake tables: the live files of one version as input, a new version as output.

Reading goes through the ``deltalake`` package's replay of ``_delta_log/``
(add and remove actions, partition values), never through a directory
listing: files an overwrite or delete removed stay on disk until a VACUUM.
Table features that change what a data file means are refused, naming the
feature: column mapping (files store columns under physical names) and
deletion vectors on any live file (rows deleted without rewriting the file).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import posixpath
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from .dataset import Dataset, Listing, SourceFile, partition_of
from .errors import (
    DataError,
    InputError,
    OutputError,
    StorageError,
    exception_text,
    option,
    os_error_text,
)
from .lakehouse import (
    HIVE_NULL,
    TableInfo,
    TableOptions,
    hive_rel,
    partition_text,
    prune,
    require,
)
from .redaction import redact
from .storage import Location, is_local

# Reader features whose tables zscore reads correctly from the plain data files:
# deletion vectors are checked file by file, column mapping is refused below.
_SAFE_READER_FEATURES = frozenset({"deletionVectors", "timestampNtz", "v2Checkpoint",
                                   "vacuumProtocolCheck", "variantType", "variantType-preview",
                                   "typeWidening", "typeWidening-preview"})


def table_uri(loc: Location) -> str:
    """The URI deltalake opens: a local path, or ``s3://bucket/key`` for object stores."""
    return loc.path if is_local(loc.fs) else str(loc.fs.unstrip_protocol(loc.path))


def delta_storage_options(options: Mapping[str, Any]) -> dict[str, str]:
    """fsspec storage options (s3fs spelling) turned into deltalake's (object_store) keys.

    Credentials and the endpoint otherwise come from the standard ``AWS_*``
    environment variables, which both libraries read.
    """
    out: dict[str, str] = {}
    client = options.get("client_kwargs") or {}
    pairs = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY",
             "token": "AWS_SESSION_TOKEN", "endpoint_url": "AWS_ENDPOINT_URL",
             "region_name": "AWS_REGION"}
    for src, dst in pairs.items():
        value = options.get(src, client.get(src) if isinstance(client, Mapping) else None)
        if value is not None:
            out[dst] = str(value)
    # s3fs takes a plain-http endpoint (a local S3-compatible server) as given; deltalake
    # refuses one unless told, whether it comes from the options or AWS_ENDPOINT_URL.
    endpoint = out.get("AWS_ENDPOINT_URL", os.environ.get("AWS_ENDPOINT_URL", ""))
    if endpoint.startswith("http://"):
        out["AWS_ALLOW_HTTP"] = "true"
    return out


def open_table(loc: Location, options: Mapping[str, Any], table: TableOptions) -> Any:
    """The ``deltalake.DeltaTable`` at the version ``table`` asks for (default: current)."""
    deltalake = require("delta", loc.display)
    from deltalake.exceptions import DeltaError, TableNotFoundError

    storage = delta_storage_options(options)
    try:
        dt = deltalake.DeltaTable(table_uri(loc), storage_options=storage or None)
        latest = dt.version()
        if table.version is not None and table.version != latest:
            if table.version > latest:
                raise InputError(f"Delta table {loc.display} has no version {table.version}: "
                                 f"its current version is {latest}; give "
                                 f"{option('version', latest)} or less")
            dt.load_as_version(table.version)
        elif table.as_of is not None:
            version = version_at(dt, _timestamp(table.as_of), loc.display)
            if version != latest:
                dt.load_as_version(version)
    except InputError:
        raise
    except TableNotFoundError as exc:
        raise InputError(f"input {loc.display} is not a readable Delta table: "
                         f"{_text(exc)}", path=loc.display) from None
    except DeltaError as exc:
        which = f"version {table.version}" if table.version is not None else \
            f"the version as of {table.as_of}"
        raise InputError(f"cannot read {which} of the Delta table {loc.display}: "
                         f"{_text(exc)}", path=loc.display) from None
    except OSError as exc:
        raise StorageError(f"cannot read the Delta table {loc.display}: {_text(exc)}",
                           path=loc.display) from None
    return dt


def version_at(dt: Any, when: _dt.datetime, display: str) -> int:
    """The last version committed at or before ``when``, from the table's history.

    Resolved here rather than by deltalake, which loads the first version for a
    time before it: a table that did not exist yet must be an error.
    """
    ms = int(when.timestamp() * 1000)
    commits = sorted((int(h["version"]), int(h["timestamp"])) for h in dt.history())
    before = [v for v, t in commits if t <= ms]
    if not before:
        first_v, first_t = commits[0] if commits else (0, 0)
        first = _dt.datetime.fromtimestamp(first_t / 1000, _dt.UTC).isoformat()
        raise InputError(f"Delta table {display} has no version as of {when.isoformat()}: "
                         f"its first commit in the log (version {first_v}) is at {first}; "
                         f"give a later {option('as_of')}")
    return before[-1]


def _timestamp(text: str) -> _dt.datetime:
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option('as_of')} {text!r} is not an ISO 8601 time, e.g. "
                         f"{option('as_of', '2026-01-31T12:00:00Z')}") from None
    return when if when.tzinfo else when.replace(tzinfo=_dt.UTC)


def _text(exc: BaseException) -> str:
    return redact(exception_text(exc, 300))


def check_features(dt: Any, display: str) -> None:
    """Refuse a table whose data files cannot be read as plain Parquet, naming the feature."""
    protocol = dt.protocol()
    config = dt.metadata().configuration or {}
    mode = (config.get("delta.columnMapping.mode") or "none").lower()
    if mode != "none":
        raise DataError(f"Delta table {display} uses column mapping (table feature "
                        f"columnMapping, mode '{mode}'): its files store columns under "
                        "physical names; rewrite it into a table without column mapping "
                        "to normalize it", path=display)
    unknown = sorted(set(protocol.reader_features or ()) - _SAFE_READER_FEATURES)
    if unknown:
        raise DataError(f"Delta table {display} needs reader table feature "
                        f"{', '.join(unknown)}, which zscore does not support; rewrite it "
                        "without that feature", path=display)
    if "deletionVectors" in (protocol.reader_features or ()):
        marked = pa.table(dt.deletion_vectors())
        if marked.num_rows:
            first = str(marked.column("filepath")[0].as_py())
            raise DataError(f"Delta table {display}: {marked.num_rows} live file(s) have "
                            f"deletion vectors (table feature deletionVectors), e.g. "
                            f"{posixpath.basename(first)}; zscore reads whole files and would "
                            "count deleted rows: purge them first (Spark: REORG TABLE ... "
                            "APPLY (PURGE))", path=display)


def read_delta(loc: Location, options: Mapping[str, Any], filters: Sequence[str],
               table: TableOptions) -> tuple[Location, Listing]:
    """List the live files of a Delta table version, pruned by partition ``filters``.

    Returns the table's location and a :class:`Listing` whose files are the
    version's add actions, at their paths relative to the table root, with the
    log's partition values (hive-like: null is ``__HIVE_DEFAULT_PARTITION__``).
    """
    dt = open_table(loc, options, table)
    check_features(dt, loc.display)
    keys = tuple(dt.metadata().partition_columns)
    actions = pa.table(dt.get_add_actions(flatten=False)).to_pylist()
    files = [_source_file(loc, a, keys) for a in actions]
    files = prune(files, filters, keys, loc.display)
    if not files:
        raise InputError(f"Delta table {loc.display} (version {dt.version()}) holds no data "
                         "files", path=loc.display)
    _check_unique(files, loc.display)
    files.sort()
    info = TableInfo(format="delta", uri=redact(table_uri(loc)), version=int(dt.version()),
                     timestamp=table.as_of,
                     partition_columns=keys,
                     extra={"schema": pa.schema(dt.schema().to_arrow())})
    return loc, Listing(files=files, table=info)


def _source_file(loc: Location, action: Mapping[str, Any], keys: Sequence[str]) -> SourceFile:
    raw = str(action["path"])
    if "://" in raw or raw.startswith("/"):
        raise DataError(f"Delta table {loc.display} references {redact(raw)}, outside the "
                        "table directory (a shallow clone?), which zscore does not read; "
                        "make a deep copy of the table", path=loc.display)
    rel = unquote(raw)
    values = action.get("partition") or {}
    partition = tuple((k, partition_text(values.get(k))) for k in keys)
    # delta-rs escapes values in directory names (p=a%20b for "a b"): a path whose
    # directories spell the log's values, escaped or not, keeps its name in the output.
    spelled = tuple((k, unquote(v)) for k, v in partition_of(rel))
    shown = rel if spelled == partition else hive_rel(partition, posixpath.basename(rel))
    return SourceFile(rel=shown, path=loc.join(rel), size=int(action["size_bytes"]),
                      version=f"delta:{action['modification_time']}", partition=partition)


def _check_unique(files: Sequence[SourceFile], display: str) -> None:
    seen: set[str] = set()
    for f in files:
        if f.rel in seen:
            raise DataError(f"Delta table {display} has two live files that map to {f.rel}; "
                            "zscore cannot mirror them in its output", path=f.rel)
        seen.add(f.rel)



# ------------------------------------------------------------------- output
def output_dataset(dataset: Dataset, run_id: str) -> Dataset:
    """``dataset`` with each file's output name made unique to this run.

    A Delta version must not add a path that an earlier version removed (an
    ``--overwrite`` rerun would otherwise add and remove the same paths in one
    commit), so output data files carry the run id, as Delta writers' UUIDs do.
    """
    def renamed(rel: str) -> str:
        directory, name = posixpath.split(rel)
        stem = name[:-len(".parquet")] if name.endswith(".parquet") else name
        return posixpath.join(directory, f"{stem}.{run_id}.parquet")

    return replace(dataset, files=tuple(replace(f, rel=renamed(f.rel)) for f in dataset.files))


def output_log(out: Location, dataset: Dataset, written: Sequence[Any], schema: pa.Schema,
               overwrite: bool, options: Mapping[str, Any]) -> dict[str, bytes]:
    """The ``_delta_log/`` files that make the written files one Delta table version.

    The log is built by deltalake in a local scratch directory and returned as
    ``{relative name: bytes}`` for :meth:`pipeline.commit.Commit.publish`, which
    writes it into the staging directory before the atomic rename: the table
    appears whole or not at all.  With ``overwrite`` and an existing Delta
    output, its log is carried over and this run is its next version (removing
    every file of the previous one); that output's data files are replaced with
    the directory, so earlier versions stay in the history but cannot be read
    (as after a VACUUM keeping nothing).

    ``dataset``: as returned by :func:`output_dataset`; ``written``: what the
    transform wrote, file by file; ``schema``: the output's Arrow schema with
    its partition columns.
    """
    deltalake = require("delta", out.display)
    from deltalake.transaction import AddAction, create_table_with_add_actions

    keys = [k for k, _ in dataset.files[0].partition] if dataset.files else []
    now = int(time.time() * 1000)
    # The path as it is on disk: deltalake URI-encodes it in the log itself.
    adds = [AddAction(w.rel, int(w.bytes),
                      {k: None if v == HIVE_NULL else v for k, v in f.partition},
                      now, True, json.dumps({"numRecords": int(w.rows)}))
            for f, w in zip(dataset.files, written, strict=True)]
    with tempfile.TemporaryDirectory(prefix="zscore-delta-") as scratch:
        root = os.path.join(scratch, "table")
        previous = overwrite and _copy_log(out, root, options)
        try:
            create_table_with_add_actions(root, deltalake.Schema.from_arrow(schema), adds,
                                          mode="overwrite" if previous else "error",
                                          partition_by=keys or None)
        except Exception as exc:  # noqa: BLE001 - deltalake raises its own types for schemas
            raise OutputError(f"output {out.display} cannot be a Delta table: {_text(exc)}; "
                              f"write Parquet instead ({option('output_format', 'parquet')})",
                              path=out.display) from None
        log = os.path.join(root, "_delta_log")
        return {f"_delta_log/{posixpath.relpath(os.path.join(d, n), log)}":
                open(os.path.join(d, n), "rb").read()
                for d, _, names in os.walk(log) for n in names}


def _copy_log(out: Location, root: str, options: Mapping[str, Any]) -> bool:
    """Copy the log of the Delta table at ``out`` (if it is one) to ``root``; True if copied."""
    source = out.join("_delta_log")
    try:
        if not out.fs.isdir(source):
            return False
        os.makedirs(root)
        out.fs.get(source.rstrip("/") + "/", os.path.join(root, "_delta_log") + "/",
                   recursive=True)
    except OSError as exc:
        raise StorageError(f"cannot read the log of the existing output {out.display}: "
                           f"{os_error_text(exc)}", path=out.display) from None
    return True


def output_schema(dataset: Dataset, plan: Any) -> pa.Schema:
    """The Delta schema of the output: data columns as written, then partition columns.

    A partition column keeps the input table's type; the hive keys of loose
    Parquet are strings.
    """
    from .plan import output_schema as transformed

    data = transformed(pa.schema(list(dataset.schema.fields)), plan)
    typed = dataset.table.extra.get("schema") if dataset.table is not None else None
    keys = [k for k, _ in dataset.files[0].partition] if dataset.files else []
    extra = [typed.field(k) if typed is not None and k in typed.names else
             pa.field(k, pa.string()) for k in keys]
    return pa.schema([f.remove_metadata() for f in [*data, *extra]])
