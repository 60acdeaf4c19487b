"""Applying fitted statistics: one numpy kernel, three front ends.

* :func:`scale_array` -- the kernel, on a float64 numpy array.
* :func:`transform_table` -- Arrow tables / record batches (the writer's path).
* :func:`pipeline.frames.apply` -- pandas DataFrames, no Dask (serving, notebooks).
* :func:`pipeline.frames.transform` / :func:`~pipeline.frames.inverse_transform` --
  lazy Dask DataFrames (``map_partitions`` of ``apply``; nothing is computed until
  you ask).

Modes: ``standard`` is (x - mean) / std, ``scale`` is x / std, ``center`` is
x - mean.  A constant feature (min == max) becomes exactly 0.0 under
``standard`` and ``center`` and is left unchanged under ``scale``.  Missing
values (null or NaN) stay missing.  Infinite values follow the artifact's
``inf`` policy: ``error`` raises naming the column, ``null`` makes them missing.

All arithmetic is float64; the result is cast at the end (``dtype``):
``preserve`` keeps float32 as float32 and turns everything else into float64.

This module neither reads nor writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .artifact import FittedStats
from .columns import null_mask, numpy_view
from .errors import ArtifactError, DataError, InputError
from .groups import GroupPlan

MODES = ("standard", "scale", "center")
DTYPES = ("preserve", "float32", "float64")


@dataclass(frozen=True)
class ColumnPlan:
    """Everything the kernel needs for one column: plain numbers, cheap to ship to workers."""

    name: str
    mean: float
    std: float
    constant: bool
    mean_residual: float = 0.0  # see FeatureStats.mean_residual


@dataclass(frozen=True)
class Plan:
    """What to do to a table: per-feature constants, the mode and the output dtype."""

    columns: tuple[ColumnPlan, ...]
    mode: str = "standard"
    dtype: str = "preserve"
    inf: str = "error"
    inverse: bool = False
    groups: GroupPlan | None = None

    @classmethod
    def build(cls, stats: FittedStats, *, mode: str = "standard", dtype: str = "preserve",
              features: Sequence[str] | None = None, inverse: bool = False,
              unseen: str = "global") -> Plan:
        """Check the options and pick the columns (default: every feature in ``stats``).

        With per-key statistics in ``stats``, each row uses its key's numbers;
        ``unseen`` says what a key not seen at fit time gets (see
        :mod:`pipeline.groups`).
        """
        check_transform_options(mode, dtype)
        names = list(stats.features) if features is None else list(features)
        for name in names:
            if name not in stats.features:
                raise ArtifactError(f"column '{name}' is not in the statistics (they hold "
                                    f"{_few(list(stats.features))}); refit including it",
                                    column=name)
        feats = stats.features
        cols = tuple(ColumnPlan(n, feats[n].mean, feats[n].std, feats[n].constant,
                                feats[n].kernel_residual) for n in names)
        groups = GroupPlan.build(stats.groups, cols, unseen) if stats.groups else None
        return cls(columns=cols, mode=mode, dtype=dtype, inf=stats.inf, inverse=inverse,
                   groups=groups)

    def out_type(self, t: pa.DataType) -> pa.DataType:
        """Arrow type of a feature column after the transform."""
        if self.dtype == "float32" or (self.dtype == "preserve" and pa.types.is_floating(t)
                                       and t.bit_width <= 32):
            return pa.float32()
        return pa.float64()


def check_transform_options(mode: str, dtype: str) -> None:
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")


def _few(names: list[str], k: int = 10) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


# ------------------------------------------------------------------- kernel
def scale_array(x: np.ndarray, col: ColumnPlan, mode: str, inverse: bool = False) -> np.ndarray:
    """The transform of one column, in float64; NaN in, NaN out.

    ``x`` must be a float64 array the caller owns: it is modified in place and
    returned.
    """
    mean, std = col.mean, col.std
    if col.constant:
        if mode == "scale":
            return x
        if inverse:
            x[~np.isnan(x)] = mean
            return x
        x[~np.isnan(x)] = 0.0
        return x
    lo = col.mean_residual
    if not inverse:
        if mode != "scale":
            x -= mean
            if lo:
                x -= lo
        if mode != "center":
            x /= std
    else:
        if mode != "center":
            x *= std
        if mode != "scale":
            if lo:
                x += lo
            x += mean
    return x


def _check_inf(x: np.ndarray, col: ColumnPlan, policy: str, where: str | None) -> None:
    inf = np.isinf(x)
    if inf.any():
        if policy == "null":
            x[inf] = np.nan
            return
        place = f" in {where}" if where else ""
        raise DataError(f"column '{col.name}' has {int(inf.sum())} infinite value(s){place}; "
                        "fix the data or use statistics fitted with --inf null",
                        column=col.name, path=where)


# -------------------------------------------------------------------- arrow
Observer = Callable[[str, np.ndarray, "np.ndarray | None"], None]


def transform_array(arr: pa.Array | pa.ChunkedArray, col: ColumnPlan, plan: Plan,
                    where: str | None = None, observe: Observer | None = None,
                    rows: np.ndarray | None = None) -> pa.Array:
    """Transform one Arrow column; nulls stay null, NaN stays NaN.

    ``observe(name, raw, out)``, if given, sees the column's raw values as float64
    (NaN for missing) and must not modify them; ``out`` is the transformed values
    for per-key plans and ``None`` otherwise (the raw values then say it all:
    the transform is one affine map).  ``rows`` are the rows' key indices for a
    per-key plan (see :meth:`GroupPlan.rows`).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise DataError(f"column '{col.name}' is {t}, not numeric" +
                        (f" in {where}" if where else ""), column=col.name, path=where)
    # A zero-copy view (see numpy_view), one float64 copy, then NaN where null.
    values = pc.cast(arr, pa.float64(), safe=False) if arr.null_count else arr
    x = numpy_view(values).astype(np.float64, copy=True)
    if arr.null_count:
        x[null_mask(arr)] = np.nan
    if pa.types.is_floating(t) and (plan.inf == "null" or not plan.inverse):
        _check_inf(x, col, plan.inf, where)
    if plan.groups is not None and rows is not None:
        out = plan.groups.scale(x, col.name, rows, plan.mode, plan.inverse)
        if observe is not None:
            observe(col.name, x, out)
    else:
        if observe is not None:
            observe(col.name, x, None)
        out = scale_array(x, col, plan.mode, plan.inverse)
    out_type = plan.out_type(t)
    out = np.ascontiguousarray(out, dtype=np.float32 if out_type == pa.float32() else np.float64)
    # From buffers, with the input's validity bitmap: nulls stay null, NaN stays NaN, and
    # no pa.array(numpy) call (which imports pandas just to ask if this is a Series).
    validity = arr.is_valid().buffers()[1] if arr.null_count else None
    return pa.Array.from_buffers(out_type, len(out), [validity, pa.py_buffer(out)],
                                 null_count=arr.null_count)


