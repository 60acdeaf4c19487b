"""An Iceberg input's output as a new Iceberg table in the same catalog.

``OUTPUT`` is the new table's name (``ns.events_z``).  Its data files are
written and published like any zscore output, at ``<table location>/data``
(where the catalog places the table: the Iceberg layout), with ``_SUCCESS`` and
``_stats.json`` beside them; then one catalog commit creates the table with
those files as its first snapshot (pyiceberg's ``add_files``, which reads their
footers for the column statistics), partitioned as the input.  The table
appears whole or not at all.  If that commit fails, the published directory
stays (exit 1): the same command with ``--overwrite`` replaces it and tries
again.

The written files keep the Iceberg field ids of the input's columns, so the new
table must give every column the same id; it does when created from the
input's schema, and this is checked before the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from .errors import InputError, OutputError, StorageError, exception_text, option
from .redaction import redact
from .storage import Location


def _catalog(info: Any) -> Any:
    from pyiceberg.catalog import load_catalog

    return load_catalog(info.catalog)


def data_location(output: str, info: Any) -> str:
    """Where the files of the new table ``output`` go (checked: the table does not exist).

    Raises
    ------
    OutputError
        The table exists, or the name is not ``namespace.table``.
    """
    catalog = _catalog(info)
    if "." not in output or "/" in output:
        raise OutputError(f"an Iceberg output is a table name such as ns.events_z, not "
                          f"{output!r}", path=output)
    if catalog.table_exists(output):
        raise OutputError(f"Iceberg table {output} already exists in catalog "
                          f"{info.catalog!r}; choose another name or drop it first "
                          "(zscore never replaces a table)", path=output)
    source = info.extra["table"]
    # The catalog's choice of location, without creating anything: the real
    # transaction (made once the output schema is known) is given the same location.
    planned = catalog.create_table_transaction(output, schema=source.schema())
    return f"{str(planned.table_metadata.location).rstrip('/')}/data"


def create_table(output: str, info: Any, out: Location, rels: Sequence[str],
                 schema: pa.Schema) -> int:
    """Create the table ``output`` whose first snapshot holds the published ``rels``.

    ``schema``: the Arrow schema of the written files (with their field ids).
    Returns the new snapshot's id.
    """
    from pyiceberg.io.pyarrow import pyarrow_to_schema
    from pyiceberg.schema import index_by_name

    catalog = _catalog(info)
    source = info.extra["table"]
    location = out.display.rstrip("/").removesuffix("/data")
    try:
        wanted = pyarrow_to_schema(schema)
    except ValueError as exc:
        raise InputError(f"cannot make an Iceberg schema of the output: {exception_text(exc)}; "
                         f"write Parquet instead ({option('output_format', 'parquet')})"
                         ) from None
    try:
        tx = catalog.create_table_transaction(output, schema=wanted,
                                              partition_spec=source.spec(), location=location)
        given = index_by_name(tx.table_metadata.schema())
        for name, field_id in index_by_name(wanted).items():
            if given.get(name) != field_id:
                raise OutputError(f"catalog {info.catalog!r} numbers column '{name}' of the new "
                                  f"table {output} differently from the input's files; write "
                                  f"Parquet instead ({option('output_format', 'parquet')})",
                                  path=output)
        tx.add_files([f"{location}/data/{rel}" for rel in rels])
        tx.commit_transaction()
        snapshot = catalog.load_table(output).current_snapshot()
    except OutputError:
        raise
    except Exception as exc:  # noqa: BLE001 - catalogs raise their own types
        raise StorageError(f"the data of Iceberg table {output} is published at "
                           f"{out.display}, but the catalog commit failed: "
                           f"{redact(exception_text(exc, 300))}; rerun with "
                           f"{option('overwrite')}",
                           path=output) from None
    return int(snapshot.snapshot_id) if snapshot is not None else 0
