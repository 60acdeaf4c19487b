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


def weighted_reference(values: Iterable[float | int], weights: Iterable[float | int],
                       ddof: int = 0) -> tuple[float, float, float]:
    """Weighted mean, std and total weight, exactly: sum(w x) / sum(w), sum(w (x - mean)**2)
    / (sum(w) - ddof), over the rows of positive weight; rounded once at the end."""
    pairs = [(Fraction(x), Fraction(w)) for x, w in zip(values, weights, strict=True) if w > 0]
    total = sum((w for _, w in pairs), Fraction(0))
    mean = sum((w * x for x, w in pairs), Fraction(0)) / total
    m2 = sum((w * (x - mean) ** 2 for x, w in pairs), Fraction(0))
    return float(mean), math.sqrt(m2 / (total - ddof)), float(total)
