"""Moments per file, on the workers: the read side of the statistics pass.

Each task reads only the feature columns of its files, batch by batch (so a
file larger than memory is fine), and returns one :class:`~pipeline.stats.Moments`
per file and feature (and, with ``--group-by`` columns, per key too).  Merging
and everything after it happens on the client (:mod:`pipeline.fitting`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .blocks import block_moments
from .columns import numpy_view
from .dataset import SourceFile
from .groups import GroupMoments, codes, merge_into
from .stats import Moments
from .storage import open_parquet
from .worker import breadcrumb, corrupt_file

BATCH_ROWS = 1 << 16  # rows per chunk: big enough for numpy, small enough for L2-friendly passes

FileMoments = dict[str, Moments]


def column_moments(arr: pa.Array | pa.ChunkedArray) -> Moments:
    """Moments of one Arrow column: nulls and NaN are missing, +-inf counted apart."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    missing = arr.null_count
    if missing:
        arr = arr.drop_null()
    x = numpy_view(arr)
    inf = 0
    total = None
    if x.dtype.kind == "f":
        # A NaN or an infinity makes the sum non-finite: one pass instead of two
        # (isfinite, then all) in the common case, and the sum is needed anyway.
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, overflow: handled
            total = float(np.sum(x, dtype=np.float64))
        if not math.isfinite(total):
            total = None
            finite = np.isfinite(x)
            if not finite.all():
                nan = int(np.isnan(x).sum())
                inf = int(x.size - finite.sum()) - nan
                missing += nan
                x = x[finite]
    return Moments.from_array(x, missing=missing, inf=inf, total=total)


def batch_group_moments(table: pa.Table, features: Sequence[str], by: Sequence[str]
                        ) -> GroupMoments:
    """Moments of each feature within each key of one batch: :func:`column_moments` per key."""
    code, keys = codes(table, by)
    order = np.argsort(code, kind="stable")
    bounds = np.searchsorted(code[order], np.arange(len(keys) + 1))
    take = pa.array(order)
    out: GroupMoments = {k: {} for k in keys}
    for name in features:
        col = table.column(name)
        ordered = (col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col).take(take)
        for g, key in enumerate(keys):
            lo, hi = int(bounds[g]), int(bounds[g + 1])
            out[key][name] = column_moments(ordered.slice(lo, hi - lo))
    return out


def file_moments(fs: Any, file: SourceFile, features: Sequence[str],
                 batch_rows: int = BATCH_ROWS, by: Sequence[str] = ()
                 ) -> FileMoments | tuple[FileMoments, GroupMoments]:
    """Moments of each feature of one file, folded over its batches in order.

    With ``by`` (``--group-by`` columns), also the moments within each key; the
    global moments are the same, bit for bit, as without.
    """
    result: FileMoments = {}
    groups: GroupMoments = {}
    columns = list(features) + [b for b in by if b not in features]
    breadcrumb(file.rel)
    try:
        for batch in _batches(open_parquet(fs, file.path), columns, batch_rows):
            part = block_moments(batch, features, column_moments)
            # The first batch's moments are the file's so far (merging into empty ones
            # is an identity: no copies, 32 per file).
            result = {n: result[n].merge(m) for n, m in part.items()} if result else part
            if by:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                merge_into(groups, batch_group_moments(table, features, by))
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise corrupt_file(file.rel, exc) from None
    result = result or {name: Moments() for name in features}
    return (result, groups) if by else result


def _batches(pf: Any, columns: list[str], batch_rows: int) -> Any:
    """``columns`` of a file in batches of ``batch_rows`` rows (the last one shorter).

    The batches run across row groups, so a file of at most ``batch_rows`` rows is
    one batch: read in one call, without a batch reader's set-up (a quarter of the
    cost of reading a 100-row file).
    """
    if 0 < pf.metadata.num_rows <= batch_rows:
        yield pf.read(columns=columns, use_threads=False)
        return
    yield from pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False)


def files_moments(fs: Any, files: Sequence[SourceFile], features: Sequence[str],
                  by: Sequence[str] = ()) -> list[Any]:
    """:func:`file_moments` over a batch of files: the unit of work of one task."""
    return [file_moments(fs, f, features, by=by) for f in files]


def frame_moments(df: Any, features: Sequence[str]) -> FileMoments:
    """Moments of each feature of one pandas DataFrame (a Dask partition)."""
    table = pa.Table.from_pandas(df[list(features)], preserve_index=False)
    return {name: column_moments(table.column(name)) for name in features}
