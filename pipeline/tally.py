"""The report's counting: a task's written values into a :class:`pipeline.summary.Summary`.

A :class:`Tally` sees each feature's values as they are written (see
:func:`pipeline.plan.transform_column`), in the task's worker thread, during the
transform pass; what it counts is described in :mod:`pipeline.summary`.  It is
on the hot path of every default run, so it is written for few passes over the
data, each a numpy call that releases the GIL: per chunk of ``CHUNK`` values a
sum, a minimum, a maximum, a multiply and an add into a per-thread buffer, a
cast to int32 and a widening (see :func:`_scratch`), an ``np.bincount`` and a sum of
squares; nothing per value in Python.
Measured on M (320 million values, 2 busy cores): about 1.9 s of CPU, a tenth
of the run's, half of it the exact histogram (multiply, add, cast, bincount).
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import numpy as np

from .stats import Moments
from .summary import BEYOND, FINE, SPAN, STEP, TAIL_BINS, KeyMoments, Reference, Summary

CHUNK = 1 << 15  # values counted at a time: the temporaries (896 KB at most) fit in L2
_OFFSET = FINE // 2 + 1  # bucket 0: below -SPAN, 1..FINE: fine bins, FINE + 1: at or above SPAN
_EDGES = (_OFFSET - int(BEYOND / STEP), _OFFSET + int(BEYOND / STEP))  # buckets of -4 and 4
_SCRATCH = threading.local()  # per worker thread: the chunk buffers, shared by its tallies


def _scratch() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """This thread's buffers of ``CHUNK`` values: widened chunk, float64, int32 and intp
    temporaries.

    Allocated once per thread, not per tally: a task has a tally per feature, and
    fresh buffers for each cost page faults (1.5 MB a feature) on every task.  The
    bucket indices are truncated to int32 (one vector instruction: 4 µs a chunk,
    against 18 to int64), then widened into the intp buffer (6 µs) for
    ``np.bincount``: given int32, it would widen them itself into a fresh 256 KB
    array, which under a Dask nanny's ``MALLOC_TRIM_THRESHOLD_`` is a new mapping
    faulted in on every call (bincount 138 instead of 32 µs).
    """
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = (np.empty(CHUNK), np.empty(CHUNK),
                                      np.empty(CHUNK, dtype=np.int32),
                                      np.empty(CHUNK, dtype=np.intp))
    return buffers


class Tally:
    """The counts of one feature within one task (mutable; :meth:`result` freezes them).

    A chunk of ``CHUNK`` values (small batches, e.g. 100-row files, are buffered
    and counted together; narrower floats are widened once into a reused buffer)
    is summed (which also finds NaN), its extremes taken, binned by ``t = z * 256
    + offset`` (exact: a power of two), truncated and counted with
    ``np.bincount``, and its squares summed.  Sums of well-conditioned chunks are
    added as plain floats (see :meth:`_moments`); the ±4σ count is read off the
    buckets at the end, corrected only by chunks with values next to ±4.
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
        self.keys = KeyMoments()
        self._pending: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._pending_n = 0

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
        widened, t, index, idx = _scratch()
        wide = values.dtype == np.float64
        for start in range(0, values.size, CHUNK):
            w = values[start:start + CHUNK]
            r = None if rows is None else rows[start:start + CHUNK]
            if not wide:  # float32 or float16: widened once, not by every pass below
                buffer = widened[:w.size]
                np.copyto(buffer, w)
                w = buffer
            total = float(np.add.reduce(w))
            if not math.isfinite(total):  # NaN (missing) in the chunk, or an overflow
                keep = ~np.isnan(w)
                missing = w.size - int(np.count_nonzero(keep))
                self.moments = self.moments.merge(Moments(missing=missing))
                if self.grouped and r is not None and missing:
                    self._key_missing(r[~keep])
                w, r = w[keep], None if r is None else r[keep]
                total = float(np.add.reduce(w))
            z = w if self.identity else self._standard(w, r)
            if not z.size:
                continue
            if not self.identity:
                total = float(np.add.reduce(z))
            lo, hi = float(z.min()), float(z.max())
            self._bin(z, t[:z.size], index[:z.size], idx[:z.size],
                      inside=-SPAN <= lo and hi < SPAN)
            self._moments(z, total, lo, hi, t[:z.size])
            if self.grouped and r is not None:
                self._per_key(z, r)

    def _moments(self, z: np.ndarray, total: float, lo: float, hi: float, t: np.ndarray
                 ) -> None:
        """Add the chunk's moments: as plain sums when that is exact enough.

        ``m2 = sum(z**2) - sum(z)**2 / n`` loses about ``sum(z**2) / m2`` ulps, so
        a chunk is summed only while that ratio is at most 16 (|mean| <= 3.9σ: z
        is in training σ, so this is every chunk short of a gross drift).  The
        sums of such chunks then keep the ratio at most 16 too (the spread between
        chunks only adds to m2), so the final m2 is within 1e-13 of exact.  A
        constant chunk's moments are exact as they are; other chunks (far off,
        overflowing) take the corrected two-pass :meth:`Moments.from_array` and
        are merged with Chan's update.  ``t``: a buffer of ``z``'s size.
        """
        n = z.size
        if lo == hi:
            self.moments = self.moments.merge(Moments(count=n, shift=lo, minimum=lo, maximum=hi))
            return
        np.multiply(z, z, out=t)
        square = float(np.add.reduce(t))
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

    def _bin(self, z: np.ndarray, t: np.ndarray, index: np.ndarray, idx: np.ndarray,
             inside: bool) -> None:
        """Count ``z`` into the buckets; ``t``, ``index`` (int32), ``idx`` (intp): buffers
        of its size; ``inside``: every value is within [-SPAN, SPAN)."""
        np.multiply(z, 1.0 / STEP, out=t)
        t += _OFFSET
        if not inside:
            np.clip(t, 0.0, FINE + 1.0, out=t)
        np.copyto(index, t, casting="unsafe")  # truncation: 0 <= t <= FINE + 1: the floor
        np.copyto(idx, index)
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
        self.keys = self.keys.merge(_key_moments(z, r))

    def _key_missing(self, r: np.ndarray) -> None:
        index, missing = np.unique(r, return_counts=True)
        none = np.zeros(index.size)
        self.keys = self.keys.merge(KeyMoments(
            index=index.astype(np.int64), count=np.zeros(index.size, dtype=np.int64),
            missing=missing.astype(np.int64), shift=none, offset=none, m2=none,
            minimum=np.full(index.size, np.inf), maximum=np.full(index.size, -np.inf)))

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
                       keys=self.keys if self.grouped else None)


def _log_bins(into: dict[int, int], magnitude: np.ndarray) -> None:
    if magnitude.size:
        k = np.floor(np.log2(magnitude / SPAN) * TAIL_BINS).astype(np.int64)
        for key, count in zip(*np.unique(np.maximum(k, 0), return_counts=True), strict=True):
            into[int(key)] = into.get(int(key), 0) + int(count)


def _key_moments(z: np.ndarray, r: np.ndarray) -> KeyMoments:
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
    k = np.flatnonzero(n)
    return KeyMoments(index=k.astype(np.int64) - 1, count=n[k].astype(np.int64),
                      missing=np.zeros(k.size, dtype=np.int64), shift=shift[k],
                      offset=c[k] / n[k], m2=np.maximum(m2[k], 0.0), minimum=lo[k], maximum=hi[k])
