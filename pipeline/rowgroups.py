"""Reading a data file's rows: the one way both data passes (fit and transform) read them.

A file is read row group by row group (a row group larger than the caller's
``max_rows`` in pieces of ``max_rows``), as Arrow tables of the Arrow types its
footer declares.

Polars decodes the integer and float32/float64 columns of a large row group of a
local file; pyarrow decodes everything else from the same footer.  On one file of
the benchmark's size M (250,000 rows, 32 numeric features, snappy), in one thread,
Polars decodes the features in 25-28 ms of CPU against pyarrow's 45-60 ms: pyarrow
copies each page three times (the file into a buffer, the decompressed page, the
values into a growing builder).  Polars cannot read every column as it is: it
turns ``string`` into ``string_view`` and dictionaries into categoricals, so it
reads only the types that it gives back unchanged (:data:`_POLARS_TYPES`); a
column it returns as another type is read again by pyarrow, and one of another
length than the footer's row group is an error (the file changed under us).
Below :data:`POLARS_MIN_ROWS` rows its fixed cost per call (about 0.4 ms) is more
than it saves, and object stores keep pyarrow's reader (fsspec's file objects,
one request per range).

The values are the same either way (Parquet's plain and dictionary decoding are
exact; ``tests/test_rowgroups.py`` compares both readers column by column), so
the statistics and the written files do not depend on which reader read a file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MAX_ROWS = 1 << 20  # rows read at once: a larger row group is read in pieces (bounded memory)
POLARS_MIN_ROWS = 8192  # rows of a row group; below, pyarrow (see the module doc)

# Arrow types Polars reads back exactly (float16, decimals, dates, strings... are pyarrow's).
_POLARS_TYPES = frozenset({pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(),
                           pa.uint16(), pa.uint32(), pa.uint64(), pa.float32(), pa.float64()})


def read_pieces(pf: pq.ParquetFile, path: str, local: bool, columns: Sequence[str] | None,
                max_rows: int = MAX_ROWS) -> Iterator[pa.Table]:
    """The rows of ``pf`` in order: each row group as one table, or in ``max_rows`` pieces.

    ``columns``: the columns to read, in that order (None: all); ``path`` is
    the file's path, which Polars opens when ``local`` (see the module doc).

    Raises
    ------
    OSError, pyarrow.ArrowException, ValueError
        The file cannot be read (a Polars error is raised as a ``ValueError``).
    """
    md = pf.metadata
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    names, fast = list(columns or ()), []
    if local and any(POLARS_MIN_ROWS <= n <= max_rows for n in sizes):  # else: no schema work
        schema = pf.schema_arrow
        names = list(schema.names) if columns is None else names
        fast = [n for n in names if schema.field(n).type in _POLARS_TYPES]
    offset = 0
    for i, rows in enumerate(sizes):
        if fast and POLARS_MIN_ROWS <= rows <= max_rows:
            yield _mixed(pf, path, i, (offset, rows), names, fast)
        elif rows <= max_rows:
            yield pf.read_row_group(i, columns=columns, use_threads=False)
        else:
            for batch in pf.iter_batches(batch_size=max_rows, row_groups=[i], columns=columns,
                                         use_threads=False):
                yield pa.Table.from_batches([batch])
        offset += rows


def _mixed(pf: pq.ParquetFile, path: str, group: int, span: tuple[int, int],
           names: list[str], fast: list[str]) -> pa.Table:
    """Row group ``group`` (rows ``span`` = (first, count) of the file): ``fast`` by
    Polars, the other ``names`` by pyarrow, as one table in the order of ``names``."""
    schema = pf.schema_arrow
    # A column Polars gives back as another type (a footer whose Arrow schema and Parquet
    # types disagree, say) is read again by pyarrow, which follows the Arrow schema.
    decoded = {n: c for n, c in _polars_columns(path, fast, span).items()
               if c.type == schema.field(n).type}
    rest = [n for n in names if n not in decoded]
    if rest:
        other = pf.read_row_group(group, columns=rest, use_threads=False)
        decoded.update(zip(other.column_names, other.columns, strict=True))
    fields = [schema.field(n) for n in names]
    for n in names:
        if len(decoded[n]) != span[1]:  # not the row group the footer describes
            raise ValueError(f"column '{n}' has {len(decoded[n])} rows in row group {group}, "
                             f"the footer says {span[1]} (was the file replaced meanwhile?)")
    return pa.Table.from_arrays([decoded[n] for n in names],
                                schema=pa.schema(fields, metadata=schema.metadata))


def _polars_columns(path: str, names: list[str], span: tuple[int, int]) -> dict[str, Any]:
    """Columns ``names`` of rows ``span`` of the file at ``path``, decoded by Polars."""
    import polars as pl

    try:
        frame = pl.scan_parquet(path, hive_partitioning=False, glob=False,
                                parallel="none").select(names).slice(*span).collect()
        table = frame.to_arrow()
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as exc:
        # PanicException is a BaseException: a Rust panic on a malformed file.
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return dict(zip(table.column_names, table.columns, strict=True))
