"""Exact, mergeable moments of one numeric column.

A :class:`Moments` holds what is needed to finish the mean and standard deviation
of a column and to merge two disjoint pieces of it exactly: the count, a *shift*
(a value near the mean), the mean's offset from that shift, the centred sum of
squares ``m2``, the min and max, and how many values were missing or infinite.

Why a shift: with data at mean 1e9 and sigma 1e-3, two chunk means differ by a
few ulps of 1e9, so the ``delta`` in Chan's update would be mostly rounding
noise.  Carrying ``mean = shift + offset`` keeps ``delta`` (and every other
quantity of the merge) at the scale of sigma.  Integer columns keep an exact
integer shift, and every difference from it is computed in exact integer
arithmetic before one rounding to float64 (:func:`exact_difference`), so int64
epoch nanoseconds lose nothing, and uint64 near 2**64 or int64 spanning its
whole range are as exact as float64 allows.

This module is pure numpy and Python: it knows nothing of Dask or files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

Number = int | float

# The range of a non-constant standard deviation.  Squares of deviations of that size
# are normal float64 numbers (2**-1022 to 2**1022); below, they lose digits to
# underflow (a sigma of 1e-160 squares to a subnormal, of 1e-163 to 0.0), above, sums
# of squares overflow.  Outside it sigma cannot be computed to 1e-12, so it is refused.
MIN_STD = 2.0**-511  # about 1.49e-154
MAX_STD = 2.0**511  # about 6.70e153


def std_in_range(std: float) -> bool:
    """True when a non-constant ``std`` is in [MIN_STD, MAX_STD] (not NaN, not inf)."""
    return MIN_STD <= std <= MAX_STD


@dataclass(frozen=True, slots=True)
class Moments:
    """Mergeable first and second moments of one column.

    ``count`` excludes missing (null and NaN) and infinite values; ``missing``
    and ``inf`` count them.  ``shift`` is an ``int`` for integer columns and a
    ``float`` otherwise; ``mean == shift + offset`` exactly (as real numbers).
    ``m2`` is the sum of squared deviations from the mean.  ``minimum`` and
    ``maximum`` are ``None`` when ``count == 0``.
    """

    count: int = 0
    missing: int = 0
    inf: int = 0
    shift: Number = 0.0
    offset: float = 0.0
    m2: float = 0.0
    minimum: Number | None = None
    maximum: Number | None = None

    # ------------------------------------------------------------------ build
    @classmethod
    def from_array(cls, values: np.ndarray, *, missing: int = 0, inf: int = 0,
                   total: float | None = None) -> Moments:
        """Moments of a 1-d array of finite values (missing ones already removed).

        Floating input is accumulated in float64 whatever its width; integer
        input is centred in exact integer arithmetic before conversion.
        ``total`` is ``values``' float64 sum when the caller already has it.

        The corrected two-pass algorithm (Chan, Golub & LeVeque 1983, eq. 1.7):
        with ``shift`` the computed mean and ``d = x - shift``,
        ``m2 = sum(d**2) - sum(d)**2 / n`` and ``mean = shift + sum(d) / n``, all
        sums numpy's pairwise summation.  Seven passes over an L2-sized chunk.
        """
        n = int(values.size)
        if n == 0:
            return cls(missing=missing, inf=inf)
        if total is None:
            with np.errstate(over="ignore"):  # an overflowing sum falls back below
                total = float(np.sum(values, dtype=np.float64))
        if values.dtype.kind in "iu":
            lo, hi = int(values.min()), int(values.max())
            whole = min(max(int(round(total / n)), lo), hi)
            d = integer_deviations(values, whole, hi - lo)
            shift: Number = whole
            minimum: Number = lo
            maximum: Number = hi
        else:
            shift = total / n
            if not math.isfinite(shift):  # the sum overflowed: values near float64's max
                shift = float(values[0])
            d = np.subtract(values, shift, dtype=np.float64)
            minimum, maximum = float(values.min()), float(values.max())
        c = float(d.sum())
        with np.errstate(over="ignore", under="ignore"):  # out of range: refused by the fit
            np.square(d, out=d)
        m2 = float(d.sum()) - c * c / n
        return cls(count=n, missing=missing, inf=inf, shift=shift, offset=c / n,
                   m2=max(m2, 0.0), minimum=minimum, maximum=maximum)

    # ------------------------------------------------------------------ merge
    def merge(self, other: Moments) -> Moments:
        """Moments of the union of two disjoint pieces (Chan, Golub & LeVeque's update).

        Chan, T. F., Golub, G. H. & LeVeque, R. J. (1979), "Updating formulae and a
        pairwise algorithm for computing sample variances", Stanford CS-TR-79-773:
        ``m2 = m2_a + m2_b + delta**2 * n_a * n_b / n``.  The result keeps
        ``self``'s shift, so a left fold in a fixed order is reproducible bit for
        bit.  An empty side is an identity.
        """
        missing = self.missing + other.missing
        inf = self.inf + other.inf
        if other.count == 0:
            return replace(self, missing=missing, inf=inf)
        if self.count == 0:
            return replace(other, missing=missing, inf=inf)
        na, nb = self.count, other.count
        n = na + nb
        delta = _difference(other.shift, self.shift) + (other.offset - self.offset)
        offset = self.offset + delta * (nb / n)
        m2 = self.m2 + other.m2 + delta * delta * (na * nb / n)
        assert self.minimum is not None and other.minimum is not None
        assert self.maximum is not None and other.maximum is not None
        return Moments(count=n, missing=missing, inf=inf, shift=self.shift, offset=offset,
                       m2=m2, minimum=min(self.minimum, other.minimum),
                       maximum=max(self.maximum, other.maximum))


    @classmethod
    def merge_all(cls, pieces: Iterable[Moments]) -> Moments:
        """Left fold of :meth:`merge` over ``pieces`` in the order given."""
        total = cls()
        for piece in pieces:
            total = total.merge(piece)
        return total

    # --------------------------------------------------------------- finalize
    @property
    def constant(self) -> bool:
        """True when every value is equal (``min == max``), never judged by a small variance."""
        return self.count > 0 and self.minimum == self.maximum

    @property
    def mean(self) -> float:
        """The mean, correctly rounded from ``shift + offset``."""
        if self.count == 0:
            return math.nan
        if isinstance(self.shift, int):
            return float(Fraction(self.shift) + Fraction(self.offset))
        return self.shift + self.offset

    def std(self, ddof: int = 0) -> float:
        """Standard deviation with ``count - ddof`` in the denominator; 0.0 when constant."""
        if self.count == 0:
            return math.nan
        if self.constant:
            return 0.0
        if self.count - ddof <= 0:
            return math.nan
        return math.sqrt(self.m2 / (self.count - ddof))

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Number | None]:
        """A JSON-safe dict that :meth:`from_dict` turns back into an equal object."""
        return {"count": self.count, "missing": self.missing, "inf": self.inf,
                "shift": self.shift, "offset": self.offset, "m2": self.m2,
                "min": self.minimum, "max": self.maximum}

    @classmethod
    def from_dict(cls, d: dict) -> Moments:
        return cls(count=int(d["count"]), missing=int(d["missing"]), inf=int(d.get("inf", 0)),
                   shift=d["shift"], offset=float(d["offset"]), m2=float(d["m2"]),
                   minimum=d["min"], maximum=d["max"])


def integer_deviations(values: np.ndarray, shift: int, spread: int) -> np.ndarray:
    """``values - shift`` as float64 for an integer array, each difference exact, rounded once.

    ``shift`` lies within ``values``' type and ``spread`` bounds ``|x - shift|``.
    Below 2**53 every difference is a float64 integer, so the result is exact;
    above, each is the correctly rounded exact difference (float64 cannot do better).
    """
    if values.dtype.itemsize < 8:
        return (values.astype(np.int64) - np.int64(shift)).astype(np.float64)
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
        return (values - shift).view(np.int64).astype(np.float64)
    u, s = _ordered(values), _ordered(shift)
    above = u >= s
    d = np.where(above, u - s, s - u).astype(np.float64)
    np.negative(d, out=d, where=~above)
    return d


def _ordered(values: np.ndarray) -> np.ndarray:
    return values.view(np.uint64) ^ _SIGN if values.dtype.kind == "i" else values


def _difference(a: Number, b: Number) -> float:
    """``a - b`` rounded once: exact integer subtraction when both shifts are integers."""
    if isinstance(a, int) and isinstance(b, int):
        return float(a - b)
    return float(a) - float(b)
