"""Reading a data file's rows: the one way both data passes (fit and transform) read them.

A file is read row group by row group (a row group larger than the caller's
``max_rows`` in pieces of ``max_rows``), as Arrow tables of the Arrow types its
footer declares, by pyarrow, through ordinary reads.

Not Polars, although its Parquet decoder takes about half pyarrow's CPU on the
numeric columns (one file of the benchmark's size M, one thread: 25-28 ms against
45-60 ms): Polars memory-maps a local file, and a file truncated in place while it
is read (a writer rewriting it, a full disk) then kills the whole process with
SIGBUS, the embedded cluster's threads and the run with it, where pyarrow raises
an error that names the file.  ``tests/test_rowgroups.py`` keeps that promise with
a file truncated under a running reader.  Reading the file into memory first to
hand Polars a buffer costs more than it saves (82-85 ms).  Memory-mapping in
pyarrow has the same hazard.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

MAX_ROWS = 1 << 20  # rows read at once: a larger row group is read in pieces (bounded memory)


def read_pieces(pf: pq.ParquetFile, columns: Sequence[str] | None,
                max_rows: int = MAX_ROWS) -> Iterator[pa.Table]:
    """The rows of ``pf`` in order: each row group as one table, or in ``max_rows`` pieces.

    ``columns``: the columns to read (None: all).

    Raises
    ------
    OSError, pyarrow.ArrowException, ValueError
        The file cannot be read.
    """
    md = pf.metadata
    for i in range(md.num_row_groups):
        if md.row_group(i).num_rows <= max_rows:
            # One call instead of a batch reader: the same rows, without the reader's
            # set-up (a fifth of the cost of reading a 100-row file).
            yield pf.read_row_group(i, columns=columns, use_threads=False)
        else:
            for batch in pf.iter_batches(batch_size=max_rows, row_groups=[i], columns=columns,
                                         use_threads=False):
                yield pa.Table.from_batches([batch])
