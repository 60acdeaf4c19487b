"""What :class:`pipeline.StandardScaler` reads: in-memory columns, or statistics fitted by Dask.

In memory (numpy arrays, pandas DataFrames), each column is taken in its own
dtype, so int64 keeps the exact integer arithmetic of :mod:`pipeline.stats` and
:mod:`pipeline.kernel`; missing values (NaN, pandas' NA) are a mask beside it.
Dask DataFrames and Arrays and Parquet datasets are fitted by :func:`pipeline.fit`
(on the current Dask client) and arrive as :class:`~pipeline.artifact.FittedStats`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError, option
from .feature_stats import FeatureStats


class ScalerDataError(DataError, ValueError):
    """Bad input to :class:`pipeline.StandardScaler`.

    A :class:`pipeline.DataError` for zscore's callers and a ``ValueError`` for
    scikit-learn's (the convention its estimators follow).
    """


LAZY_KINDS = ("parquet", "dask-frame", "dask-array")
# Kept as they are by the input check; anything else (object, bool) becomes float64.
KEPT_DTYPES = (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
               np.uint64, np.uint32, np.uint16, np.uint8)


@dataclass(frozen=True)
class Column:
    """One feature's values in their own numeric dtype; ``missing`` True where NA/NaN."""

    name: str
    values: np.ndarray
    missing: np.ndarray | None

    @property
    def dtype_name(self) -> str:
        return self.values.dtype.name


def kind_of(X: Any) -> str:
    """``parquet``, ``dask-frame``, ``dask-array``, ``pandas`` or ``array``."""
    if isinstance(X, str | os.PathLike):
        return "parquet"
    module = type(X).__module__
    if module.startswith("dask.") or module.startswith("dask_expr"):
        return "dask-array" if hasattr(X, "chunks") else "dask-frame"
    import pandas as pd

    return "pandas" if isinstance(X, pd.DataFrame) else "array"


def array_columns(X: np.ndarray, names: list[str]) -> list[Column]:
    """The columns of a validated 2-d array (views, not copies)."""
    out = []
    for j, name in enumerate(names):
        values = X[:, j]
        nan = np.isnan(values) if values.dtype.kind == "f" else None
        out.append(Column(name, values, nan if nan is not None and nan.any() else None))
    return out


def frame_columns(df: Any, names: list[str]) -> list[Column]:
    """The columns of a pandas DataFrame, each in its own dtype (nullable ones unmasked)."""
    import pandas as pd

    out = []
    for j, name in enumerate(names):
        s = df.iloc[:, j]
        dtype = s.dtype
        numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        na = s.isna().to_numpy()
        if numeric and pd.api.types.is_integer_dtype(dtype):
            np_dtype = getattr(dtype, "numpy_dtype", dtype)
            values = s.to_numpy(dtype=np_dtype, na_value=0) if na.any() else \
                s.to_numpy(dtype=np_dtype)
        elif numeric and getattr(dtype, "numpy_dtype", dtype).kind == "f":
            values = s.to_numpy(dtype=getattr(dtype, "numpy_dtype", dtype), na_value=np.nan)
        else:
            try:
                values = s.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                raise ScalerDataError(f"column '{name}' is {dtype}, not numeric; select the "
                                      "numeric columns (for example with a ColumnTransformer)",
                                      column=name) from None
        out.append(Column(name, values, na if na.any() else None))
    return out


def dask_frame(X: Any, names: list[str] | None = None) -> Any:
    """A Dask DataFrame of ``X`` (a Dask Array gets the columns x0, x1, ...)."""
    import dask.dataframe as dd

    if hasattr(X, "chunks"):
        if X.ndim != 2:
            raise ScalerDataError(f"expected a 2-d Dask Array, got {X.ndim} dimension(s); "
                                  "reshape it with X.reshape(-1, 1) for one feature")
        cols = names or [f"x{i}" for i in range(X.shape[1])]
        return dd.from_dask_array(X.rechunk({1: -1}), columns=cols)
    if getattr(X, "ndim", 2) != 2:
        raise ScalerDataError("expected 2-d input, got a Dask Series; use series.to_frame()")
    return X


def fit_dask(X: Any, *, ddof: int, inf: str) -> tuple[list[str], Any]:
    """Statistics of every column of a Dask DataFrame/Array or a Parquet dataset.

    Through :func:`pipeline.fit`: distributed on the current Dask client (or an
    embedded local cluster when there is none), one exact pass, files or
    partitions merged in a fixed order.
    """
    from .errors import InputError
    from .fitting import fit

    source = X if isinstance(X, str | os.PathLike) else dask_frame(X)
    try:
        if isinstance(source, str | os.PathLike):
            stats = fit(source, ddof=ddof, inf=inf)
        else:
            stats = fit(source, features=[str(c) for c in source.columns], ddof=ddof, inf=inf)
    except InputError as exc:
        raise ScalerDataError(exc.message, path=exc.path, column=exc.column) from None
    return list(stats.features), stats


