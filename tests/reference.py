"""The tests' own yardstick: exact statistics with rationals, independent of ``pipeline``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction


def exact_reference(values: Iterable[float | int], ddof: int = 0) -> tuple[float, float]:
    """Mean and standard deviation computed exactly with fractions, rounded once at the end."""
    xs = [Fraction(v) for v in values]
    n = len(xs)
    mean = sum(xs, Fraction(0)) / n
    m2 = sum(((x - mean) ** 2 for x in xs), Fraction(0))
    return float(mean), math.sqrt(m2 / (n - ddof)) if n - ddof > 0 else math.nan
