"""What the report says about the data that was written, counted while writing it.

For every feature, during the transform pass and with no extra read, a task counts the values it
writes (float16, float32 or float64, exactly as stored) in *z*: standard units of the training
statistics, ``z = (w - c) / s`` where ``c`` and ``s`` are the training mean and σ after the
transform (``standard``: ``c = 0, s = 1``, so z is the written value itself; ``scale``: ``c =
mean/σ``, ``s = 1``; ``center``: ``c = 0``, ``s = σ``; ``minmax``: ``c = (mean - min)/r``, ``s =
σ/r`` with r = max - min; per key under ``--group-by``, each row with its own key's numbers).  A
:class:`Summary` holds:

* the moments of z (:class:`pipeline.stats.Moments`: count, missing, min, max, and mean and M2
  to 1e-13 or better, see :meth:`Tally._moments`);
* counts of z in bins of ``STEP`` = 1/256 over [-16, 16) and, beyond, in bins 2**(1/32) apart
  (2.2 % wide): quantiles are read off them to within one bin, and the page says so;
* the exact count of ``|z| > 4``;
* per key (``--group-by``), the moments of z of each key's rows.

Counts are exact integers, identical whatever the number of workers; the moments are merged in
task order, so their last bits may depend on how files were batched (far below the digits the
page shows).  :class:`Tally` says what the counting costs.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from .stats import Moments

STEP = 1.0 / 256  # fine bin width, in training σ (a power of two: z / STEP is exact)
SPAN = 16.0  # fine bins cover [-SPAN, SPAN)
FINE = int(2 * SPAN / STEP)  # 8192 bins
TAIL_BINS = 32  # log bins per doubling of |z| beyond SPAN
BEYOND = 4.0  # "beyond ±4σ": |z| > BEYOND
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
CHUNK = 1 << 15  # values counted at a time: the temporaries stay in L2

_OFFSET = FINE // 2 + 1  # bucket 0: below -SPAN, 1..FINE: fine bins, FINE + 1: at or above SPAN
_EDGES = (_OFFSET - int(BEYOND / STEP), _OFFSET + int(BEYOND / STEP))  # buckets of -4 and 4


@dataclass(frozen=True, eq=False)
class Reference:
    """Per group (global last), the training mean ``center`` and σ ``unit`` after the transform."""

    center: np.ndarray
    unit: np.ndarray

    @property
    def identity(self) -> bool:
        return not self.center.any() and bool((self.unit == 1.0).all())


def reference(col: Any, mode: str, inverse: bool = False) -> Reference:
    """The :class:`Reference` of one feature's plan (a :class:`pipeline.kernel.ColumnPlan`)."""
    const = col.constant
    std = np.where(const, 1.0, col.std)
    if inverse:  # the written values are in the input's units
        center = col.mean.copy() if mode != "scale" else np.where(const, col.mean, 0.0)
        return Reference(center=center, unit=std if mode != "center" else np.ones_like(std))
    if mode == "minmax":  # w = (x - min) / span, so z = (w - (mean - min) / span) / (std / span)
        return Reference(center=np.where(const, 0.0, (col.mean - np.array(col.low, dtype=float))
                                         / col.span),
                         unit=np.where(const, 1.0, std / col.span))
    if mode == "scale":
        return Reference(center=np.where(const, col.mean, col.mean / std), unit=np.ones_like(std))
    return Reference(center=np.zeros_like(std), unit=std if mode == "center" else np.ones_like(std))


