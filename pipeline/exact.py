"""Exact differences of integer arrays: ``x - shift`` exact in integer arithmetic, rounded once.

Used where a mean is subtracted from integers: the fit's moments
(:mod:`pipeline.stats`, :mod:`pipeline.keystats`) and the transform's kernel
(:mod:`pipeline.kernel`).  int64 epoch nanoseconds, uint64 near 2**64 and
int64 spanning its whole range lose nothing before the one rounding to float64.
numpy arithmetic; large results in memory from :func:`pipeline.columns.empty`.
"""

from __future__ import annotations

import numpy as np

from .columns import cast, empty


def integer_deviations(values: np.ndarray, shift: int, spread: int) -> np.ndarray:
    """``values - shift`` as float64 for an integer array, each difference exact, rounded once.

    ``shift`` lies within ``values``' type and ``spread`` bounds ``|x - shift|``.
    Below 2**53 every difference is a float64 integer, so the result is exact;
    above, each is the correctly rounded exact difference (float64 cannot do better).
    """
    if values.dtype.itemsize < 8:  # widened to int64: no overflow
        return cast(np.subtract(values, np.int64(shift), out=empty(values.size, np.int64)))
    return exact_difference(values, np.array(shift, dtype=values.dtype), spread)


_SIGN = np.uint64(1 << 63)


def exact_difference(values: np.ndarray, shift: np.ndarray, spread: int | None = None
                     ) -> np.ndarray:
    """``values - shift`` for 64-bit integers, each difference exact before one rounding.

    ``shift`` has ``values``' dtype (a scalar array or one per value); ``spread``,
    when the caller knows it, bounds ``|x - shift|``.  Any difference of two
    64-bit integers is exact here, up to 2**64 - 1 in magnitude.  Below 2**63 a
    wrapping subtraction read as int64 is the difference; beyond, both sides are
    mapped in order onto uint64 (int64 by flipping the sign bit), the magnitude
    is taken on the right side of a ``where`` and the sign put back after the
    one rounding to float64.
    """
    if spread is None:
        if values.size == 0:
            return np.zeros(0, dtype=np.float64)
        spread = max(int(values.max()) - int(shift.min()), int(shift.max()) - int(values.min()))
    if spread < 2**63:
        return cast(np.subtract(values, shift, out=empty(values.size, values.dtype))
                           .view(np.int64))
    u, s = _ordered(values), _ordered(shift)
    above = u >= s
    d = np.where(above, u - s, s - u).astype(np.float64)
    np.negative(d, out=d, where=~above)
    return d


def _ordered(values: np.ndarray) -> np.ndarray:
    return values.view(np.uint64) ^ _SIGN if values.dtype.kind == "i" else values
