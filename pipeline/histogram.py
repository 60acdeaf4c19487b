"""Fixed-range histograms that merge exactly (integer counts), for the report.

Accumulated during the transform pass, so the report costs no extra read:
"before" uses the fitted [min, max]; "after" uses the image of
[mean - K*std, mean + K*std] under the transform (±K for ``standard``).
Because the transform is monotone and affine, the "after" histogram is taken
on the raw values with the pre-image of its edges: one binning pass per
histogram, no transformed copy needed.

Every value lands in exactly one of ``counts``, ``below``, ``above`` or
``missing``, so their sum is the row count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 60
K_SIGMA = 4.0


@dataclass(frozen=True)
class Histogram:
    """Counts of values in ``bins`` equal bins over [lo, hi] (hi inclusive)."""

    lo: float
    hi: float
    counts: tuple[int, ...]
    below: int = 0
    above: int = 0
    missing: int = 0

    @classmethod
    def empty(cls, lo: float, hi: float, bins: int = BINS) -> Histogram:
        return cls(lo=float(lo), hi=float(hi), counts=(0,) * bins)

    @property
    def total(self) -> int:
        return sum(self.counts) + self.below + self.above + self.missing

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, len(self.counts) + 1)

    def add(self, x: np.ndarray, *, raw_lo: float | None = None, raw_hi: float | None = None
            ) -> Histogram:
        """Count float64 ``x`` (NaN = missing).

        ``raw_lo``/``raw_hi`` give the range in ``x``'s units when the histogram's
        own [lo, hi] is in transformed units (the "after" histogram).
        """
        lo = self.lo if raw_lo is None else raw_lo
        hi = self.hi if raw_hi is None else raw_hi
        bins = len(self.counts)
        nan = np.isnan(x)
        n_missing = int(nan.sum())
        if n_missing:
            x = x[~nan]
        below = int(np.count_nonzero(x < lo))
        above = int(np.count_nonzero(x > hi))
        if hi > lo:
            inside = x[(x >= lo) & (x <= hi)] if below or above else x
            idx = ((inside - lo) * (bins / (hi - lo))).astype(np.intp)
            np.minimum(idx, bins - 1, out=idx)
            counts = np.bincount(idx, minlength=bins)
        else:  # constant column: every in-range value sits in the first bin
            counts = np.zeros(bins, dtype=np.int64)
            counts[0] = x.size - below - above
        return Histogram(lo=self.lo, hi=self.hi,
                         counts=tuple(int(a + b) for a, b in zip(self.counts, counts,
                                                                 strict=True)),
                         below=self.below + below, above=self.above + above,
                         missing=self.missing + n_missing)

    def merge(self, other: Histogram) -> Histogram:
        if (self.lo, self.hi, len(self.counts)) != (other.lo, other.hi, len(other.counts)):
            raise ValueError("histograms with different bins cannot be merged")
        return Histogram(lo=self.lo, hi=self.hi,
                         counts=tuple(a + b for a, b in zip(self.counts, other.counts,
                                                            strict=True)),
                         below=self.below + other.below, above=self.above + other.above,
                         missing=self.missing + other.missing)

    def mean(self) -> float:
        """Mean of the in-range values, from bin centres (an approximation)."""
        edges = self.edges()
        centres = (edges[:-1] + edges[1:]) / 2
        n = sum(self.counts)
        return float(np.dot(centres, self.counts) / n) if n else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "counts": list(self.counts), "below": self.below,
                "above": self.above, "missing": self.missing}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        return cls(lo=float(d["lo"]), hi=float(d["hi"]), counts=tuple(int(c) for c in
                                                                       d["counts"]),
                   below=int(d["below"]), above=int(d["above"]), missing=int(d["missing"]))


@dataclass(frozen=True)
class FeatureHistograms:
    """The "before" and "after" histograms of one feature."""

    before: Histogram
    after: Histogram

    def merge(self, other: FeatureHistograms) -> FeatureHistograms:
        return FeatureHistograms(self.before.merge(other.before), self.after.merge(other.after))

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before.to_dict(), "after": self.after.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureHistograms:
        return cls(Histogram.from_dict(d["before"]), Histogram.from_dict(d["after"]))