def lazy_transform(est: Any, X: Any, kind: str, inverse: bool) -> Any:
    """A lazy Dask transform of ``est``: each partition (block) through its ``_scale``."""
    names = est._names()
    if kind == "parquet":
        import dask.dataframe as dd

        X, kind = dd.read_parquet(X, columns=names), "dask-frame"
    if kind == "dask-array":
        if X.ndim != 2 or X.shape[1] != est.n_features_in_:
            raise ScalerDataError(f"X has shape {X.shape}, but StandardScaler is expecting "
                                  f"{est.n_features_in_} features as input")
        X = X.rechunk({1: -1})
        meta = est._scale(array_columns(X._meta.reshape(0, X.shape[1]), names), inverse)
        return X.map_blocks(lambda b: est._scale(array_columns(b, names), inverse),
                            dtype=meta.dtype, chunks=(X.chunks[0], (meta.shape[1],)))
    X = dask_frame(X)
    missing = [n for n in names if n not in X.columns]
    if missing:
        raise ScalerDataError(f"column '{missing[0]}' is not in the Dask DataFrame (it "
                              f"has {few([str(c) for c in X.columns])})", column=missing[0])
    frame = X[names]
    return frame.map_partitions(est._frame_part, inverse, meta=est._frame_part(
        frame._meta, inverse))


def container(out: np.ndarray, X: Any, config: str, names: list[str]) -> Any:
    """``out`` in the container ``set_output`` asked for (``default``: the ndarray)."""
    if config == "pandas":
        import pandas as pd

        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(out, index=index, columns=names, copy=False)
    if config == "polars":
        try:  # optional: only a user who asked for polars output needs it
            import polars as pl
        except ImportError:
            raise ImportError("set_output(transform='polars') needs polars: "
                              "pip install polars") from None

        return pl.DataFrame(out, schema=names, orient="row")
    return out


def refuse_inf(name: str, n: int, policy: str) -> None:
    if policy == "error":
        raise ScalerDataError(f"column '{name}' has {n} infinite value(s); fix the data, or "
                              f"pass {option('inf', 'null')} to treat them as missing", column=name)


def variance(f: FeatureStats, ddof: int) -> float:
    if f.constant:
        return 0.0
    if f.moments is None:
        return f.std * f.std
    return f.moments.m2 / f.moments.denominator(ddof)


def check_weights(name: str, m: Any, ddof: int) -> None:
    """:func:`pipeline.weights.check_weighted` for ``sample_weight``, as a ScalerDataError."""
    from .weights import check_weighted

    try:
        check_weighted(name, m, "sample_weight" if m.weighted else None, ddof)
    except DataError as exc:
        raise ScalerDataError(exc.render(), column=name) from None


def sample_weights(sample_weight: Any, n: int) -> np.ndarray | None:
    """``sample_weight`` as float64, one per row: finite and >= 0 (a scalar: every row)."""
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ScalerDataError("sample_weight must be numbers, one per row of X") from None
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ScalerDataError(f"sample_weight has shape {w.shape}, expected ({n},): one weight "
                              "per row of X")
    with np.errstate(invalid="ignore"):
        bad = int((~(w >= 0) | np.isinf(w)).sum())
    if bad:
        raise ScalerDataError(f"sample_weight has {bad:,} NaN, negative or infinite value(s); "
                              "weights must be finite and >= 0 (0: the row counts for nothing)")
    if n and not w.any():
        raise ScalerDataError("sample_weight is zero for every row: sample weights must "
                              "contain at least one non-zero number")
    return w


def samples_seen(features: Sequence[FeatureStats]) -> int | float | np.ndarray:
    """scikit-learn's ``n_samples_seen_``: per feature the values used, or weighted their
    total weight (a float; one number when every feature has the same, as scikit-learn)."""
    if features[0].weight is None:  # an array as soon as a value was missing (zscore 0.1)
        counts = np.array([f.count for f in features], dtype=np.int64)
        return counts if any(f.missing for f in features) else int(counts[0])
    seen = np.array([f.weight for f in features], dtype=np.float64)
    return seen if seen.max() != seen.min() else float(seen[0])


def out_dtype(cols: list[Column]) -> np.dtype:
    """float32 (float16) when every column is, as scikit-learn; float64 otherwise."""
    dtype = np.result_type(*[c.values.dtype for c in cols]) if cols else np.dtype(np.float64)
    return dtype if dtype in (np.float32, np.float16) else np.dtype(np.float64)


def few(names: list[str], k: int = 10) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def merge_moments(old: FeatureStats, new: Any) -> Any:
    """``old``'s moments merged with ``new`` (``partial_fit``); ``None`` means nothing new."""
    if old.moments is None:
        raise ScalerDataError("these statistics have no moments (a hand-written artifact): "
                              "they transform, but partial_fit cannot add to them; refit")
    return old.moments if new is None else old.moments.merge(new)
