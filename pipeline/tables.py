"""Table formats as input: a Delta Lake or Apache Iceberg table read at one snapshot.

A table directory holds more files than the table does: a Delta commit that
overwrites or deletes leaves the old data files on disk and removes them only
in ``_delta_log/``; an Iceberg snapshot lists its live files in manifests under
``metadata/``.  Read as loose Parquet, such a directory counts rows the table
no longer holds.  So a directory that is a table is read through its own
library's list of live files (:mod:`pipeline.delta`, :mod:`pipeline.iceberg`),
or refused when that library is missing; it is never read as loose Parquet
unless ``input_format="parquet"`` says so.

Either way the result is what :func:`pipeline.dataset.scan` returns for loose
Parquet: a :class:`~pipeline.dataset.Listing` of :class:`~pipeline.dataset.SourceFile`
(relative path, hive-like partition values), plus a :class:`TableInfo` for the
artifact; the fit, transform and write passes do not know tables exist.
"""

from __future__ import annotations

import importlib
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .location import Location, redact, resolve

INPUT_FORMATS = ("auto", "parquet", "delta", "iceberg")
OUTPUT_FORMATS = ("auto", "parquet", "delta", "iceberg")
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # how Hive, Spark and delta-rs spell a null key
_EXTRA_MODULE = {"delta": "deltalake", "iceberg": "pyiceberg"}
_FORMAT_NAME = {"delta": "Delta Lake", "iceberg": "Iceberg"}


@dataclass(frozen=True)
class TableOptions:
    """How to read a table input and what to write for it.

    Parameters
    ----------
    input_format : {"auto", "parquet", "delta", "iceberg"}
        ``auto`` recognizes a Delta directory (``_delta_log/``), an Iceberg
        directory (``data/``, and ``metadata/`` holding a ``*.metadata.json``) or metadata file
        (``*.metadata.json``), and reads anything else as loose Parquet;
        ``parquet`` reads even a table directory as loose Parquet files.
    version, as_of : int or str, optional
        Delta: read this version, or the version current at this ISO timestamp
        (UTC when it has no offset).  Default: the current version.
    snapshot_id : int, optional
        Iceberg: read this snapshot.  Default: the current one.
    catalog : str, optional
        Iceberg: the input is a table name in this catalog, configured as
        pyiceberg configures catalogs (``~/.pyiceberg.yaml``,
        ``PYICEBERG_CATALOG__NAME__URI`` ...).
    output_format : {"auto", "parquet", "delta", "iceberg"}
        ``auto``: a Delta table for a Delta input, Parquet otherwise.
    """

    input_format: str = "auto"
    version: int | None = None
    as_of: str | None = None
    snapshot_id: int | None = None
    catalog: str | None = None
    output_format: str = "auto"

    def check(self) -> None:
        """Refuse options that contradict each other (before anything is read)."""
        if self.input_format not in INPUT_FORMATS:
            raise InputError(f"input format must be one of {', '.join(INPUT_FORMATS)}, not "
                             f"{self.input_format!r}", column="input_format")
        if self.output_format not in OUTPUT_FORMATS:
            raise InputError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, not "
                             f"{self.output_format!r}", column="output_format")
        if self.version is not None and self.as_of is not None:
            raise InputError("give a Delta version or a timestamp to read it as of, not both",
                             column="version")
        if self.version is not None and self.version < 0:
            raise InputError(f"Delta version must be 0 or more, not {self.version}",
                             column="version")


@dataclass(frozen=True)
class TableInfo:
    """What the artifact and the manifest record about a table input.

    ``partition_columns``: the table's partition columns whose values are the
    files' hive-like partition values (Delta: all of them; Iceberg: identity
    partitions, whose source columns are also stored in the files).
    ``timestamp``: the time asked for (Delta ``as_of``), as given.
    ``extra``: format-specific context for writing the output (not recorded).
    """

    format: str
    uri: str
    version: int | None = None
    snapshot_id: int | None = None
    timestamp: str | None = None
    table: str | None = None
    catalog: str | None = None
    partition_columns: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format, "uri": self.uri}
        for key in ("version", "snapshot_id", "timestamp", "table", "catalog"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.partition_columns:
            out["partition_columns"] = list(self.partition_columns)
        return out


def require(fmt: str, display: str) -> Any:
    """Import the library of table format ``fmt`` or refuse the input, naming the extra."""
    module = _EXTRA_MODULE[fmt]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"input {display} is {_article(fmt)} {_FORMAT_NAME[fmt]} table, which "
                         f"zscore reads only with the '{fmt}' extra: pip install "
                         f"'dask-zscore[{fmt}]' (or pass --input-format parquet to read its "
                         "files as loose Parquet, counting rows the table may have "
                         "deleted)") from None


