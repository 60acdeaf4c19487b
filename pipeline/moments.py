"""Moments per file, on the workers: the read side of the statistics pass.

Each task reads only the feature columns of its files, batch by batch (so a
file larger than memory is fine), and returns one :class:`~pipeline.stats.Moments`
per file and feature (and, with ``--group-by`` columns, per key too).  Merging
and everything after it happens on the client (:mod:`pipeline.fitting`).

With a weight column (``--weight``) the same functions return weighted moments:
a row whose weight is 0 contributes nothing (not to the count, the min or the
max either); a missing, NaN, negative or infinite weight is refused, naming the
file and the column (:func:`weight_values`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .blocks import block_moments
from .columns import null_mask, numpy_view, one_array
from .dataset import SourceFile
from .errors import DataError
from .groups import codes, too_many_keys, with_hive_keys
from .keystats import KeyMoments, batch_key_moments
from .rowgroups import read_pieces
from .stats import Moments
from .storage import open_parquet
from .worker import breadcrumb, corrupt_file

BATCH_ROWS = 1 << 16  # rows per chunk: big enough for numpy, small enough for L2-friendly passes

FileMoments = dict[str, Moments]


def column_moments(arr: pa.Array | pa.ChunkedArray, weights: np.ndarray | None = None
                   ) -> Moments:
    """Moments of one Arrow column: nulls and NaN are missing, +-inf counted apart.

    ``weights`` (float64, one per row, checked by :func:`weight_values`) make them
    weighted; rows of weight 0 are left out after missing and infinite values
    are counted.
    """
    arr = one_array(arr)
    missing = arr.null_count
    if missing:
        if weights is not None:
            weights = weights[~null_mask(arr)]
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
                weights = weights[finite] if weights is not None else None
    if weights is not None:
        positive = weights > 0
        if not positive.all():
            x, weights = x[positive], weights[positive]
    return Moments.from_array(x, missing=missing, inf=inf, total=total, weights=weights)


def weight_values(arr: pa.Array | pa.ChunkedArray, name: str, where: str) -> np.ndarray:
    """A weight column as float64, every value checked: finite and >= 0, none missing.

    Any integer or floating width is accepted (integers beyond 2**53 are rounded
    to float64, a relative 1e-16: weights only enter through their ratios).

    Raises
    ------
    DataError
        A missing, NaN, negative or infinite weight, naming ``where`` (a file) and
        the column.
    """
    arr = one_array(arr)
    if arr.null_count:
        bad, what = arr.null_count, "missing"
        w = np.zeros(0)
    else:
        w = numpy_view(arr).astype(np.float64)
        with np.errstate(invalid="ignore"):
            wrong = ~(w >= 0) | np.isinf(w)
        bad = int(wrong.sum())
        if bad:
            first = float(w[int(np.argmax(wrong))])
            what = "NaN" if first != first else "infinite" if math.isinf(first) else "negative"
    if bad:
        raise DataError(f"weight column '{name}' has {bad:,} missing, NaN, negative or infinite "
                        f"value(s) in {where} (the first is {what}); weights must be finite "
                        "and >= 0 (a row of weight 0 counts for nothing): fix the data or drop "
                        "those rows", column=name, path=where)
    return w


@dataclass(frozen=True)
class KeySpec:
    """What a fit groups by: the ``by`` columns, the typed hive values of each file's
    partition keys among them (relative path -> name -> value), and ``max_keys``
    (0: no limit), checked after every batch so a file of too many keys stops early."""

    by: tuple[str, ...]
    hive: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_keys: int = 0


def file_moments(fs: Any, file: SourceFile, features: Sequence[str],
                 batch_rows: int = BATCH_ROWS, keys: KeySpec | None = None,
                 weight: str | None = None) -> FileMoments | tuple[FileMoments, KeyMoments]:
    """Moments of each feature of one file, folded over its batches in order.

    With ``keys`` (``--group-by``), also the moments within each key
    (:mod:`pipeline.keystats`); the global moments are the same, bit for bit, as without.
    With ``weight`` (a column name), weighted moments (see :func:`column_moments`);
    per-key moments are unweighted, so the fit refuses the two together.
    """
    result: FileMoments = {}
    groups = KeyMoments()
    by = keys.by if keys is not None else ()
    hive = keys.hive.get(file.rel, {}) if keys is not None else {}
    columns = list(features) + [b for b in by if b not in features and b not in hive]
    columns += [weight] if weight and weight not in columns else []
    breadcrumb(file.rel)
    try:
        pieces = read_pieces(open_parquet(fs, file.path), columns)
        for batch in _rebatch(pieces, batch_rows):
            if weight:
                w = weight_values(batch.column(weight), weight, file.rel)
                part = {name: column_moments(batch.column(name), w) for name in features}
            else:
                part = block_moments(batch, features, column_moments)
            # The first batch's moments are the file's so far (merging into empty ones
            # is an identity: no copies, 32 per file).
            result = {n: result[n].merge(m) for n, m in part.items()} if result else part
            if keys is not None:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                code, found = codes(with_hive_keys(table, hive), by)
                groups.fold(batch_key_moments(table, features, code, found))
                if keys.max_keys and len(groups.keys) > keys.max_keys:
                    raise too_many_keys(by, len(groups.keys), keys.max_keys,
                                        f" in {file.rel} alone")
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise corrupt_file(file.rel, exc) from None
    result = result or {name: Moments() for name in features}
    return (result, groups) if keys is not None else result


def _rebatch(pieces: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The rows of ``pieces`` in tables of ``rows`` rows (the last one shorter).

    The batches run across row groups, so the moments of a file do not depend on
    how it was written or read, only on ``rows``.  Slices are zero-copy; only a
    batch that spans two pieces holds columns of two chunks.
    """
    carry: pa.Table | None = None
    for piece in pieces:
        if carry is None and 0 < piece.num_rows < rows:  # a small file: its piece as it is
            carry = piece
            continue
        table = piece if carry is None else pa.concat_tables([carry, piece])
        start, n = 0, table.num_rows
        while n - start >= rows:
            yield table.slice(start, rows)
            start += rows
        carry = table.slice(start) if start < n else None
    if carry is not None:
        yield carry


def files_moments(fs: Any, files: Sequence[SourceFile], features: Sequence[str],
                  keys: KeySpec | None = None, weight: str | None = None) -> list[Any]:
    """:func:`file_moments` over a batch of files: the unit of work of one task."""
    return [file_moments(fs, f, features, keys=keys, weight=weight) for f in files]


def frame_moments(df: Any, features: Sequence[str], weight: str | None = None,
                  where: str = "the DataFrame") -> FileMoments:
    """Moments of each feature of one pandas DataFrame (a Dask partition)."""
    columns = list(features) + ([weight] if weight else [])
    table = pa.Table.from_pandas(df[columns], preserve_index=False)
    w = weight_values(table.column(weight), weight, where) if weight else None
    return {name: column_moments(table.column(name), w) for name in features}