@dataclass(frozen=True, eq=False)
class Summary:
    """What was written of one feature, in z (see the module docstring); merges exactly.

    ``fine`` holds the counts of fine bins ``first .. first + len(fine) - 1``
    (bin ``i`` is [-SPAN + i*STEP, -SPAN + (i+1)*STEP)); ``low`` and ``high``
    the tails: bin ``k`` holds ``SPAN * 2**(k/TAIL_BINS) <= |z| < SPAN * 2**((k+1)/TAIL_BINS)``.
    ``keys`` maps a key index of the plan (``-1``: unseen keys made missing) to
    the moments of that key's rows.
    """

    moments: Moments = field(default_factory=Moments)
    first: int = 0
    fine: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    low: dict[int, int] = field(default_factory=dict)
    high: dict[int, int] = field(default_factory=dict)
    beyond: int = 0
    keys: dict[int, Moments] | None = None

    def merge(self, other: Summary) -> Summary:
        first, fine = _add_spans(self.first, self.fine, other.first, other.fine)
        keys = None
        if self.keys is not None or other.keys is not None:
            keys = dict(self.keys or {})
            for k, m in (other.keys or {}).items():
                keys[k] = keys[k].merge(m) if k in keys else m
        return Summary(moments=self.moments.merge(other.moments), first=first, fine=fine,
                       low=dict(Counter(self.low) + Counter(other.low)),
                       high=dict(Counter(self.high) + Counter(other.high)),
                       beyond=self.beyond + other.beyond, keys=keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Summary) and self.to_dict() == other.to_dict()

    # ------------------------------------------------------------- reading
    def regrid(self, lo: float, hi: float, bins: int) -> tuple[np.ndarray, int, int]:
        """Counts in ``bins`` equal bins over [lo, hi), and how many lie below and above.

        ``lo``, ``hi``: fine bin edges in [-SPAN, SPAN], each display bin whole fine bins (exact).
        """
        per = round((hi - lo) / bins / STEP)
        start = round((lo + SPAN) / STEP)
        full = np.zeros(FINE, dtype=np.int64)
        full[self.first:self.first + self.fine.size] = self.fine
        inner = full[start:start + bins * per].reshape(bins, per).sum(axis=1)
        below = sum(self.low.values()) + int(full[:start].sum())
        return inner, below, self.moments.count - below - int(inner.sum())

    def quantile(self, q: float) -> float:
        """The value at rank ``(n - 1) * q`` (numpy's default), to within one bin.

        Each of the two order statistics around that rank is placed within its
        bin by its rank among the bin's values, then the two are interpolated.
        """
        n = self.moments.count
        if n == 0:
            return math.nan
        h = (n - 1) * q
        lo = self._order_statistic(math.floor(h))
        hi = self._order_statistic(min(math.floor(h) + 1, n - 1))
        return lo + (h - math.floor(h)) * (hi - lo)

    def _order_statistic(self, k: int) -> float:
        left, right, counts, cum = self._bins
        b = int(np.searchsorted(cum, k, side="right"))
        value = float(left[b] + (right[b] - left[b]) * (k - (cum[b] - counts[b]) + 0.5)
                      / counts[b])
        m = self.moments  # the exact extremes narrow the first and last bins
        if m.minimum is not None and m.maximum is not None:
            value = min(max(value, float(m.minimum)), float(m.maximum))
        return value

    @cached_property
    def _bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every nonempty bin, in order: left edges, right edges, counts, cumulative counts."""
        low = sorted(self.low.items(), reverse=True)
        high = sorted(self.high.items())
        nz = np.flatnonzero(self.fine)
        fine_left = -SPAN + (self.first + nz) * STEP
        left = np.concatenate([[-_tail_edge(k + 1) for k, _ in low], fine_left,
                               [_tail_edge(k) for k, _ in high]])
        right = np.concatenate([[-_tail_edge(k) for k, _ in low], fine_left + STEP,
                                [_tail_edge(k + 1) for k, _ in high]])
        counts = np.concatenate([[c for _, c in low], self.fine[nz], [c for _, c in high]])
        return left, right, counts, np.cumsum(counts)

    # ------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        nz = np.flatnonzero(self.fine)
        a, b = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        d: dict[str, Any] = {"moments": self.moments.to_dict(), "first": self.first + a,
                             "fine": [int(c) for c in self.fine[a:b]],
                             "low": {str(k): v for k, v in sorted(self.low.items())},
                             "high": {str(k): v for k, v in sorted(self.high.items())},
                             "beyond": self.beyond}
        if self.keys is not None:
            d["keys"] = {str(k): m.to_dict() for k, m in sorted(self.keys.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        fine = np.array([int(c) for c in d["fine"]], dtype=np.int64)
        first = int(d["first"])
        if first < 0 or first + fine.size > FINE or (fine < 0).any():
            raise ValueError(f"fine bins {first}..{first + fine.size} outside 0..{FINE}")
        keys = d.get("keys")
        return cls(moments=Moments.from_dict(d["moments"]), first=first, fine=fine,
                   low={int(k): int(v) for k, v in d["low"].items()},
                   high={int(k): int(v) for k, v in d["high"].items()},
                   beyond=int(d["beyond"]),
                   keys=None if keys is None else {int(k): Moments.from_dict(m)
                                                   for k, m in keys.items()})


def _tail_edge(k: int) -> float:
    return SPAN * 2.0 ** (k / TAIL_BINS)


def _add_spans(a0: int, a: np.ndarray, b0: int, b: np.ndarray) -> tuple[int, np.ndarray]:
    if not a.size:
        return b0, b
    if not b.size:
        return a0, a
    lo, hi = min(a0, b0), max(a0 + a.size, b0 + b.size)
    out = np.zeros(hi - lo, dtype=np.int64)
    out[a0 - lo:a0 - lo + a.size] += a
    out[b0 - lo:b0 - lo + b.size] += b
    return lo, out


class Tally:
    """The counts of one feature within one task (mutable; :meth:`result` freezes them).

    A chunk of ``CHUNK`` values (small batches, e.g. 100-row files, are buffered
    and counted together) is summed (which also finds NaN), its extremes taken,
    binned by ``t = z * 256 + offset`` (exact: a power of two), truncated and
    counted with ``np.bincount``, and its squares summed: about ten numpy passes
    over data in L2.  Sums of well-conditioned chunks are added as plain floats
    (see :meth:`_moments`); the ±4σ count is read off the buckets at the end,
    corrected only by chunks with values next to ±4.
    """

    def __init__(self, ref: Reference, grouped: bool = False):
        self.ref = ref
        self.identity = ref.identity
        self.grouped = grouped
        self.moments = Moments()  # chunks that needed the two-pass moments
        self._n, self._sum, self._squares = 0, 0.0, 0.0  # the others, summed
        self._min, self._max = math.inf, -math.inf
        self.buckets = np.zeros(FINE + 2, dtype=np.int64)
        self.low: dict[int, int] = {}
        self.high: dict[int, int] = {}
        self._edge = 0  # values in the buckets next to ±4 that lie beyond ±4
        self.keys: dict[int, Moments] = {}
        self._pending: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._pending_n = 0
        self._t = np.empty(0)
        self._i = np.empty(0, dtype=np.intp)

    def add(self, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Count written ``values`` (NaN: missing); ``rows``: each row's key index.

        The caller may reuse ``values`` afterwards: what is buffered is copied.
        """
        if values.size < CHUNK:
            self._pending.append((values.copy(), None if rows is None else rows.copy()))
            self._pending_n += values.size
            if self._pending_n >= CHUNK:
                self._flush()
            return
        self._count(values, rows)

    def _flush(self) -> None:
        if self._pending:
            values = np.concatenate([v for v, _ in self._pending])
            rows = None if self._pending[0][1] is None else \
                np.concatenate([r for _, r in self._pending if r is not None])
            self._pending, self._pending_n = [], 0
            self._count(values, rows)

    def _count(self, values: np.ndarray, rows: np.ndarray | None) -> None:
        size = min(values.size, CHUNK)
        if self._t.size < size:
            self._t, self._i = np.empty(size), np.empty(size, dtype=np.intp)
        for start in range(0, values.size, CHUNK):
            w = values[start:start + CHUNK]
            r = None if rows is None else rows[start:start + CHUNK]
            total = float(np.sum(w, dtype=np.float64))
            if not math.isfinite(total):  # NaN (missing) in the chunk, or an overflow
                keep = ~np.isnan(w)
                missing = w.size - int(np.count_nonzero(keep))
                self.moments = self.moments.merge(Moments(missing=missing))
                if self.grouped and r is not None and missing:
                    self._key_missing(r[~keep])
                w, r = w[keep], None if r is None else r[keep]
                total = float(np.sum(w, dtype=np.float64))
            z = w if self.identity else self._standard(w, r)
            if not z.size:
                continue
            if not self.identity:
                total = float(np.sum(z))
            lo, hi = float(z.min()), float(z.max())
            self._bin(z, inside=-SPAN <= lo and hi < SPAN)
            self._moments(z, total, lo, hi)
            if self.grouped and r is not None:
                self._per_key(z, r)

    def _moments(self, z: np.ndarray, total: float, lo: float, hi: float) -> None:
        """Add the chunk's moments: as plain sums when that is exact enough.

        ``m2 = sum(z**2) - sum(z)**2 / n`` loses about ``sum(z**2) / m2`` ulps, so
        a chunk is summed only while that ratio is at most 16 (|mean| <= 3.9σ: z
        is in training σ, so this is every chunk short of a gross drift).  The
        sums of such chunks then keep the ratio at most 16 too (the spread between
        chunks only adds to m2), so the final m2 is within 1e-13 of exact.  Other
        chunks (constant, far off, overflowing) take the corrected two-pass
        :meth:`Moments.from_array` and are merged with Chan's update.
        """
        n = z.size
        t = self._t[:n]
        np.multiply(z, z, out=t, dtype=np.float64)
        square = float(t.sum())
        if math.isfinite(square) and 0.0 < square <= 16.0 * (square - total * total / n):
            self._n += n
            self._sum += total
            self._squares += square
            self._min, self._max = min(self._min, lo), max(self._max, hi)
            return
        self.moments = self.moments.merge(
            Moments.from_array(z, total=total if math.isfinite(total) else None))

    def _standard(self, w: np.ndarray, r: np.ndarray | None) -> np.ndarray:
        ref = self.ref
        if r is None or len(ref.unit) == 1:
            c, s = ref.center[-1], ref.unit[-1]
        else:
            g = np.where(r < 0, len(ref.unit) - 1, r)
            c, s = ref.center[g], ref.unit[g]
        z = np.subtract(w, c, dtype=np.float64)
        z /= s
        return z

    def _bin(self, z: np.ndarray, inside: bool) -> None:
        """Count ``z`` into the buckets; ``inside``: every value is within [-SPAN, SPAN)."""
        t, idx = self._t[:z.size], self._i[:z.size]
        np.multiply(z, 1.0 / STEP, out=t, dtype=np.float64)
        t += _OFFSET
        if not inside:
            np.clip(t, 0.0, FINE + 1.0, out=t)
        np.copyto(idx, t, casting="unsafe")  # truncation: t >= 0, so it is the floor
        b = np.bincount(idx, minlength=FINE + 2)
        # Adding the offset rounds: a value within ~1e-15 of a bin edge may land one bin
        # up.  The tails and the ±4 count are settled on z itself where that could matter.
        if b[0]:
            tail = z[z < -SPAN]
            b[1] += b[0] - tail.size
            b[0] = tail.size
            _log_bins(self.low, -tail)
        if b[-1]:
            tail = z[z >= SPAN]
            b[-2] += b[-1] - tail.size
            b[-1] = tail.size
            _log_bins(self.high, tail)
        self.buckets += b
        lo, hi = _EDGES  # the buckets [-4, -4 + STEP) and [4, 4 + STEP)
        if b[lo - 1] or b[lo]:  # beyond -4, yet not in the buckets result() counts
            self._edge += int(np.count_nonzero(z < -BEYOND)) - int(b[:lo - 1].sum())
        if b[hi - 1] or b[hi]:
            self._edge += int(np.count_nonzero(z > BEYOND)) - int(b[hi + 1:].sum())

    def _per_key(self, z: np.ndarray, r: np.ndarray) -> None:
        for k, m in _key_moments(z, r).items():
            self.keys[k] = self.keys[k].merge(m) if k in self.keys else m

    def _key_missing(self, r: np.ndarray) -> None:
        ks, counts = np.unique(r, return_counts=True)
        for k, c in zip(ks.tolist(), counts.tolist(), strict=True):
            self.keys[k] = self.keys.get(k, Moments()).merge(Moments(missing=c))

    def result(self) -> Summary:
        self._flush()
        moments = self.moments
        if self._n:
            summed = Moments(count=self._n, shift=self._sum / self._n,
                             m2=max(self._squares - self._sum * self._sum / self._n, 0.0),
                             minimum=self._min, maximum=self._max)
            moments = replace(summed.merge(moments), missing=moments.missing)
        lo, hi = _EDGES
        b = self.buckets
        # Buckets below [-4 - STEP, -4) and above [4, 4 + STEP) are beyond ±4 whatever the
        # rounding; the two next to each edge were settled value by value (self._edge).
        beyond = int(b[:lo - 1].sum()) + int(b[hi + 1:].sum()) + self._edge
        fine = b[1:-1]
        nz = np.flatnonzero(fine)
        a, e = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        return Summary(moments=moments, first=a, fine=fine[a:e].copy(), low=dict(self.low),
                       high=dict(self.high), beyond=beyond,
                       keys=dict(self.keys) if self.grouped else None)


