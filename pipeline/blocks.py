"""Small batches, many columns: one numpy call for a block of columns instead of one each.

A 100-row file of 32 features costs zscore some 30-60 µs of Python per column and
pass (views, masks, a dozen numpy calls of a microsecond each on 100 values) and
almost nothing in arithmetic: on 10,000 such files that per-column work was most
of the run.  Here the columns of a batch of at most :data:`BLOCK_ROWS` rows are
copied into one float64 block (an exact conversion for every floating type and
for integers up to 32 bits) and each step is one numpy call over the block.

Same bits as the per-column path, by construction: every step is the same
elementwise IEEE operation on the same float64 values in the same order (a row
of a C-ordered block is summed, min'ed and max'ed along its contiguous axis by
the same pairwise loop as a 1-d array; ``tests/test_blocks.py`` holds both paths
to equality).  Whatever the block path does not handle -- nulls, NaN or
infinities in a fit, an infinity or overflow in a transform, 64-bit integers
in a fit and unsigned or beyond 2**52 in a transform (their exact integer
arithmetic lives in :mod:`pipeline.kernel` and :mod:`pipeline.stats`), per-key
plans, inverse transforms, any option of a plan
that this module does not know -- is left to the per-column path, which also
raises the errors.  Batches larger than :data:`BLOCK_ROWS` go column by column:
there the per-column overhead is small next to the arithmetic, and a block
would be a copy of the whole batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .columns import one_array
from .stats import Moments

BLOCK_ROWS = 8192  # rows; numpy sums a float64 array of up to 8192 values in one pairwise pass

# Transform modes this module computes; any other mode takes the per-column path.
BLOCK_MODES = ("standard", "scale", "center")

# The fields of a plan (and of its column plans) whose values this module honours.  A
# field not listed here (an option added later) must hold its default, or the plan takes
# the per-column path: a new option is never skipped silently.
_PLAN_FIELDS = frozenset({"columns", "mode", "dtype", "inf", "types"})
_PLAN_DEFAULTS = {"inverse": False, "groups": None}
# low/high (the exact min and max) serve only minmax, which is not a block mode.
_COLUMN_FIELDS = frozenset({"name", "mean", "std", "constant", "residual", "low", "high"})


def _blockable(t: pa.DataType) -> bool:
    """float32, float64 and integers of at most 32 bits: exact in float64, and Arrow
    converts them (not float16)."""
    return (pa.types.is_floating(t) and t.bit_width >= 32) or (
        pa.types.is_integer(t) and t.bit_width <= 32)


def _wide(t: pa.DataType) -> bool:
    """int64: in a transform, taken into the block where every value is within 2**52
    (exact in float64, and :func:`pipeline.kernel._deviation`'s plain subtraction)."""
    return pa.types.is_int64(t)


WIDE_LIMIT = 2.0**52  # the bound of kernel._deviation's plain float64 subtraction


def _block(table: pa.Table | pa.RecordBatch, index: Sequence[int]) -> np.ndarray:
    """Columns ``index`` of ``table`` as the rows of one C-ordered float64 block.

    One Arrow call (``to_tensor``, column-major: each column contiguous), nulls as
    NaN.  Arrow upcasts mixed types to a type that holds each exactly (int32 with
    float32 gives float64; int64 is rounded to the nearest float64, exact within
    2**53); numpy widens what is left to float64, exactly.  A table of one chunk per
    column is converted as its record batch: the same values, a quarter of the cost.
    """
    if isinstance(table, pa.Table):
        batches = table.to_batches()
        if len(batches) == 1:
            table = batches[0]
    x = np.asarray(table.select(index).to_tensor(null_to_nan=True, row_major=False)).T
    return x if x.dtype == np.float64 else x.astype(np.float64)


class BySchema:
    """Values worked out once per (schema, key), found by ``Schema.equals`` (a C++
    comparison): hashing a schema for ``lru_cache`` costs 14 µs, per batch."""

    def __init__(self, make: Callable[[pa.Schema, Any], Any], size: int = 16,
                 metadata: bool = False):
        self.make, self.size, self.metadata = make, size, metadata  # metadata: compared too
        self.entries: list[tuple[pa.Schema, Any, Any]] = []

    def get(self, schema: pa.Schema, key: Any) -> Any:
        for s, k, v in self.entries:
            if (k is key or k == key) and s.equals(schema, check_metadata=self.metadata):
                return v
        v = self.make(schema, key)
        self.entries = [(schema, key, v), *self.entries[:self.size - 1]]
        return v


# ------------------------------------------------------------------------- fit
def _float_columns(schema: pa.Schema, names: tuple[str, ...]) -> tuple[list[int], list[str]]:
    """Indices and names of the float32/float64 columns among ``names`` (integers keep
    :meth:`Moments.from_array`'s exact integer shift)."""
    index, chosen = [], []
    for name in names:
        i = schema.get_field_index(name)
        if i >= 0 and pa.types.is_floating(schema.field(i).type) and _blockable(
                schema.field(i).type):
            index.append(i)
            chosen.append(name)
    return index, chosen


_FLOAT_COLUMNS = BySchema(_float_columns)


def block_moments(batch: pa.Table | pa.RecordBatch, names: Sequence[str],
                  column: Callable[[Any], Moments]) -> dict[str, Moments]:
    """Moments of the columns ``names`` of a batch, each as ``column(array)`` would give.

    ``column`` is the per-column function (:func:`pipeline.moments.column_moments`),
    used for every column the block path leaves alone: those with nulls, NaN or
    infinities (their sum is not finite), integers, float16, and every column of
    a batch of more than :data:`BLOCK_ROWS` rows.
    """
    n = batch.num_rows
    out: dict[str, Moments] = {}
    if 0 < n <= BLOCK_ROWS:
        index, chosen = _FLOAT_COLUMNS.get(batch.schema, tuple(names))
        if len(index) > 1:
            out = _moments_of_block(chosen, _block(batch, index))
    return {name: out[name] if name in out else column(batch.column(name)) for name in names}


def _moments_of_block(names: list[str], x: np.ndarray) -> dict[str, Moments]:
    """:meth:`Moments.from_array` of each row of ``x`` whose sum is finite, step by step."""
    with np.errstate(invalid="ignore", over="ignore"):
        totals = x.sum(axis=1)
    ok = np.isfinite(totals)
    if not ok.all():  # NaN (or null), infinities: the per-column path counts them
        names = [n for n, good in zip(names, ok.tolist(), strict=True) if good]
        x, totals = x[ok], totals[ok]
    if not names:
        return {}
    n = x.shape[1]
    shift = totals / n
    d = x - shift[:, None]
    c = d.sum(axis=1)
    with np.errstate(over="ignore", under="ignore"):  # out of range: refused by the fit
        np.square(d, out=d)
    squares = d.sum(axis=1)
    lows, highs = x.min(axis=1).tolist(), x.max(axis=1).tolist()
    out = {}
    for r, (s, ci, sq) in enumerate(zip(shift.tolist(), c.tolist(), squares.tolist(),
                                        strict=True)):
        out[names[r]] = Moments(count=n, shift=s, offset=ci / n, m2=max(sq - ci * ci / n, 0.0),
                                minimum=lows[r], maximum=highs[r])
    return out


# ------------------------------------------------------------------- transform
def plain(plan: Any) -> bool:
    """Whether every option of ``plan`` is one the block path computes (see the module doc)."""
    if plan.mode not in BLOCK_MODES:
        return False
    for f in dataclasses.fields(plan):
        if f.name in _PLAN_FIELDS:
            continue
        default = _PLAN_DEFAULTS.get(f.name, _default(f))
        if default is _UNKNOWN or getattr(plan, f.name) != default:
            return False
    for f in dataclasses.fields(plan.columns[0]) if plan.columns else ():
        if f.name not in _COLUMN_FIELDS and (_default(f) is _UNKNOWN or any(
                getattr(c, f.name) != _default(f) for c in plan.columns)):
            return False
    return True


_UNKNOWN = object()


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _UNKNOWN


@dataclasses.dataclass(frozen=True, eq=False)
class _Layout:
    """What a block transform of one schema under one plan needs, worked out once.

    For the features the block path can take (by type): their column indices,
    plans and output types, the plans' numbers as columns of the block, and which
    rows are int64 (:func:`_wide`: each batch checks their values are within
    :data:`WIDE_LIMIT`).
    """

    index: list[int]
    cols: list[Any]
    types: list[pa.DataType]
    mean: np.ndarray
    std: np.ndarray
    residual: np.ndarray
    constant: np.ndarray
    wide: np.ndarray


def _layout(schema: pa.Schema, plan: Any) -> _Layout | None:
    if not plain(plan):
        return None
    index, cols, types, wide = [], [], [], []
    for col in plan.columns:
        i = schema.get_field_index(col.name)
        t = schema.field(i).type if i >= 0 else None
        # int64 where kernel._deviation subtracts in plain float64: the rounded mean
        # within 2**52 too (scale divides, as the block does, whatever the mean).
        if t is not None and (_blockable(t) or (_wide(t) and (
                plan.mode == "scale" or float(np.abs(np.round(col.mean)).max()) <= WIDE_LIMIT))):
            index.append(i)
            cols.append(col)
            types.append(plan.out_type(col.name, t))
            wide.append(_wide(t))
    const = np.array([bool(c.constant[-1]) for c in cols], dtype=bool)
    std = np.array([c.std[-1] for c in cols], dtype=np.float64)
    std[const] = 1.0  # a constant's row is replaced after; no division by zero
    return _Layout(index, cols, types, np.array([c.mean[-1] for c in cols])[:, None],
                   std[:, None], np.array([c.residual[-1] for c in cols])[:, None], const,
                   np.array(wide, dtype=bool))


_LAYOUTS = BySchema(_layout)


def block_transform(table: pa.Table | pa.RecordBatch, plan: Any,
                    observe: Callable[[str, np.ndarray, None], None] | None = None,
                    columns: Sequence[Any] | None = None) -> dict[str, pa.Array]:
    """The transformed arrays of the features of ``table`` the block path can take.

    Returns ``{name: array}`` for those features, bit for bit what
    :func:`pipeline.plan.transform_array` gives; the caller transforms the others
    (and all of them when this returns ``{}``: a plan or batch the block path
    leaves alone, or a batch with an infinity or an overflow somewhere, whose
    handling and errors are the per-column path's).  ``observe`` as for
    :func:`~pipeline.plan.transform_array`, called for the columns returned.
    ``columns``: ``table.columns`` when the caller has them already.
    """
    n = table.num_rows
    layout = _LAYOUTS.get(table.schema, plan) if 0 < n <= BLOCK_ROWS else None
    if layout is None or len(layout.index) < 2:
        return {}
    x = _block(table, layout.index)
    if layout.wide.any():
        layout, x = _within_limit(layout, x)
        if len(layout.index) < 2:
            return {}
    z = _scale_block(x, layout, plan.mode)
    values = None if z is None else _cast_rows(z, layout.types)
    if values is None:
        return {}
    out = {}
    for col, i, t, v in zip(layout.cols, layout.index, layout.types, values, strict=True):
        if observe is not None:
            observe(col.name, v, None)
        column = columns[i] if columns is not None else table.column(i)
        missing = column.null_count
        # Nulls stay null (the input's validity), NaN under them as in transform_array.
        validity = _validity(column) if missing else None
        out[col.name] = pa.Array.from_buffers(t, n, [validity, pa.py_buffer(v)],
                                              null_count=missing)
    return out


def _within_limit(layout: _Layout, x: np.ndarray) -> tuple[_Layout, np.ndarray]:
    """``layout`` and ``x`` without the int64 rows holding a value beyond
    :data:`WIDE_LIMIT` (NaN, a null, is within): those take the per-column path."""
    with np.errstate(invalid="ignore"):
        beyond = layout.wide & (np.abs(x) > WIDE_LIMIT).any(axis=1)
    if not beyond.any():
        return layout, x
    keep = ~beyond
    rows = np.flatnonzero(keep).tolist()
    return dataclasses.replace(
        layout, index=[layout.index[r] for r in rows], cols=[layout.cols[r] for r in rows],
        types=[layout.types[r] for r in rows], mean=layout.mean[keep], std=layout.std[keep],
        residual=layout.residual[keep], constant=layout.constant[keep],
        wide=layout.wide[keep]), x[keep]


def _validity(col: Any) -> Any:
    return one_array(col).is_valid().buffers()[1]


def _scale_block(x: np.ndarray, layout: _Layout, mode: str) -> np.ndarray | None:
    """:func:`pipeline.kernel.scale_array` of each row of ``x`` (global plans); None on inf."""
    if np.isinf(x).any():  # the inf policy is the per-column path's
        return None
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if mode == "scale":
            z = x / layout.std
        else:
            z = x - layout.mean
            if layout.residual.any():  # subtracting 0.0 leaves the other rows as they are
                z -= layout.residual
            if mode == "standard":
                z /= layout.std
    const = layout.constant
    if const.any():
        if mode == "scale":
            z[const] = x[const]
        else:
            z[const] = np.where(np.isnan(x[const]), np.nan, 0.0)
    return z


def _cast_rows(z: np.ndarray, types: Sequence[pa.DataType]) -> list[np.ndarray] | None:
    """Each row of ``z`` in its output type; None if any value is infinite (an overflow)."""
    rows: list[np.ndarray] = list(z)
    wide = [r for r, t in enumerate(types) if t == pa.float64()]
    if wide and np.isinf(z[wide] if len(wide) < len(types) else z).any():
        return None
    for t in {t for t in types if t != pa.float64()}:
        idx = [r for r, u in enumerate(types) if u == t]
        with np.errstate(over="ignore"):
            narrow = z[idx].astype(t.to_pandas_dtype())
        if np.isinf(narrow).any():
            return None
        for k, r in enumerate(idx):
            rows[r] = narrow[k]
    return rows
