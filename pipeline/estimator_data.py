"""What :class:`pipeline.StandardScaler` reads: in-memory columns, or statistics fitted by Dask.

In memory (numpy arrays, pandas DataFrames), each column is taken in its own
dtype, so int64 keeps the exact integer arithmetic of :mod:`pipeline.stats` and
:mod:`pipeline.kernel`; missing values (NaN, pandas' NA) are a mask beside it.
Dask DataFrames and Arrays and Parquet datasets are fitted by :func:`pipeline.fit`
(on the current Dask client) and arrive as :class:`~pipeline.artifact.FittedStats`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError


class ScalerDataError(DataError, ValueError):
    """Bad input to :class:`pipeline.StandardScaler`.

    A :class:`pipeline.DataError` for zscore's callers and a ``ValueError`` for
    scikit-learn's (the convention its estimators follow).
    """


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
    return X


def fit_dask(X: Any, *, ddof: int, inf: str) -> tuple[list[str], Any]:
    """Statistics of every column of a Dask DataFrame/Array or a Parquet dataset.

    Through :func:`pipeline.fit`: distributed on the current Dask client (or an
    embedded local cluster when there is none), one exact pass, files or
    partitions merged in a fixed order.
    """
    from . import fit  # the public function (pipeline.fit), whatever module holds it
    from .errors import InputError

    source = X if isinstance(X, str | os.PathLike) else dask_frame(X)
    try:
        if isinstance(source, str | os.PathLike):
            stats = fit(source, ddof=ddof, inf=inf)
        else:
            stats = fit(source, features=[str(c) for c in source.columns], ddof=ddof, inf=inf)
    except InputError as exc:
        raise ScalerDataError(str(exc), path=exc.path, column=exc.column) from None
    return list(stats.features), stats
