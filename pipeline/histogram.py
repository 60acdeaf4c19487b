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

import math
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

    def add(self, x: np.ndarray, *, raw_lo: float | None = None, raw_hi: float | None = None,
            missing: int | None = None) -> Histogram:
        """Count float64 ``x`` (NaN = missing).

        ``raw_lo``/``raw_hi`` give the range in ``x``'s units when the histogram's
        own [lo, hi] is in transformed units (the "after" histogram).  ``missing``
        is the number of NaN in ``x`` when the caller already knows it.
        """
        lo = self.lo if raw_lo is None else raw_lo
        hi = self.hi if raw_hi is None else raw_hi
        bins = len(self.counts)
        n_missing = int(np.isnan(x).sum()) if missing is None else missing
        if hi > lo:
            below, inner, above = _bin(x, lo, hi, bins)
            below -= n_missing
        else:  # a constant column: its one value sits in the first bin
            below = int(np.count_nonzero(x < lo))
            above = int(np.count_nonzero(x > hi))
            inner = np.zeros(bins, dtype=np.int64)
            inner[0] = x.size - n_missing - below - above
        return self._plus(below, inner, above, n_missing)

    def _plus(self, below: int, counts: np.ndarray, above: int, missing: int) -> Histogram:
        return Histogram(lo=self.lo, hi=self.hi,
                         counts=tuple(int(a + b) for a, b in zip(self.counts, counts,
                                                                 strict=True)),
                         below=self.below + below, above=self.above + above,
                         missing=self.missing + missing)

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


CHUNK = 1 << 15  # values binned at a time: the temporaries stay in L2


def _bin(x: np.ndarray, lo: float, hi: float, bins: int) -> tuple[int, np.ndarray, int]:
    """(below, counts of the ``bins`` bins, above) of the non-NaN values of ``x``."""
    (counts,) = _bin_many(x, [(lo, hi, bins)])
    return counts


def _bin_many(x: np.ndarray, ranges: list[tuple[float, float, int]]
              ) -> list[tuple[int, np.ndarray, int]]:
    """:func:`_bin` for several ranges at once, chunk by chunk, each chunk read once.

    Bin ``i`` holds lo + i*w <= x < lo + (i+1)*w; the last bin also holds x == hi.
    Per chunk: t = (x - lo) / w + 1, clamped to [0, bins + 2] with fmax/fmin (which
    also turn NaN into 0), cast to uint8, counted.  Bucket 0 is "below" plus NaN
    (the caller subtracts the NaN count), bucket bins + 1 is [hi, hi + w), out of
    which the values equal to hi are moved into the last bin.
    """
    totals = [np.zeros(bins + 3, dtype=np.int64) for _, _, bins in ranges]
    at_hi = [0] * len(ranges)
    t = np.empty(min(CHUNK, max(x.size, 1)))
    for start in range(0, x.size, CHUNK):
        chunk = x[start:start + CHUNK]
        tt = t[:chunk.size]
        for k, (lo, hi, bins) in enumerate(ranges):
            np.subtract(chunk, lo, out=tt)
            tt *= bins / (hi - lo)
            tt += 1.0
            np.fmax(tt, 0.0, out=tt)
            np.fmin(tt, bins + 2.0, out=tt)
            totals[k] += np.bincount(tt.astype(np.uint8), minlength=bins + 3)
            at_hi[k] += int(np.count_nonzero(chunk == hi))
    out = []
    for (_, _, bins), counts, eq in zip(ranges, totals, at_hi, strict=True):
        inner = counts[1:bins + 1].copy()
        inner[-1] += eq
        out.append((int(counts[0]), inner, int(counts[bins + 1]) - eq + int(counts[bins + 2])))
    return out


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


@dataclass(frozen=True)
class HistogramSpec:
    """Where one feature's histograms sit: "after" edges in output units, raw range too."""

    before: Histogram
    after: Histogram
    raw_lo: float
    raw_hi: float

    def empty(self) -> FeatureHistograms:
        return FeatureHistograms(self.before, self.after)

    def tally(self) -> Tally:
        """A mutable accumulator for one task (see :class:`Tally`)."""
        return Tally(self)


