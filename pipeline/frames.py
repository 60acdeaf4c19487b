"""The DataFrame front ends of the kernel: pandas (:func:`apply`) and lazy Dask.

Kept apart from :mod:`pipeline.plan` so that the command line, which works
on Arrow tables only, never pays for importing pandas.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from .artifact import FittedStats
from .columns import null_mask
from .errors import DataError, option
from .finish import (
    FinishOptions,
    LossyInverseWarning,
    check_indicator_names,
    clip_warning,
    indicator,
)
from .plan import ColumnPlan, Plan, _few, transform_arrays, transform_column

if TYPE_CHECKING:
    import dask.dataframe as dd


def apply(df: pd.DataFrame, stats: FittedStats, *, mode: str = "standard",
          dtype: str = "preserve", features: Sequence[str] | None = None,
          inverse: bool = False, unseen: str = "global", fill_missing: float | None = None,
          missing_indicator: bool = False, clip: float | None = None) -> pd.DataFrame:
    """Normalize a pandas DataFrame with fitted statistics; pure pandas and numpy.

    Parameters
    ----------
    df : pandas.DataFrame
        Must hold every selected feature; other columns pass through.  Not modified.
    stats : FittedStats
        The fitted statistics (``FittedStats.load("stats.json")``).
    mode : {"standard", "scale", "center", "minmax"}
    dtype : {"preserve", "float32", "float64"}
    features : list of str, optional
        A subset of ``stats``' features; default all of them.
    inverse : bool
        Undo the transform instead (z * std + mean for ``standard``).  Integer
        features come back as float64 (the nearest float64 to the original).
        ``minmax`` has no inverse.  With ``fill_missing`` or ``clip`` (what the
        forward transform did), a :class:`~pipeline.finish.LossyInverseWarning`
        says those values do not come back; with ``missing_indicator``, the
        indicator columns of ``df`` make filled values missing again and are dropped.
    unseen : {"global", "null", "error"}
        For per-key statistics: what a key not seen at fit time gets.
    fill_missing : float, optional
        Missing values (null, NaN) become this after scaling, in output units.
    missing_indicator : bool
        Add a boolean ``<feature>__missing`` column after each feature.
    clip : float, optional
        Clamp scaled values to ``[-clip, clip]``.  See :mod:`pipeline.finish` for
        the order of these steps.

    Returns
    -------
    pandas.DataFrame
        A new frame, same columns in the same order (plus the indicator columns).

    Examples
    --------
    >>> out = apply(batch, FittedStats.load("stats.json"))   # doctest: +SKIP
    """
    finish = FinishOptions(fill_missing, missing_indicator, clip)
    plan = Plan.build(stats, mode=mode, dtype=dtype, features=features, inverse=inverse,
                      unseen=unseen, finish=finish)
    _warn_lossy(plan, "pipeline.apply(inverse=True)")
    return _apply_plan(df, plan)


def _warn_lossy(plan: Plan, what: str) -> None:
    if plan.inverse and plan.finish.lossy:
        warnings.warn(clip_warning(what, plan.finish), LossyInverseWarning, stacklevel=3)


def _apply_plan(df: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    if plan.inverse and plan.finish.missing_indicator:
        return _unmark(_scale_frame(df.drop(columns=_marks(df, plan)), plan), df, plan)
    return _scale_frame(df, plan)


def _scale_frame(df: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    check_indicator_names([str(c) for c in df.columns], [c.name for c in plan.columns],
                          plan.finishing)
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
        out[col.name], filled = _apply_series(df[col.name], col, plan, rows)
        if plan.finishing.missing_indicator:
            out.insert(out.columns.get_loc(col.name) + 1, indicator(col.name),
                       pd.Series(filled, index=df.index, dtype=bool))
    return out


def _marks(df: pd.DataFrame, plan: Plan) -> list[str]:
    return [indicator(c.name) for c in plan.columns if indicator(c.name) in df.columns]


def _unmark(out: pd.DataFrame, df: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """An inverse's result with the values its indicator columns mark made missing again."""
    for c in plan.columns:
        name = indicator(c.name)
        if name in df.columns:
            marked = df[name].to_numpy(dtype=bool, na_value=False)
            out[c.name] = out[c.name].mask(marked)
    return out


