"""What Delta Lake and Iceberg tables share: how to read one, what was read, hive-like paths.

:class:`TableOptions` says which snapshot of a table input to read and what to
write for it; :class:`TableInfo` is what the artifact and the manifest record
about the snapshot read.  The readers (:mod:`pipeline.delta`,
:mod:`pipeline.iceberg`) map a table's partition values to hive-like relative
paths (:func:`hive_rel`) so that the rest of zscore sees the same
:class:`~pipeline.dataset.SourceFile` as for loose Parquet, and prune ``filters``
from the table's own list of files (:func:`prune`).
"""

from __future__ import annotations

import importlib
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .choices import INPUT_FORMATS, OUTPUT_FORMATS
from .errors import InputError, option

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # how Hive, Spark and delta-rs spell a null key
_EXTRA_MODULE = {"delta": "deltalake", "iceberg": "pyiceberg"}
_FORMAT_NAME = {"delta": "Delta Lake", "iceberg": "Iceberg"}


@dataclass(frozen=True)
class TableOptions:
    """How to read a table input and what to write for it (checked when built).

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

    def __post_init__(self) -> None:
        for name, allowed in (("input_format", INPUT_FORMATS), ("output_format", OUTPUT_FORMATS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{option(name)} must be one of {', '.join(allowed)}, not "
                                 f"{getattr(self, name)!r}")
        if self.version is not None and self.as_of is not None:
            raise InputError(f"give {option('version')} or {option('as_of')} (a Delta version "
                             "or a time to read the table as of), not both")
        if self.version is not None and self.version < 0:
            raise InputError(f"{option('version')} must be 0 or more, not {self.version}")


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
                         f"'dask-zscore[{fmt}]' (or pass {option('input_format', 'parquet')} "
                         "to read its files as loose Parquet, counting rows the table may "
                         "have deleted)") from None


def _article(fmt: str) -> str:
    return "an" if fmt == "iceberg" else "a"


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
    """The files whose partition values pass every filter (``filters`` semantics).

    ``values(file)`` gives a file's ``(key, value)`` pairs (default: its
    ``partition``).  Raises :class:`InputError` for a filter on a column that is
    not one of ``keys``.
    """
    from .partitions import allowed, parse_all

    parsed = parse_all(filters)
    get = values or (lambda f: f.partition)
    for flt in parsed:
        if flt.key not in keys:
            raise InputError(f"{option('filters')} names '{flt.key}', which is not a partition "
                             f"column of the table {display} (its partition columns: "
                             f"{', '.join(keys) or 'none'})", column=flt.key)
    kept = list(files)
    for key in dict.fromkeys(f.key for f in parsed):
        mine = [f for f in parsed if f.key == key]
        distinct = sorted({dict(get(f))[key] for f in kept})
        ok = allowed(mine, distinct)
        kept = [f for f in kept if dict(get(f))[key] in ok]
    if not kept and filters:
        raise InputError(f"table {display} holds no data files matching "
                         + " and ".join(option("filters", [f], cli=repr(f)) for f in filters))
    return kept