def _article(fmt: str) -> str:
    return "an" if fmt == "iceberg" else "a"


# ---------------------------------------------------------------- detection
def detect(loc: Location) -> str | None:
    """``"delta"``, ``"iceberg"`` or None (loose Parquet) for the directory or file ``loc``."""
    fs = loc.fs
    try:
        if loc.path.endswith(".metadata.json") and fs.isfile(loc.path):
            return "iceberg"
        if not fs.isdir(loc.path):
            return None
        if fs.isdir(loc.join("_delta_log")):
            return "delta"
        if fs.isdir(loc.join("metadata")) and fs.isdir(loc.join("data")) and any(
                str(p).endswith(".metadata.json")
                for p in fs.ls(loc.join("metadata"), detail=False)):
            return "iceberg"
    except Exception:  # noqa: BLE001 - object stores raise their own types (bad credentials)
        return None  # the loose reader reports what is wrong with the input, in its words
    return None


def open_input(input: str | os.PathLike[str], storage_options: Mapping[str, Any] | None,
               filters: Sequence[str] = (), table: TableOptions | None = None
               ) -> tuple[Location, Any]:
    """Resolve and list ``input``: loose Parquet, a Delta table or an Iceberg table.

    Returns the input's location (the table's root for a table) and a
    :class:`~pipeline.dataset.Listing` whose ``table`` is set for a table.
    ``filters`` on partition columns prune a table's files from its log or
    manifests; no directory is listed.

    Raises
    ------
    InputError
        A table whose library (extra) is missing, an unknown version or
        snapshot, a table feature zscore cannot honour, or what
        :func:`pipeline.dataset.scan` refuses.
    """
    from .dataset import scan

    opts = dict(storage_options or {})
    table = table or TableOptions()
    table.check()
    if table.catalog is not None or table.input_format == "iceberg" and \
            not _looks_like_path(os.fspath(input)):
        from .iceberg import read_iceberg

        _check_table_options("iceberg", table, redact(os.fspath(input)))
        return read_iceberg(os.fspath(input), opts, filters, table)
    loc = resolve(input, opts)
    fmt = table.input_format if table.input_format != "auto" else detect(loc)
    _check_table_options(fmt, table, loc.display)
    if fmt == "delta":
        from .delta import read_delta

        return read_delta(loc, opts, filters, table)
    if fmt == "iceberg":
        from .iceberg import read_iceberg

        return read_iceberg(os.fspath(input), opts, filters, table, loc=loc)
    return loc, scan(loc, filters)


def _looks_like_path(text: str) -> bool:
    return "/" in text or "://" in text or text.endswith(".json")


def _check_table_options(fmt: str | None, table: TableOptions, display: str) -> None:
    if fmt != "delta" and (table.version is not None or table.as_of is not None):
        what = "version" if table.version is not None else "as_of"
        raise InputError(f"a Delta version or timestamp was given, but the input {display} is "
                         f"{'not a Delta table' if fmt else 'loose Parquet, not a Delta table'}",
                         column=what)
    if fmt != "iceberg" and table.snapshot_id is not None:
        raise InputError(f"an Iceberg snapshot id was given, but the input {display} is not "
                         "an Iceberg table", column="snapshot_id")


# ------------------------------------------------------------ shared helpers
def partition_text(value: Any) -> str:
    """A partition value as hive directories spell it (null: ``__HIVE_DEFAULT_PARTITION__``)."""
    if value is None:
        return HIVE_NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def hive_rel(partition: Sequence[tuple[str, str]], name: str) -> str:
    """``k=v/.../name``: where a file with these partition values sits in a hive layout."""
    from urllib.parse import quote

    # Escaped as Hive and pyarrow's "uri" segment encoding do: a '/' or '=' in a value
    # must not create a directory level or a key.
    parts = [f"{k}={quote(v, safe=' -_.:+@,')}" for k, v in partition]
    return posixpath.join(*parts, name) if parts else name


