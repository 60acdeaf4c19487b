"""The kernel: one numpy function for every transform, global or per key.

:func:`scale_array` takes any integer or floating numpy array and a
:class:`ColumnPlan` whose numbers are arrays indexed by group (the global
statistics last; a global plan has only those), plus, for per-key plans, each
row's group.  The Arrow, pandas and Dask front ends (:mod:`pipeline.plan`,
:mod:`pipeline.frames`) all go through it.

Exactness: the mean is subtracted as a double-double (``mean`` then
``residual``, see :attr:`FeatureStats.mean_residual`), so z at mean 1e9 with
sigma 1e-3 is right to the last bits.  64-bit integers are not rounded to
float64 first: the mean is split into an integer ``round(mean)``, subtracted in
exact 64-bit integer arithmetic, and the fraction, subtracted after the one
rounding; int64 epoch nanoseconds with sigma 288 ns or uint64 near 2**64 get z
to a few ulps (tests hold it to 1e-12 of the exact value, in units of sigma),
whether the values are inside the fit's range or not.  Narrower integers and
floats are exact in float64 already.  Constants become exactly 0.0 (``standard``,
``center``) or stay as they are (``scale``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from .columns import cast, empty
from .errors import DataError, option
from .exact import exact_difference

if TYPE_CHECKING:
    from .feature_stats import FeatureStats


@dataclass(frozen=True, eq=False)
class ColumnPlan:
    """The kernel's numbers for one feature, one entry per group.

    Per-key plans hold key ``i`` at index ``i`` and the global statistics last
    (for unseen keys and keys without a value of this feature); a global plan
    holds only those.  ``mean`` is the rounded mean and ``residual`` the exact
    mean minus ``mean``, rounded (0.0 where it is below rounding): together a
    double-double mean.
    """

    name: str
    mean: np.ndarray
    std: np.ndarray
    constant: np.ndarray
    residual: np.ndarray
    low: tuple[float | int, ...] = ()  # exact min and max per group (minmax), as fitted
    high: tuple[float | int, ...] = ()

    @classmethod
    def of(cls, name: str, features: Sequence[FeatureStats]) -> ColumnPlan:
        """The plan of feature ``name`` from its statistics per group (global last)."""
        return cls(name=name,
                   mean=np.array([f.mean for f in features], dtype=np.float64),
                   std=np.array([f.std for f in features], dtype=np.float64),
                   constant=np.array([f.constant for f in features], dtype=bool),
                   residual=np.array([f.kernel_residual for f in features], dtype=np.float64),
                   low=tuple(f.min for f in features), high=tuple(f.max for f in features))

    @classmethod
    def single(cls, name: str, mean: float, std: float, constant: bool = False,
               residual: float = 0.0) -> ColumnPlan:
        """A one-group plan from plain numbers."""
        return cls(name=name, mean=np.array([mean]), std=np.array([std]),
                   constant=np.array([constant]), residual=np.array([residual]))

    @cached_property
    def span(self) -> np.ndarray:
        """``max - min`` per group, exact then rounded once (1.0 for a constant group)."""
        out = []
        for lo, hi, const in zip(self.low, self.high, self.constant, strict=True):
            try:
                out.append(1.0 if const else float(Fraction(hi) - Fraction(lo)))
            except OverflowError:  # max - min past float64's range
                out.append(math.inf)
        return np.array(out, dtype=np.float64)


def scale_array(x: np.ndarray, col: ColumnPlan, mode: str, inverse: bool = False,
                rows: np.ndarray | None = None) -> np.ndarray:
    """The transform of one column: a new float64 array; NaN in, NaN out.

    Parameters
    ----------
    x : numpy.ndarray
        Any integer or floating dtype; not modified.
    col : ColumnPlan
    mode : {"standard", "scale", "center", "minmax"}
        ``minmax`` is (x - min) / (max - min) from the exact fitted min and max
        (see :func:`_minmax`); it has no inverse here (refused by the front ends).
    inverse : bool
        Undo the transform (z * std + mean for ``standard``).
    rows : numpy.ndarray of int64, optional
        Per row, its group's index in ``col`` (-1: no statistics, the result is
        NaN); default: every row uses the global statistics.
    """
    g = None if rows is None else np.where(rows < 0, len(col.mean) - 1, rows)
    mean, lo, const = _pick(col.mean, g), _pick(col.residual, g), _pick(col.constant, g)
    # A constant is left as it is by scale.  Python scalars for one group: numpy's
    # loops with a 0-d array operand are some 20 % slower than with a float.
    std = (1.0 if const else _pick(col.std, g)) if g is None else \
        np.where(const, 1.0, col.std[g])
    if mode == "minmax":
        out = _minmax(x, col, g)
        if rows is not None:
            out[rows < 0] = np.nan
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        if inverse:
            out = _inverse(x, mean, std, lo, const, mode)
        elif g is None and const:
            out = cast(x) if mode == "scale" else _zeros_like(x)
        else:
            if mode == "scale":
                out = np.divide(x, std, dtype=np.float64, out=empty(x.size))
            else:
                out = _deviation(x, col, mean, g)
                if np.any(lo):
                    out -= lo
                if mode == "standard":
                    out /= std
            if g is not None and mode != "scale" and np.any(const):
                out[const & ~np.isnan(out)] = 0.0
    if rows is not None:
        out[rows < 0] = np.nan
    return out


def _pick(values: np.ndarray, g: np.ndarray | None) -> Any:
    """The global entry (a Python scalar), or each row's group's entry."""
    return values[-1].item() if g is None else values[g]


def _zeros_like(x: np.ndarray) -> np.ndarray:
    out = empty(x.size)
    out.fill(0.0)
    if x.dtype.kind == "f":
        out[np.isnan(x)] = np.nan
    return out


def _inverse(z: np.ndarray, mean: Any, std: Any, lo: Any, const: Any, mode: str) -> np.ndarray:
    if mode != "center":
        out = np.multiply(z, std, dtype=np.float64)
    else:
        out = z.astype(np.float64, copy=True)
    if mode == "scale":
        return out
    if np.any(lo):
        out += lo
    out += mean
    if np.ndim(const) == 0:
        if const:
            out[~np.isnan(out)] = mean
    elif np.any(const):
        fill = const & ~np.isnan(out)
        out[fill] = mean[fill]
    return out


_INT_SHIFT_RANGE = {"i": (-2.0**63, 2.0**63 - 1024),  # floats within int64 and uint64
                    "u": (0.0, 2.0**64 - 2048)}


def _deviation(x: np.ndarray, col: ColumnPlan, mean: np.ndarray | float,
               g: np.ndarray | None) -> np.ndarray:
    """``x - mean`` as a new float64 array, correctly rounded for every input dtype.

    Floats and integers up to 32 bits convert to float64 exactly, so one float64
    subtraction is one rounding.  For 64-bit integers the mean is split into an
    integer shift ``s`` (``round(mean)``, clamped to the dtype's range) and a
    float remainder ``r = mean - s`` (exact unless clamped): ``x - s`` is exact in
    integer arithmetic (:func:`pipeline.exact.exact_difference`), rounded once,
    then ``r`` is subtracted.  Where ``|x - s| <= 2**53`` that is the correctly
    rounded ``x - mean``, so when every ``|x|`` and ``|s|`` is at most 2**52 the
    plain float64 subtraction gives the same bits and is taken instead (faster).
    """
    if x.dtype.kind == "f" or x.dtype.itemsize < 8:
        return np.subtract(x, mean, dtype=np.float64, out=empty(x.size))
    if x.size == 0:
        return np.zeros(0, dtype=np.float64)
    whole = np.round(col.mean)  # per group; an integer float, so mean - whole is exact
    lo_x, hi_x = int(x.min()), int(x.max())
    if max(-lo_x, hi_x) <= 2**52 and float(np.abs(whole).max()) <= 2.0**52:
        return np.subtract(x, mean, dtype=np.float64, out=empty(x.size))
    low, high = _INT_SHIFT_RANGE[x.dtype.kind]
    shift = np.clip(whole, low, high)
    # Where the shift was clamped (a mean outside the dtype: validation data stored as
    # uint64 for an int64 fit), the remainder is mean - shift, rounded once.
    rest = np.where(shift == whole, col.mean - whole, col.mean - shift)
    shifts = shift.astype(x.dtype)
    spread = max(hi_x - int(shifts.min()), int(shifts.max()) - lo_x)
    d = exact_difference(x, shifts[-1] if g is None else shifts[g], spread)
    r = rest[-1] if g is None else rest[g]
    if np.any(r):
        d -= r
    return d


def _minmax(x: np.ndarray, col: ColumnPlan, g: np.ndarray | None) -> np.ndarray:
    """``(x - min) / (max - min)`` as a new float64 array; constant groups give 0.0.

    ``x - min`` is rounded once (64-bit integers through
    :func:`pipeline.exact.exact_difference` with ``min`` clamped to the dtype, the
    integer remainder subtracted after), ``max - min`` is exact then rounded once
    (:attr:`ColumnPlan.span`), and the quotient rounded once: three roundings, so
    within 2 ulps of the exact ratio for every dtype, int64 and uint64 at their
    limits included.
    """
    span = col.span
    if np.isinf(span).any():
        raise DataError(f"column '{col.name}' spans more than float64's range (max - min "
                        f"overflows), so {option('mode', 'minmax')} cannot scale it; use "
                        f"{option('mode', 'standard')} or rescale the column", column=col.name)
    if x.dtype.kind == "f" or x.dtype.itemsize < 8:
        low = np.array([float(v) for v in col.low], dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.subtract(x, low[-1] if g is None else low[g], dtype=np.float64)
    else:
        info = np.iinfo(x.dtype)
        shift = [min(max(math.floor(v), info.min), info.max) for v in col.low]
        rest = np.array([float(Fraction(v) - s) for v, s in zip(col.low, shift, strict=True)])
        shifts = np.array(shift, dtype=x.dtype)
        d = exact_difference(x, shifts[-1:] if g is None else shifts[g])
        r = rest[-1] if g is None else rest[g]
        if np.any(r):
            d -= r
    with np.errstate(invalid="ignore", over="ignore"):
        d /= span[-1] if g is None else span[g]
    const = col.constant[-1] if g is None else col.constant[g]
    if np.any(const):
        d[const & ~np.isnan(d)] = 0.0
    return d
