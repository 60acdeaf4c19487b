"""How :class:`pipeline.StandardScaler` transforms: the kernel per column, then clip and fill.

Every column goes through :func:`pipeline.kernel.scale_array` (the numbers of the
command line and :func:`pipeline.apply`), then the steps of :mod:`pipeline.finish`
in their order: infinite inputs (the ``inf`` policy), clip in float64, cast to
the output dtype, fill.  With ``missing_indicator`` each feature's column is
followed by its indicator, 0.0 or 1.0 in the output dtype (one ndarray has one
dtype, as scikit-learn's ``SimpleImputer(add_indicator=True)`` does).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .estimator_data import Column, ScalerDataError, out_dtype, refuse_inf
from .feature_stats import FeatureStats
from .finish import NO_FINISH, FinishOptions, LossyInverseWarning, clip_in_place, clip_warning
from .kernel import ColumnPlan, scale_array


def finish_of(est: Any) -> FinishOptions:
    """The estimator's ``fill_missing``, ``missing_indicator`` and ``clip``, checked."""
    try:
        return FinishOptions(fill_missing=est.fill_missing,
                             missing_indicator=bool(est.missing_indicator), clip=est.clip)
    except Exception as exc:  # InputError: for scikit-learn's callers a ValueError
        raise ValueError(str(exc)) from None


def mode_of(est: Any, inverse: bool) -> str | None:
    """The kernel's mode for ``with_mean``/``with_std``/``minmax`` (None: the identity)."""
    if est.minmax:
        if not (est.with_mean and est.with_std):
            raise ValueError("minmax=True scales by the fitted min and max: leave with_mean and "
                             "with_std at True")
        if inverse:
            raise ValueError("minmax=True has no inverse_transform in this version")
        return "minmax"
    return {(True, True): "standard", (False, True): "scale",
            (True, False): "center"}.get((bool(est.with_mean), bool(est.with_std)))


def warn_lossy(est: Any) -> None:
    """The inverse's warning when the transform clipped or filled."""
    finish = finish_of(est)
    if finish.lossy:
        warnings.warn(clip_warning("StandardScaler.inverse_transform", finish),
                      LossyInverseWarning, stacklevel=3)


def scale_columns(est: Any, cols: list[Column], inverse: bool, into: np.ndarray | None = None
                  ) -> np.ndarray:
    """Every column through the kernel and the finishing steps, into one array.

    ``into``: an array to write into when it has the output's dtype and shape.
    """
    dtype = out_dtype(cols)
    finish = NO_FINISH if inverse else finish_of(est)
    step = 2 if finish.missing_indicator else 1
    n = len(cols[0].values) if cols else 0
    shape = (n, step * len(cols))
    out = into if into is not None and into.dtype == dtype and into.shape == shape else \
        np.empty(shape, dtype=dtype)
    mode = mode_of(est, inverse)
    for j, (c, f) in enumerate(zip(cols, est._features, strict=True)):
        values = _column(est, c, f, mode, inverse, dtype, finish)
        if finish.fill_missing is not None:
            missing = np.isnan(values)
            values[missing] = finish.fill_missing
            if step == 2:
                out[:, 2 * j + 1] = missing
        out[:, step * j] = values
    return out


def _column(est: Any, c: Column, f: FeatureStats, mode: str | None, inverse: bool,
            dtype: np.dtype, finish: FinishOptions) -> np.ndarray:
    x = c.values
    if mode is None:
        z = x.astype(np.float64)
    elif f.constant and mode != "minmax":
        # scikit-learn's convention: scale_ = 1 and x - mean, so a new value keeps its
        # offset (exactly 0.0 on the training values, whose mean is their value).
        z = scale_array(x, ColumnPlan.single(c.name, f.mean, 1.0), mode, inverse)
    else:
        z = scale_array(x, ColumnPlan.of(c.name, [f]), mode, inverse)
    if c.missing is not None:
        z[c.missing] = np.nan
    if x.dtype.kind == "f":
        infinite = np.isinf(x)
        if infinite.any():
            if not inverse:
                refuse_inf(c.name, int(infinite.sum()), est.inf)
            if est.inf == "null":
                z[infinite] = np.nan
    if finish.clip is not None:
        clip_in_place(z, x, finish.clip)
    if dtype == np.float64:
        return z
    with np.errstate(over="ignore"):
        narrow = z.astype(dtype)
    if np.isinf(narrow).sum() > np.isinf(z).sum():
        raise ScalerDataError(f"column '{c.name}' has values that overflow {dtype} when "
                              "transformed; pass X.astype('float64')", column=c.name)
    return narrow