def prune(files: Sequence[Any], filters: Sequence[str], keys: Sequence[str], display: str,
          values: Any = None) -> list[Any]:
    """The files whose partition values pass every filter (``--filter`` semantics).

    ``values(file)`` gives a file's ``(key, value)`` pairs (default: its
    ``partition``).  Raises :class:`InputError` for a filter on a column that is
    not one of ``keys``.
    """
    from .partitions import allowed, parse_all

    parsed = parse_all(filters)
    get = values or (lambda f: f.partition)
    for flt in parsed:
        if flt.key not in keys:
            raise InputError(f"--filter names '{flt.key}', which is not a partition column of "
                             f"the table {display} (its partition columns: "
                             f"{', '.join(keys) or 'none'})", column=flt.key)
    kept = list(files)
    for key in dict.fromkeys(f.key for f in parsed):
        mine = [f for f in parsed if f.key == key]
        distinct = sorted({dict(get(f))[key] for f in kept})
        ok = allowed(mine, distinct)
        kept = [f for f in kept if dict(get(f))[key] in ok]
    if not kept and filters:
        raise InputError(f"table {display} holds no data files matching "
                         + " and ".join(f"--filter {f!r}" for f in filters))
    return kept


# ------------------------------------------------------------------- output
def output_format(table: TableOptions | None, info: TableInfo | None) -> str:
    """The output's format: ``parquet``, ``delta`` or ``iceberg`` (checked before any work).

    ``auto`` writes a Delta table for a Delta input and Parquet for anything
    else (an Iceberg input gives hive-partitioned Parquet).
    """
    fmt = (table or TableOptions()).output_format
    if fmt == "auto":
        return "delta" if info is not None and info.format == "delta" else "parquet"
    if fmt == "iceberg" and (info is None or info.format != "iceberg" or info.catalog is None):
        raise InputError("an Iceberg output is a new table in the catalog of an Iceberg input "
                         "named with --catalog; this input is not one: choose "
                         "--output-format parquet or delta", column="output_format")
    return fmt


def prepare_output(fmt: str, dataset: Any, run_id: str) -> Any:
    """The dataset to hand the transform pass: its files' output names for ``fmt``."""
    if fmt == "delta":
        from .delta import output_dataset

        return output_dataset(dataset, run_id)
    return dataset


def finish_output(fmt: str, out: Location, dataset: Any, written: Sequence[Any], plan: Any,
                  overwrite: bool, options: Mapping[str, Any]) -> dict[str, bytes]:
    """The table metadata files to publish with the data (``{relative name: bytes}``).

    ``dataset`` is what :func:`prepare_output` returned.  Parquet: none.
    """
    if fmt == "delta":
        from .delta import output_log, output_schema

        return output_log(out, dataset, written, output_schema(dataset, plan), overwrite,
                          options)
    return {}


def output_plan(table: TableOptions | None, info: TableInfo | None,
                output: str | os.PathLike[str]) -> tuple[str, str | os.PathLike[str]]:
    """The output's format (:func:`output_format`) and where its files are published:
    ``output``, or for an Iceberg output (a table name) the data directory the catalog
    gives the new table (checked not to exist)."""
    fmt = output_format(table, info)
    if fmt == "iceberg":
        from .iceberg_output import data_location

        assert info is not None  # output_format checked it
        return fmt, data_location(os.fspath(output), info)
    return fmt, output


def after_publish(fmt: str, output: str | os.PathLike[str], out: Location, dataset: Any,
                  rels: Sequence[str], plan: Any) -> None:
    """Register a published output in its catalog (Iceberg); nothing for other formats."""
    if fmt == "iceberg":
        import pyarrow as pa

        from .iceberg_output import create_table
        from .transform import output_schema

        schema = output_schema(pa.schema(list(dataset.schema.fields)), plan)
        create_table(os.fspath(output), dataset.table, out, rels, schema)
