"""Table formats as input and output: a Delta Lake or Apache Iceberg table read at one snapshot.

A table directory holds more files than the table does: a Delta commit that
overwrites or deletes leaves the old data files on disk and removes them only
in ``_delta_log/``; an Iceberg snapshot lists its live files in manifests under
``metadata/``.  Read as loose Parquet, such a directory counts rows the table
no longer holds.  So a directory that is a table is read through its own
library's list of live files (:mod:`pipeline.delta`, :mod:`pipeline.iceberg`),
or refused when that library is missing; it is never read as loose Parquet
unless ``input_format="parquet"`` says so.

:func:`open_input` is the one way in (``pipeline.fitting.locate`` calls it for
every job).  Either way the result is what :func:`pipeline.dataset.scan` returns
for loose Parquet: a :class:`~pipeline.dataset.Listing` of
:class:`~pipeline.dataset.SourceFile` (relative path, hive-like partition values),
plus a :class:`~pipeline.lakehouse.TableInfo` for the artifact; the fit, transform
and write passes do not know tables exist.  On the way out, :func:`plan_output`
decides the output's format and where its files go, and the write job calls
:func:`prepare_output`, :func:`finish_output` and :func:`after_publish` around
the transform pass.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import InputError, option
from .lakehouse import TableInfo, TableOptions
from .redaction import redact
from .storage import Location, resolve

if TYPE_CHECKING:
    from .dataset import Listing


# ----------------------------------------------------------------- input
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
               ) -> tuple[Location, Listing]:
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
    if table.catalog is not None or table.input_format == "iceberg" and \
            not _looks_like_path(os.fspath(input)):
        from .iceberg import read_iceberg

        _check_table_options("iceberg", table, redact(os.fspath(input)))
        return read_iceberg(os.fspath(input), opts, filters, table)
    loc = resolve(input, opts)
    fmt = table.input_format if table.input_format != "auto" else detect(loc)
    if table.input_format == "auto" and fmt is None:
        _refuse_inside_table(loc)
    _check_table_options(fmt, table, loc.display)
    if fmt == "delta":
        from .delta import read_delta

        return read_delta(loc, opts, filters, table)
    if fmt == "iceberg":
        from .iceberg import read_iceberg

        return read_iceberg(os.fspath(input), opts, filters, table, loc=loc)
    return loc, scan(loc, filters)


def _refuse_inside_table(loc: Location) -> None:
    """Refuse a directory or file inside a table's directory (``table/day=1/``).

    Its files are the table's on disk, live or removed by a later commit, so read
    loose they would count rows the table no longer holds.  The parents are
    checked up to the file system's root (a few ``isdir`` calls per level).
    """
    path = loc.path.rstrip("/")
    parent = posixpath.dirname(path)
    while parent not in ("", path):
        fmt = detect(Location(loc.fs, parent, parent))
        if fmt is not None:
            tail = loc.path[len(parent):].rstrip("/")
            given = loc.display.rstrip("/")
            root = given[:-len(tail)] if tail and given.endswith(tail) else parent
            name = "a Delta Lake table" if fmt == "delta" else "an Iceberg table"
            raise InputError(
                f"input {loc.display} is inside {root}, {name}, whose directory also holds "
                f"files its later commits removed: give the table {root} as input (one "
                f"partition of it with {option('filters')}), or "
                f"{option('input_format', 'parquet')} to read these files as loose Parquet",
                path=loc.display)
        path, parent = parent, posixpath.dirname(parent)


def _looks_like_path(text: str) -> bool:
    return "/" in text or "://" in text or text.endswith(".json")


def _check_table_options(fmt: str | None, table: TableOptions, display: str) -> None:
    if fmt != "delta" and (table.version is not None or table.as_of is not None):
        what = "version" if table.version is not None else "as_of"
        raise InputError(f"{option(what)} reads a Delta table at a version, but the input "
                         f"{display} is "
                         f"{'not a Delta table' if fmt else 'loose Parquet, not a Delta table'}")
    if fmt != "iceberg" and table.snapshot_id is not None:
        raise InputError(f"{option('snapshot_id')} reads an Iceberg snapshot, but the input "
                         f"{display} is not an Iceberg table")


# ---------------------------------------------------------------- output
@dataclass(frozen=True)
class TableOutput:
    """A job's output: its format and where its files are published.

    ``format``: ``parquet``, ``delta`` or ``iceberg``; ``target``: the directory
    or URL the files are published at; ``name``: the output as given (for an
    Iceberg output, the new table's name, while ``target`` is its data directory).
    """

    format: str
    target: str | os.PathLike[str]
    name: str | os.PathLike[str]


def output_format(table: TableOptions | None, info: TableInfo | None) -> str:
    """The output's format: ``parquet``, ``delta`` or ``iceberg`` (checked before any work).

    ``auto`` writes a Delta table for a Delta input and Parquet for anything
    else (an Iceberg input gives hive-partitioned Parquet).
    """
    fmt = (table or TableOptions()).output_format
    if fmt == "auto":
        return "delta" if info is not None and info.format == "delta" else "parquet"
    if fmt == "iceberg" and (info is None or info.format != "iceberg" or info.catalog is None):
        raise InputError(f"{option('output_format', 'iceberg')} makes a new table in the "
                         f"catalog of an Iceberg input named with {option('catalog')}; this "
                         f"input is not one: choose {option('output_format', 'parquet')} or "
                         f"{option('output_format', 'delta')}")
    return fmt


def plan_output(table: TableOptions | None, info: TableInfo | None,
                output: str | os.PathLike[str]) -> TableOutput:
    """The output's format (:func:`output_format`) and where its files are published:
    ``output``, or for an Iceberg output (a table name) the data directory the catalog
    gives the new table (checked not to exist)."""
    fmt = output_format(table, info)
    if fmt == "iceberg":
        from .iceberg_output import data_location

        assert info is not None  # output_format checked it
        return TableOutput(fmt, data_location(os.fspath(output), info), output)
    return TableOutput(fmt, output, output)


class Located(NamedTuple):
    """What :func:`pipeline.fitting.locate` found: the input, its files, the output's plan."""

    location: Location
    listing: Listing
    output: TableOutput | None = None


def prepare_output(out: TableOutput, dataset: Any, run_id: str) -> Any:
    """The dataset to hand the transform pass: its files' output names for ``out``."""
    if out.format == "delta":
        from .delta import output_dataset

        return output_dataset(dataset, run_id)
    return dataset


def finish_output(out: TableOutput, where: Location, dataset: Any, written: Sequence[Any],
                  plan: Any, overwrite: bool, options: Mapping[str, Any]) -> dict[str, bytes]:
    """The table metadata files to publish with the data (``{relative name: bytes}``).

    ``where``: the output's location; ``dataset``: what :func:`prepare_output`
    returned.  Parquet and Iceberg: none (an Iceberg table is made after
    publication, by :func:`after_publish`).
    """
    if out.format == "delta":
        from .delta import output_log, output_schema

        return output_log(where, dataset, written, output_schema(dataset, plan), overwrite,
                          options)
    return {}


def after_publish(out: TableOutput, where: Location, dataset: Any, rels: Sequence[str],
                  plan: Any) -> None:
    """Register a published output in its catalog (Iceberg); nothing for other formats."""
    if out.format == "iceberg":
        import pyarrow as pa

        from .iceberg_output import create_table
        from .plan import output_schema

        schema = output_schema(pa.schema(list(dataset.schema.fields)), plan)
        create_table(os.fspath(out.name), dataset.table, where, rels, schema)