def output_schema(schema: pa.Schema, plan: Plan) -> pa.Schema:
    """``schema`` with each feature's type replaced by its output type (order kept)."""
    fields = {c.name for c in plan.columns}
    new = pa.schema([f.with_type(plan.out_type(f.type)) if f.name in fields else f
                     for f in schema], metadata=schema.metadata)
    return _fix_pandas_metadata(new, fields)


def transform_table(table: pa.Table | pa.RecordBatch, plan: Plan, where: str | None = None,
                    observe: Observer | None = None) -> pa.Table:
    """Transform the feature columns of an Arrow table; other columns pass through untouched.

    ``where`` names the source in errors; ``observe`` is as for :func:`transform_array`.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    arrays = list(table.columns)
    index = {name: i for i, name in enumerate(table.column_names)}
    rows = plan.groups.rows(table, where) if plan.groups is not None else None
    for col in plan.columns:
        if col.name not in index:
            raise DataError(f"column '{col.name}' is missing" + (f" from {where}" if where
                            else ""), column=col.name, path=where)
        i = index[col.name]
        arrays[i] = transform_array(table.column(i), col, plan, where, observe, rows)
    return pa.Table.from_arrays(arrays, schema=output_schema(table.schema, plan))


def _fix_pandas_metadata(schema: pa.Schema, names: set[str]) -> pa.Schema:
    """Keep pandas' schema metadata truthful about the new float types."""
    meta = schema.metadata or {}
    raw = meta.get(b"pandas")
    if not raw:
        return schema
    import json

    try:
        pandas_meta = json.loads(raw)
        for c in pandas_meta.get("columns", []):
            if c.get("name") in names:
                t = schema.field(c["name"]).type
                c["pandas_type"] = c["numpy_type"] = "float32" if t == pa.float32() else "float64"
    except (ValueError, KeyError, TypeError, AttributeError):
        return schema
    return schema.with_metadata({**meta, b"pandas": json.dumps(pandas_meta).encode()})
