"""Apache Iceberg tables as input: the data files of one snapshot, planned by pyiceberg.

A table is named in a catalog (``--catalog NAME`` and ``ns.table``, the catalog
configured as pyiceberg configures catalogs: ``.pyiceberg.yaml`` or
``PYICEBERG_CATALOG__NAME__*`` variables) or given by a metadata JSON file.  A
table directory (``metadata/`` and ``data/``) is read through its
``version-hint.text`` when it has one (Hadoop-style tables); otherwise only its
catalog knows which metadata file is current, and zscore says so.

The snapshot's files come from ``table.scan(snapshot_id).plan_files()``, so
files a delete or overwrite removed are not read.  Refused, never ignored: row
deletes (position or equality delete files: zscore reads whole data files),
data files that are not Parquet, and renamed columns (the files store the old
names; Iceberg maps them by field id).

Iceberg data files store every column, partition columns included; identity
partitions give the files' hive-like layout in the output (``p=a/file.parquet``)
and the values ``--filter`` compares.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from .dataset import Listing, SourceFile
from .errors import DataError, InputError, StorageError, exception_text, option
from .lakehouse import TableInfo, TableOptions, hive_rel, partition_text, prune, require
from .redaction import redact
from .storage import Location, resolve


def pyiceberg_properties(options: Mapping[str, Any]) -> dict[str, str]:
    """fsspec storage options (s3fs spelling) as pyiceberg FileIO properties."""
    pairs = {"key": "s3.access-key-id", "secret": "s3.secret-access-key",
             "token": "s3.session-token", "endpoint_url": "s3.endpoint",
             "region_name": "s3.region"}
    client = options.get("client_kwargs") or {}
    out = {}
    for src, dst in pairs.items():
        value = options.get(src, client.get(src) if isinstance(client, Mapping) else None)
        if value is not None:
            out[dst] = str(value)
    return out


def load(input: str, options: dict[str, Any], table: TableOptions,
         loc: Location | None = None) -> Any:
    """The pyiceberg table named by ``input`` (catalog name, metadata file or directory)."""
    shown = redact(input)
    require("iceberg", shown)
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    try:
        if table.catalog is not None:
            from pyiceberg.catalog import load_catalog

            return load_catalog(table.catalog).load_table(input)
        from pyiceberg.table import StaticTable

        metadata = _metadata_file(loc or resolve(input, options), shown)
        return StaticTable.from_metadata(metadata, properties=pyiceberg_properties(options))
    except (NoSuchTableError, NoSuchNamespaceError) as exc:
        raise InputError(f"Iceberg catalog {table.catalog!r} has no table {shown}: "
                         f"{_text(exc)}", path=shown) from None
    except (InputError, StorageError):
        raise
    except (OSError, ConnectionError) as exc:
        raise StorageError(f"cannot read the Iceberg table {shown}: {_text(exc)}",
                           path=shown) from None
    except Exception as exc:  # noqa: BLE001 - catalog configuration and parsing errors
        where = f"in catalog {table.catalog!r} " if table.catalog else ""
        raise InputError(f"cannot load the Iceberg table {shown} {where}({type(exc).__name__}: "
                         f"{_text(exc)}); check the catalog's configuration (.pyiceberg.yaml "
                         "or PYICEBERG_CATALOG__NAME__* variables)", path=shown) from None


def _text(exc: BaseException) -> str:
    return redact(exception_text(exc, 300))


def _metadata_file(loc: Location, shown: str) -> str:
    """The metadata JSON of an Iceberg input given as a file or a table directory."""
    fs = loc.fs
    url = str(fs.unstrip_protocol(loc.path))
    if loc.path.endswith(".metadata.json"):
        return url
    hint = loc.join("metadata", "version-hint.text")
    if fs.isfile(hint):
        version = fs.cat_file(hint).decode().strip()
        return f"{url}/metadata/v{version}.metadata.json"
    found = sorted(posixpath.basename(p) for p in fs.ls(loc.join("metadata"), detail=False)
                   if p.endswith(".metadata.json"))
    newest = f"{shown.rstrip('/')}/metadata/{found[-1]}" if found else None
    raise InputError(f"input {shown} is an Iceberg table directory without version-hint.text: "
                     "only its catalog knows its current metadata; give the table's name and "
                     f"its catalog ({option('catalog', 'NAME', cli='NAME')} with INPUT "
                     "ns.table) or its current metadata file"
                     + (f" (the newest here is {newest})" if newest else ""), path=shown)


def _snapshot(tbl: Any, table: TableOptions, shown: str) -> Any:
    if table.snapshot_id is None:
        snap = tbl.current_snapshot()
        if snap is None:
            raise InputError(f"Iceberg table {shown} has no snapshot: it holds no data",
                             path=shown)
        return snap
    snap = tbl.snapshot_by_id(table.snapshot_id)
    if snap is None:
        known = [s.snapshot_id for s in tbl.snapshots()][-5:]
        raise InputError(f"Iceberg table {shown} has no snapshot {table.snapshot_id} (its "
                         f"latest: {', '.join(map(str, known)) or 'none'}); give one of them "
                         f"as {option('snapshot_id')}")
    return snap


def check_renames(tbl: Any, shown: str) -> None:
    """Refuse a table one of whose columns was ever renamed: old files store the old name.

    Every schema in the metadata is compared with the current one, whatever the
    snapshot read: a rename anywhere in the history makes names ambiguous.
    """
    from pyiceberg.schema import index_name_by_id

    current = index_name_by_id(tbl.schema())
    for schema in tbl.schemas().values():
        for field_id, name in index_name_by_id(schema).items():
            if field_id in current and current[field_id] != name:
                raise DataError(f"Iceberg table {shown}: column '{current[field_id]}' was "
                                f"renamed from '{name}', and files written before the rename "
                                "store it under the old name; zscore reads columns by name: "
                                "rewrite the table's data (e.g. an overwrite with its own "
                                "rows) first", column=current[field_id])


def read_iceberg(input: str, options: dict[str, Any], filters: Sequence[str],
                 table: TableOptions, loc: Location | None = None
                 ) -> tuple[Location, Listing]:
    """List the data files of one Iceberg snapshot, pruned by identity-partition ``filters``.

    Returns the table's location and a :class:`Listing` (files at hive-like
    relative paths of their identity partitions; no hive keys, as the files
    store those columns).
    """
    shown = redact(input)
    tbl = load(input, options, table, loc)
    snap = _snapshot(tbl, table, shown)
    check_renames(tbl, shown)
    root = resolve(tbl.location(), options)
    tasks = list(tbl.scan(snapshot_id=snap.snapshot_id).plan_files())
    keys = _identity_columns(tbl)
    pairs = [_source_file(tbl, root, task, shown) for task in tasks]
    pairs = prune(pairs, filters, keys, shown, values=lambda pair: pair[0])
    if not pairs:
        raise InputError(f"Iceberg table {shown} (snapshot {snap.snapshot_id}) holds no data "
                         "files", path=shown)
    files = sorted(f for _, f in pairs)
    if len({f.rel for f in files}) < len(files):
        raise DataError(f"Iceberg table {shown} has two data files with the same name in one "
                        "partition; zscore cannot mirror them in its output", path=shown)
    info = TableInfo(format="iceberg", uri=redact(str(tbl.metadata_location)),
                     snapshot_id=int(snap.snapshot_id),
                     table=input if table.catalog is not None else None,
                     catalog=table.catalog, partition_columns=tuple(keys),
                     extra={"table": tbl})
    return root, Listing(files=files, table=info)


def _identity_columns(tbl: Any) -> list[str]:
    from pyiceberg.transforms import IdentityTransform

    schema = tbl.schema()
    return [schema.find_column_name(f.source_id) for f in tbl.spec().fields
            if isinstance(f.transform, IdentityTransform)]


def _source_file(tbl: Any, root: Location, task: Any, shown: str
                 ) -> tuple[tuple[tuple[str, str], ...], SourceFile]:
    from pyiceberg.manifest import FileFormat
    from pyiceberg.transforms import IdentityTransform

    data = task.file
    if task.delete_files:
        first = next(iter(task.delete_files))
        raise DataError(f"Iceberg table {shown}: data file {posixpath.basename(data.file_path)} "
                        f"has {len(task.delete_files)} delete file(s) (row-level deletes, e.g. "
                        f"{posixpath.basename(first.file_path)}), which zscore cannot apply; "
                        "rewrite the affected data files first (Spark: CALL "
                        "system.rewrite_data_files, or an overwrite with pyiceberg)",
                        path=shown)
    if data.file_format != FileFormat.PARQUET:
        raise DataError(f"Iceberg table {shown}: data file {posixpath.basename(data.file_path)} "
                        f"is {data.file_format.name}, and zscore reads Parquet only",
                        path=shown)
    spec = tbl.specs()[data.spec_id]
    schema = tbl.schema()
    values = []
    for i, f in enumerate(spec.fields):
        if isinstance(f.transform, IdentityTransform):
            column = schema.find_field(f.source_id)
            value = data.partition[i]
            text = f.transform.to_human_string(column.field_type, value) if value is not None \
                else None
            values.append((column.name, partition_text(text)))
    partition = tuple(values)
    path = _fs_path(root, str(data.file_path))
    rel = hive_rel(partition, posixpath.basename(path))
    return partition, SourceFile(rel=rel, path=path, size=int(data.file_size_in_bytes),
                                 version=f"iceberg:{data.record_count}")


def _fs_path(root: Location, uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path) if parsed.scheme else uri
    return str(root.fs._strip_protocol(uri))
