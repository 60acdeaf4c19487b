"""Integer features that look like identifiers or labels, found for a warning.

The default feature selection takes every integer column, so a ``user_id`` or a
0/1 ``label`` would be standardized silently.  After a fit with the default
selection the client warns, naming the columns, when an integer feature:

* looks like a **label**: its values are exactly 0 and 1 (the fit's min is 0 and
  its max 1; exact, from statistics the fit has anyway);
* looks like an **identifier**: at least :data:`MIN_VALUES` values, all distinct.

"All distinct" is established exactly, and read only for columns that can
still be identifiers: the per-file ``[min, max]`` ranges (from the fit's per-file
moments) must be pairwise disjoint, so no value can repeat between files; only
then is each file's column read again and checked for a repeated value (sorted,
on the workers).  Identifiers spread over files in interleaved ranges (hashed
ids) are therefore not reported: the check never warns on a column with a
repeated value, at the price of missing some identifiers.  ``MIN_VALUES`` keeps
a tiny sample, where ordinary integers are often all distinct, quiet.  A pandas
DataFrame is checked in memory; a Dask DataFrame only for labels (its partitions
are not read twice), and a fit with ``--cache`` neither.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .errors import option
from .stats import Moments

if TYPE_CHECKING:
    from .artifact import FittedStats
    from .dataset import Dataset
    from .session import Session

MIN_VALUES = 100

INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def labels(totals: Mapping[str, Moments], dtypes: Mapping[str, str]) -> list[str]:
    """Integer features whose values are exactly 0 and 1 (in feature order)."""
    return [n for n, m in totals.items() if dtypes[n] in INTEGER_DTYPES
            and m.minimum == 0 and m.maximum == 1]


def disjoint_candidates(pieces: Sequence[Mapping[str, Moments]], totals: Mapping[str, Moments],
                        dtypes: Mapping[str, str]) -> list[str]:
    """Integer features that may be all distinct: enough values, disjoint per-piece ranges."""
    out = []
    for name, total in totals.items():
        if dtypes[name] not in INTEGER_DTYPES or total.count < MIN_VALUES or total.missing:
            continue
        ranges = sorted((int(p[name].minimum), int(p[name].maximum))  # type: ignore[arg-type]
                        for p in pieces if p[name].count)
        if all(hi < lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False)):
            out.append(name)
    return out


def all_distinct(column: pa.Array | pa.ChunkedArray | np.ndarray) -> bool:
    """Whether the non-null values of one file's (or frame's) column never repeat."""
    if isinstance(column, pa.ChunkedArray | pa.Array):
        # Not Array.to_numpy: it imports pandas, which the command line never needs.
        from .columns import null_mask, numpy_view

        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        column = numpy_view(arr)[~null_mask(arr)]
    values = np.sort(np.asarray(column))
    return not bool(np.any(values[1:] == values[:-1]))


def files_distinct(fs: Any, files: Sequence[Any], columns: Sequence[str]) -> list[dict[str, bool]]:
    """Per file, per column: :func:`all_distinct` (the unit of work of one task)."""
    from .storage import open_parquet

    out = []
    for f in files:
        table = open_parquet(fs, f.path).read(columns=list(columns), use_threads=False)
        out.append({c: all_distinct(table.column(c)) for c in columns})
    return out


def message(identifiers: Sequence[str], zero_one: Sequence[str],
            exclude: Callable[[str], str]) -> str | None:
    """The warning naming the columns, or None; ``exclude(names)`` renders the remedy."""
    parts = []
    if identifiers:
        parts.append(f"{', '.join(identifiers)} look(s) like an identifier (every value distinct)")
    if zero_one:
        parts.append(f"{', '.join(zero_one)} look(s) like a label (only 0 and 1)")
    if not parts:
        return None
    names = ",".join([*identifiers, *zero_one])
    return (f"integer feature(s) {'; '.join(parts)} and will be standardized; exclude them "
            f"with {exclude(names)}, or name the features to fit")


def warn_dataset(session: Session, dataset: Dataset, stats: FittedStats,
                 pieces: Sequence[Mapping[str, Moments]], reread: bool = True) -> None:
    """Warn about default-selected integer features that look like ids or labels.

    See :mod:`pipeline.lookalikes` for the exact rule; only columns whose per-file
    ranges are disjoint are read again, and only with ``reread`` (a fit with a
    cache does not open the files the cache spares, so it checks labels only).
    """
    totals = {n: f.moments for n, f in stats.features.items() if f.moments is not None}
    dtypes = {n: f.dtype for n, f in stats.features.items()}
    maybe = disjoint_candidates(pieces, totals, dtypes) if reread else []
    ids: list[str] = []
    if maybe:
        per_file = session.map(partial(files_distinct, dataset.location.fs, columns=maybe),
                               list(dataset.files), label="distinct",
                               weights=[f.size for f in dataset.files])
        ids = [n for n in maybe if all(d[n] for d in per_file)]
    text = message(ids, labels(totals, dtypes), lambda names: option("exclude", names, cli=names))
    if text:
        session.warn(text)


def warn_frame(frame: Any, stats: FittedStats, warn: Callable[[str], None]) -> None:
    """:func:`warn_dataset` for a pandas DataFrame (one piece, checked in memory).

    A Dask DataFrame is checked for labels only: its partitions are not read twice.
    """
    totals = {n: f.moments for n, f in stats.features.items() if f.moments is not None}
    dtypes = {n: f.dtype for n, f in stats.features.items()}
    pandas = not hasattr(frame, "to_delayed")
    maybe = disjoint_candidates([totals], totals, dtypes) if pandas else []
    ids = [n for n in maybe if all_distinct(frame[n].dropna().to_numpy())]
    text = message(ids, labels(totals, dtypes), lambda names: option("exclude", names, cli=names))
    if text:
        warn(text)