def _log_bins(into: dict[int, int], magnitude: np.ndarray) -> None:
    if magnitude.size:
        k = np.floor(np.log2(magnitude / SPAN) * TAIL_BINS).astype(np.int64)
        for key, count in zip(*np.unique(np.maximum(k, 0), return_counts=True), strict=True):
            into[int(key)] = into.get(int(key), 0) + int(count)


def _key_moments(z: np.ndarray, r: np.ndarray) -> dict[int, Moments]:
    """Moments of ``z`` per key index in ``r`` (-1 and up), like :meth:`Moments.from_array`.

    Vectorised over keys: per key the shift is its mean, then the corrected
    two-pass sums (Chan, Golub & LeVeque 1983), as in :mod:`pipeline.stats`.
    """
    g = r + 1
    size = int(g.max()) + 1
    n = np.bincount(g, minlength=size)
    shift = np.bincount(g, weights=z, minlength=size) / np.maximum(n, 1)
    d = z - shift[g]
    c = np.bincount(g, weights=d, minlength=size)
    m2 = np.bincount(g, weights=d * d, minlength=size) - c * c / np.maximum(n, 1)
    lo, hi = np.full(size, np.inf), np.full(size, -np.inf)
    np.minimum.at(lo, g, z)
    np.maximum.at(hi, g, z)
    return {k - 1: Moments(count=int(n[k]), shift=float(shift[k]), offset=float(c[k] / n[k]),
                           m2=max(float(m2[k]), 0.0), minimum=float(lo[k]), maximum=float(hi[k]))
            for k in np.flatnonzero(n).tolist()}
