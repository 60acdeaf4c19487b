"""Applying fitted statistics: one numpy kernel, three front ends.

* :func:`scale_array` -- the kernel, on a float64 numpy array.
* :func:`transform_table` -- Arrow tables / record batches (the writer's path).
* :func:`apply` -- pandas DataFrames, no Dask (serving, notebooks).
* :func:`transform` / :func:`inverse_transform` -- lazy Dask DataFrames
  (``map_partitions`` of :func:`apply`; nothing is computed until you ask).

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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .artifact import FittedStats
from .errors import ArtifactError, DataError, InputError
from .groups import GroupPlan

if TYPE_CHECKING:
    import dask.dataframe as dd

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
    mask = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_integer(t):
        filled = arr.fill_null(0) if mask is not None else arr
        x = filled.to_numpy().astype(np.float64)
        if mask is not None and observe is not None:
            x[mask] = np.nan
    elif pa.types.is_floating(t):
        x = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
        if plan.inf == "null" or not plan.inverse:
            _check_inf(x, col, plan.inf, where)
    else:
        raise DataError(f"column '{col.name}' is {t}, not numeric" +
                        (f" in {where}" if where else ""), column=col.name, path=where)
    if plan.groups is not None and rows is not None:
        out = plan.groups.scale(x, col.name, rows, plan.mode, plan.inverse)
        if observe is not None:
            observe(col.name, x, out)
    else:
        if observe is not None:
            observe(col.name, x, None)
        out = scale_array(x, col, plan.mode, plan.inverse)
    out_type = plan.out_type(t)
    if out_type == pa.float32():
        out = out.astype(np.float32)
    return pa.array(out, type=out_type, mask=mask)


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
                c["pandas_type"] = c["numpy_type"] = str(t.to_pandas_dtype().__name__)
    except (ValueError, KeyError, TypeError, AttributeError):
        return schema
    return schema.with_metadata({**meta, b"pandas": json.dumps(pandas_meta).encode()})


# ------------------------------------------------------------------- pandas
def apply(df: pd.DataFrame, stats: FittedStats, *, mode: str = "standard",
          dtype: str = "preserve", features: Sequence[str] | None = None,
          inverse: bool = False, unseen: str = "global") -> pd.DataFrame:
    """Normalize a pandas DataFrame with fitted statistics; pure pandas and numpy.

    Parameters
    ----------
    df : pandas.DataFrame
        Must hold every selected feature; other columns pass through.  Not modified.
    stats : FittedStats
        The fitted statistics (``FittedStats.load("stats.json")``).
    mode : {"standard", "scale", "center"}
    dtype : {"preserve", "float32", "float64"}
    features : list of str, optional
        A subset of ``stats``' features; default all of them.
    inverse : bool
        Undo the transform instead (z * std + mean for ``standard``).
    unseen : {"global", "null", "error"}
        For per-key statistics: what a key not seen at fit time gets.

    Returns
    -------
    pandas.DataFrame
        A new frame, same columns in the same order.

    Examples
    --------
    >>> out = apply(batch, FittedStats.load("stats.json"))   # doctest: +SKIP
    """
    return _apply_plan(df, Plan.build(stats, mode=mode, dtype=dtype, features=features,
                                      inverse=inverse, unseen=unseen))


def _apply_plan(df: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    out = df.copy(deep=False)
    rows = None
    if plan.groups is not None:
        missing = [b for b in plan.groups.by if b not in df.columns]
        if missing:
            raise DataError(f"--group-by column '{missing[0]}' is not in the DataFrame",
                            column=missing[0])
        keys = pa.Table.from_pandas(df[list(plan.groups.by)], preserve_index=False)
        rows = plan.groups.rows(keys)
    for col in plan.columns:
        if col.name not in df.columns:
            raise DataError(f"column '{col.name}' is not in the DataFrame (it has "
                            f"{_few([str(c) for c in df.columns])})", column=col.name)
        out[col.name] = _apply_series(df[col.name], col, plan, rows)
    return out


def _apply_series(s: pd.Series, col: ColumnPlan, plan: Plan, rows: np.ndarray | None = None
                  ) -> pd.Series:
    dtype = s.dtype
    if isinstance(dtype, pd.ArrowDtype):
        arr = pa.array(s.array)
        return pd.Series(pd.arrays.ArrowExtensionArray(
            transform_array(arr, col, plan, rows=rows)), index=s.index, name=s.name)
    if not (pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype)) \
            or pd.api.types.is_bool_dtype(dtype):
        raise DataError(f"column '{col.name}' is {dtype}, not numeric", column=col.name)
    masked = isinstance(s.array, pd.arrays.IntegerArray | pd.arrays.FloatingArray)
    mask = s.isna().to_numpy() if masked else None
    x = s.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    if pd.api.types.is_float_dtype(dtype) and (plan.inf == "null" or not plan.inverse):
        _check_inf(x, col, plan.inf, None)
    if plan.groups is not None and rows is not None:
        out = plan.groups.scale(x, col.name, rows, plan.mode, plan.inverse)
    else:
        out = scale_array(x, col, plan.mode, plan.inverse)
    np_type = plan.out_type(pa.from_numpy_dtype(_numpy_dtype(dtype))).to_pandas_dtype()
    out = out.astype(np_type, copy=False)
    if masked:
        arr = pd.arrays.FloatingArray(out, mask)
        return pd.Series(arr, index=s.index, name=s.name)
    return pd.Series(out, index=s.index, name=s.name)


def _numpy_dtype(dtype: Any) -> np.dtype:
    return dtype.numpy_dtype if hasattr(dtype, "numpy_dtype") else np.dtype(dtype)


# --------------------------------------------------------------------- dask
def transform(ddf: dd.DataFrame, stats: FittedStats, *, mode: str = "standard",
              dtype: str = "preserve", features: Sequence[str] | None = None) -> dd.DataFrame:
    """Lazily normalize a Dask DataFrame: a ``map_partitions`` of :func:`apply`.

    Builds the graph and computes nothing; the fitted numbers travel as plain
    constants.  Write the result with ``to_parquet`` or use :func:`pipeline.run`
    for a crash-safe, layout-preserving write.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
    stats : FittedStats
    mode, dtype, features
        As for :func:`apply`.

    Returns
    -------
    dask.dataframe.DataFrame

    Examples
    --------
    >>> import dask.dataframe as dd                                  # doctest: +SKIP
    >>> z = transform(dd.read_parquet("train/"), stats)             # doctest: +SKIP
    """
    return _lazy(ddf, Plan.build(stats, mode=mode, dtype=dtype, features=features))


def inverse_transform(ddf: dd.DataFrame, stats: FittedStats, *, mode: str = "standard",
                      dtype: str = "preserve", features: Sequence[str] | None = None
                      ) -> dd.DataFrame:
    """Lazily undo :func:`transform` (z * std + mean for ``standard``)."""
    return _lazy(ddf, Plan.build(stats, mode=mode, dtype=dtype, features=features,
                                 inverse=True))


def _lazy(ddf: dd.DataFrame, plan: Plan) -> dd.DataFrame:
    meta = _apply_plan(ddf._meta, plan)
    return ddf.map_partitions(_apply_plan, plan, meta=meta)