def _apply_series(s: pd.Series, col: ColumnPlan, plan: Plan, rows: np.ndarray | None = None
                  ) -> tuple[pd.Series, np.ndarray | None]:
    """One column through the Arrow path, so integers of every width reach the exact kernel.

    Also returns where missing values were filled (None when nothing is filled).
    """
    dtype = s.dtype
    if isinstance(dtype, pd.ArrowDtype):
        arrays = transform_arrays(pa.array(s.array), col, plan, rows=rows)
        marks = arrays[1].to_numpy(zero_copy_only=False) if len(arrays) > 1 else None
        return pd.Series(pd.arrays.ArrowExtensionArray(arrays[0]), index=s.index,
                         name=s.name), marks
    if not (pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype)) \
            or pd.api.types.is_bool_dtype(dtype):
        raise DataError(f"column '{col.name}' is {dtype}, not numeric", column=col.name)
    if isinstance(s.array, pd.arrays.IntegerArray | pd.arrays.FloatingArray):
        arr = pa.array(s.array)  # nullable Int64, UInt64, Float32...: nulls stay nulls
        t = transform_column(arr, col, plan, rows=rows)
        values, mask = t.values, null_mask(arr) if t.filled is None else None
        if values.dtype == np.float16:  # pandas has no nullable float16
            values = values.astype(np.float32)
        if mask is None:
            mask = np.zeros(len(values), dtype=bool)
        return pd.Series(pd.arrays.FloatingArray(values, mask), index=s.index, name=s.name), \
            t.filled
    t = transform_column(pa.array(s.to_numpy()), col, plan, rows=rows)
    return pd.Series(t.values, index=s.index, name=s.name), t.filled


# --------------------------------------------------------------------- dask
def transform(ddf: dd.DataFrame, stats: FittedStats, *, mode: str = "standard",
              dtype: str = "preserve", features: Sequence[str] | None = None,
              fill_missing: float | None = None, missing_indicator: bool = False,
              clip: float | None = None) -> dd.DataFrame:
    """Lazily normalize a Dask DataFrame: a ``map_partitions`` of :func:`apply`.

    Builds the graph and computes nothing; the fitted numbers travel as plain
    constants.  Write the result with ``to_parquet`` or use :func:`pipeline.run`
    for a crash-safe, layout-preserving write.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
    stats : FittedStats
    mode, dtype, features, fill_missing, missing_indicator, clip
        As for :func:`apply`; the meta includes the indicator columns.

    Returns
    -------
    dask.dataframe.DataFrame

    Examples
    --------
    >>> import dask.dataframe as dd                                  # doctest: +SKIP
    >>> z = transform(dd.read_parquet("train/"), stats)             # doctest: +SKIP
    """
    finish = FinishOptions(fill_missing, missing_indicator, clip)
    return _lazy(ddf, Plan.build(stats, mode=mode, dtype=dtype, features=features,
                                 finish=finish))


def inverse_transform(ddf: dd.DataFrame, stats: FittedStats, *, mode: str = "standard",
                      dtype: str = "preserve", features: Sequence[str] | None = None,
                      fill_missing: float | None = None, missing_indicator: bool = False,
                      clip: float | None = None) -> dd.DataFrame:
    """Lazily undo :func:`transform` (z * std + mean for ``standard``).

    Lossy where the transform clipped or filled: pass the same ``fill_missing``,
    ``missing_indicator`` and ``clip`` and a :class:`~pipeline.finish.LossyInverseWarning`
    says so (as :func:`apply` with ``inverse=True``); indicator columns make their
    values missing again and are dropped.  ``minmax`` has no inverse.
    """
    plan = Plan.build(stats, mode=mode, dtype=dtype, features=features, inverse=True,
                      finish=FinishOptions(fill_missing, missing_indicator, clip))
    _warn_lossy(plan, "pipeline.inverse_transform")
    return _lazy(ddf, plan)


def _lazy(ddf: dd.DataFrame, plan: Plan) -> dd.DataFrame:
    meta = _apply_plan(ddf._meta, plan)
    return ddf.map_partitions(_apply_plan, plan, meta=meta)