class Tally:
    """Counts of one feature within one task, in numpy arrays.

    Layout of ``before``/``after``: [below, bin 0, ..., bin n-1, above, missing].
    Batches smaller than a chunk are buffered and binned together (a 100-row file
    otherwise pays a dozen numpy calls per feature), and :meth:`result` makes
    the immutable :class:`FeatureHistograms` once, at the end.
    """

    def __init__(self, spec: HistogramSpec):
        self.spec = spec
        self.before = np.zeros(len(spec.before.counts) + 3, dtype=np.int64)
        self.after = np.zeros(len(spec.after.counts) + 3, dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def add(self, x: np.ndarray, out: np.ndarray | None = None) -> None:
        """Count raw float64 values ``x`` (and, for per-key plans, transformed ``out``).

        ``x`` may be modified by the caller afterwards: what is buffered is copied.
        """
        if out is None and x.size < CHUNK:
            self._pending.append(x.copy())
            self._pending_n += x.size
            if self._pending_n >= CHUNK:
                self._flush()
            return
        self._count(x, out)

    def _flush(self) -> None:
        if self._pending:
            joined = np.concatenate(self._pending)
            self._pending, self._pending_n = [], 0
            self._count(joined, None)

    def _count(self, x: np.ndarray, out: np.ndarray | None) -> None:
        s = self.spec
        nan = int(np.isnan(x).sum())
        b, a = s.before, s.after
        if out is not None or not (b.hi > b.lo and s.raw_hi > s.raw_lo):
            # Per-key plans (no single affine map: count the results themselves) and
            # constant columns take the simple road.
            after = Histogram.empty(a.lo, a.hi, len(a.counts))
            after = after.add(out) if out is not None else \
                after.add(x, raw_lo=s.raw_lo, raw_hi=s.raw_hi, missing=nan)
            before = Histogram.empty(b.lo, b.hi, len(b.counts)).add(x, missing=nan)
            _accumulate(self.before, before.below, np.asarray(before.counts), before.above,
                        before.missing)
            _accumulate(self.after, after.below, np.asarray(after.counts), after.above,
                        after.missing)
            return
        (bb, bc, ba), (ab, ac, aa) = _bin_many(
            x, [(b.lo, b.hi, len(b.counts)), (s.raw_lo, s.raw_hi, len(a.counts))])
        _accumulate(self.before, bb - nan, bc, ba, nan)
        _accumulate(self.after, ab - nan, ac, aa, nan)

    def result(self) -> FeatureHistograms:
        self._flush()
        return FeatureHistograms(_histogram(self.spec.before, self.before),
                                 _histogram(self.spec.after, self.after))


def _accumulate(into: np.ndarray, below: int, counts: np.ndarray, above: int, missing: int
                ) -> None:
    into[0] += below
    into[1:-2] += counts
    into[-2] += above
    into[-1] += missing


def _histogram(base: Histogram, acc: np.ndarray) -> Histogram:
    return base._plus(int(acc[0]), acc[1:-2], int(acc[-2]), int(acc[-1]))


def specs(plan: Any, stats: Any, bins: int = BINS, k: float = K_SIGMA
          ) -> dict[str, HistogramSpec]:
    """A :class:`HistogramSpec` per feature of ``plan`` (a transform Plan).

    "before" spans the fitted [min, max]; "after" spans the image under the
    transform of [mean - k*std, mean + k*std] (so [-k, k] in ``standard`` mode).
    """
    from .kernel import scale_array
    from .plan import RAW_EXACT

    out = {}
    for col in plan.columns:
        f = stats.features[col.name]
        mean, std = float(col.mean[-1]), float(col.std[-1])  # the global statistics
        raw_lo, raw_hi = mean - k * std, mean + k * std
        if f.dtype.startswith(("int", "uint")):
            # Bins of whole integers: 60 bins over 39 integers would leave empty stripes.
            b_lo, b_hi, b_bins = _integer_bins(float(f.min), float(f.max), bins)
            raw_lo, raw_hi, a_bins = _integer_bins(raw_lo, raw_hi, bins)
        else:
            b_lo, b_hi, b_bins, a_bins = float(f.min), float(f.max), bins, bins
        if abs(mean) > RAW_EXACT:
            # Past 2**53 raw float64 values cannot resolve sigma: the "after" histogram
            # counts the transformed values (see observed_after), over edges computed exactly.
            lo, hi, a_bins = _exact_after(col, plan.mode, k, bins)
        else:
            lo, hi = scale_array(np.array([raw_lo, raw_hi]), col, plan.mode)
        out[col.name] = HistogramSpec(before=Histogram.empty(b_lo, b_hi, b_bins),
                                      after=Histogram.empty(float(lo), float(hi), a_bins),
                                      raw_lo=raw_lo, raw_hi=raw_hi)
    return out


def _exact_after(col: Any, mode: str, k: float, max_bins: int) -> tuple[float, float, int]:
    """"After" edges of a huge integer feature: integer bins mapped through the exact mean."""
    from fractions import Fraction

    mean = Fraction(float(col.mean[-1])) + Fraction(float(col.residual[-1]))
    std = Fraction(float(col.std[-1]))
    first, last = math.ceil(mean - Fraction(k) * std), math.floor(mean + Fraction(k) * std)
    if last < first:
        first = last = round(mean)
    width = math.ceil((last - first + 1) / max_bins)
    count = math.ceil((last - first + 1) / width)
    lo, hi = first - Fraction(1, 2), first - Fraction(1, 2) + count * width
    if mode == "scale":
        return float(lo / std), float(hi / std), count
    shift = (lo - mean, hi - mean)
    return (float(shift[0] / std), float(shift[1] / std), count) if mode == "standard" else \
        (float(shift[0]), float(shift[1]), count)


def _integer_bins(lo: float, hi: float, max_bins: int) -> tuple[float, float, int]:
    """Edges at half-integers covering the integers in [lo, hi], each bin w integers wide."""
    first, last = math.ceil(lo), math.floor(hi)
    if last < first:
        first = last = round((lo + hi) / 2)
    n = last - first + 1
    width = math.ceil(n / max_bins)
    count = math.ceil(n / width)
    return first - 0.5, first - 0.5 + count * width, count
