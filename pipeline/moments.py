"""Moments per file, on the workers: the read side of the statistics pass.

Each task reads only the feature columns of its files, batch by batch (so a
file larger than memory is fine), and returns one :class:`~pipeline.stats.Moments`
per file and feature (and, with ``--group-by`` columns, per key too).  Merging
and everything after it happens on the client (:mod:`pipeline.fitting`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .columns import numpy_view
from .dataset import SourceFile
from .groups import codes, too_many_keys, with_hive_keys
from .keystats import KeyMoments, batch_key_moments
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


@dataclass(frozen=True)
class KeySpec:
    """What a fit groups by: the ``by`` columns, the typed hive values of each file's
    partition keys among them (relative path -> name -> value), and ``max_keys``
    (0: no limit), checked after every batch so a file of too many keys stops early."""

    by: tuple[str, ...]
    hive: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_keys: int = 0


def file_moments(fs: Any, file: SourceFile, features: Sequence[str],
                 batch_rows: int = BATCH_ROWS, keys: KeySpec | None = None
                 ) -> FileMoments | tuple[FileMoments, KeyMoments]:
    """Moments of each feature of one file, folded over its batches in order.

    With ``keys`` (``--group-by``), also the moments within each key
    (:mod:`pipeline.keystats`); the global moments are the same, bit for bit, as without.
    """
    result = {name: Moments() for name in features}
    groups = KeyMoments()
    by = keys.by if keys is not None else ()
    hive = keys.hive.get(file.rel, {}) if keys is not None else {}
    columns = list(features) + [b for b in by if b not in features and b not in hive]
    breadcrumb(file.rel)
    try:
        for batch in _batches(open_parquet(fs, file.path), columns, batch_rows):
            for name in features:
                result[name] = result[name].merge(column_moments(batch.column(name)))
            if keys is not None:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                code, found = codes(with_hive_keys(table, hive), by)
                groups.fold(batch_key_moments(table, features, code, found))
                if keys.max_keys and len(groups.keys) > keys.max_keys:
                    raise too_many_keys(by, len(groups.keys), keys.max_keys,
                                        f" in {file.rel} alone")
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise corrupt_file(file.rel, exc) from None
    return (result, groups) if keys is not None else result


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
                  keys: KeySpec | None = None) -> list[Any]:
    """:func:`file_moments` over a batch of files: the unit of work of one task."""
    return [file_moments(fs, f, features, keys=keys) for f in files]


def frame_moments(df: Any, features: Sequence[str]) -> FileMoments:
    """Moments of each feature of one pandas DataFrame (a Dask partition)."""
    table = pa.Table.from_pandas(df[list(features)], preserve_index=False)
    return {name: column_moments(table.column(name)) for name in features}
