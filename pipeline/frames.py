"""The DataFrame front ends of the kernel: pandas (:func:`apply`) and lazy Dask.

Kept apart from :mod:`pipeline.plan` so that the command line, which works
on Arrow tables only, never pays for importing pandas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from .artifact import FittedStats
from .columns import null_mask
from .errors import DataError, option
from .plan import ColumnPlan, Plan, _few, transform_array, transform_values

if TYPE_CHECKING:
    import dask.dataframe as dd


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
        Undo the transform instead (z * std + mean for ``standard``).  Integer
        features come back as float64 (the nearest float64 to the original).
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
            raise DataError(f"{option('group_by')} column '{missing[0]}' is not in the DataFrame",
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
    """One column through the Arrow path, so integers of every width reach the exact kernel."""
    dtype = s.dtype
    if isinstance(dtype, pd.ArrowDtype):
        return pd.Series(pd.arrays.ArrowExtensionArray(
            transform_array(pa.array(s.array), col, plan, rows=rows)), index=s.index,
            name=s.name)
    if not (pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype)) \
            or pd.api.types.is_bool_dtype(dtype):
        raise DataError(f"column '{col.name}' is {dtype}, not numeric", column=col.name)
    if isinstance(s.array, pd.arrays.IntegerArray | pd.arrays.FloatingArray):
        arr = pa.array(s.array)  # nullable Int64, UInt64, Float32...: nulls stay nulls
        values, _ = transform_values(arr, col, plan, rows=rows)
        mask = null_mask(arr)
        if values.dtype == np.float16:  # pandas has no nullable float16
            values = values.astype(np.float32)
        return pd.Series(pd.arrays.FloatingArray(values, mask), index=s.index, name=s.name)
    values, _ = transform_values(pa.array(s.to_numpy()), col, plan, rows=rows)
    return pd.Series(values, index=s.index, name=s.name)


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
