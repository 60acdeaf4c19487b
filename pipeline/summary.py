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
page shows).  :class:`pipeline.tally.Tally` counts them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
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


def _column(dtype: Any, fill: float = 0) -> Any:
    return field(default_factory=lambda: np.full(0, fill, dtype=dtype))


@dataclass(frozen=True, eq=False)
class KeyMoments:
    """Per key index, the :class:`Moments` of z of its rows, as columns (no object per key).

    ``index`` is ascending; row ``i`` of the other arrays is key ``index[i]``'s
    ``Moments(count, missing, shift=shift, offset=offset, m2, minimum, maximum)``
    (the extremes are ±inf where ``count`` is 0).  :meth:`merge` is
    :meth:`Moments.merge` key by key, the same formula vectorised (100,000 keys
    merge in milliseconds); indexing gives one key's :class:`Moments`.
    """

    index: np.ndarray = _column(np.int64)
    count: np.ndarray = _column(np.int64)
    missing: np.ndarray = _column(np.int64)
    shift: np.ndarray = _column(np.float64)
    offset: np.ndarray = _column(np.float64)
    m2: np.ndarray = _column(np.float64)
    minimum: np.ndarray = _column(np.float64, np.inf)
    maximum: np.ndarray = _column(np.float64, -np.inf)

    def merge(self, other: KeyMoments) -> KeyMoments:
        if not other.index.size:
            return self
        if not self.index.size:
            return other
        index, (a, b) = _union(self.index, other.index), (self, other)
        if index.size != self.index.size or index.size != other.index.size:
            a, b = self._spread(index), other._spread(index)
        na, nb = a.count, b.count
        n = np.maximum(na + nb, 1)
        first, both = na == 0, (na > 0) & (nb > 0)  # one side empty: the other as it is
        delta = (b.shift - a.shift) + (b.offset - a.offset)
        offset = np.where(both, a.offset + delta * (nb / n), np.where(first, b.offset, a.offset))
        m2 = np.where(both, a.m2 + b.m2 + delta * delta * (na * nb / n), a.m2 + b.m2)
        return KeyMoments(index=index, count=na + nb, missing=a.missing + b.missing,
                          shift=np.where(first, b.shift, a.shift), offset=offset, m2=m2,
                          minimum=np.minimum(a.minimum, b.minimum),
                          maximum=np.maximum(a.maximum, b.maximum))

    def _spread(self, index: np.ndarray) -> KeyMoments:
        """These columns on ``index`` (a superset of ``self.index``), empty keys filled in."""
        at = np.searchsorted(index, self.index) if self.index.size else self.index
        columns = {}
        for name in _KEY_COLUMNS:
            column = np.full(index.size, _EMPTY.get(name, 0), dtype=getattr(self, name).dtype)
            column[at] = getattr(self, name)
            columns[name] = column
        return KeyMoments(index=index, **columns)

    def __len__(self) -> int:
        return int(self.index.size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.index.tolist())

    def __contains__(self, key: object) -> bool:
        i = int(np.searchsorted(self.index, key)) if isinstance(key, int) else self.index.size
        return i < self.index.size and int(self.index[i]) == key

    def __getitem__(self, key: int) -> Moments:
        if key not in self:
            raise KeyError(key)
        i = int(np.searchsorted(self.index, key))
        count = int(self.count[i])
        return Moments(count=count, missing=int(self.missing[i]), shift=float(self.shift[i]),
                       offset=float(self.offset[i]), m2=float(self.m2[i]),
                       minimum=float(self.minimum[i]) if count else None,
                       maximum=float(self.maximum[i]) if count else None)

    def to_dict(self) -> dict[str, list[Any]]:
        """Column by column (``index``, ``count``, ... ``min``, ``max``; no extremes: null),
        as :meth:`from_dict` reads it: compact, and quick to write for 100,000 keys."""
        d: dict[str, list[Any]] = {"index": self.index.tolist()}
        for name, key in zip(_KEY_COLUMNS, _KEY_NAMES, strict=True):
            values = getattr(self, name).tolist()
            if name in _EMPTY:
                values = [v if n else None for v, n in zip(values, self.count.tolist(),
                                                            strict=True)]
            d[key] = values
        return d

    @classmethod
    def from_dict(cls, d: dict[str, list[Any]]) -> KeyMoments:
        index = np.array(d["index"], dtype=np.int64)
        if index.ndim != 1 or (index[1:] <= index[:-1]).any():
            raise ValueError("key indices not in increasing order")
        columns = {}
        for name, key in zip(_KEY_COLUMNS, _KEY_NAMES, strict=True):
            values = d[key]
            if len(values) != index.size:
                raise ValueError(f"{len(values)} key {key} values for {index.size} keys")
            if name in _EMPTY:
                values = [_EMPTY[name] if v is None else v for v in values]
            columns[name] = np.array(values, dtype=np.int64 if name in ("count", "missing")
                                     else np.float64)
        return cls(index=index, **columns)


_KEY_COLUMNS = ("count", "missing", "shift", "offset", "m2", "minimum", "maximum")
_KEY_NAMES = ("count", "missing", "shift", "offset", "m2", "min", "max")  # as Moments.to_dict
_EMPTY = {"minimum": np.inf, "maximum": -np.inf}  # the extremes of a key with no value


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sorted union of two nonempty sorted arrays of key indices (a dense range: no sort)."""
    if np.array_equal(a, b):
        return a
    lo, hi = min(a[0], b[0]), max(a[-1], b[-1])
    seen = np.zeros(int(hi - lo) + 1, dtype=bool)
    seen[a - lo] = True
    seen[b - lo] = True
    return np.flatnonzero(seen) + lo


@dataclass(frozen=True, eq=False)
class Summary:
    """What was written of one feature, in z (see the module docstring); merges exactly.

    ``fine`` holds the counts of fine bins ``first .. first + len(fine) - 1``
    (bin ``i`` is [-SPAN + i*STEP, -SPAN + (i+1)*STEP)); ``low`` and ``high``
    the tails: bin ``k`` holds ``SPAN * 2**(k/TAIL_BINS) <= |z| < SPAN * 2**((k+1)/TAIL_BINS)``.
    ``keys``: per key index of the plan (``-1``: unseen keys made missing), the
    moments of that key's rows (:class:`KeyMoments`).
    """

    moments: Moments = field(default_factory=Moments)
    first: int = 0
    fine: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    low: dict[int, int] = field(default_factory=dict)
    high: dict[int, int] = field(default_factory=dict)
    beyond: int = 0
    keys: KeyMoments | None = None

    def merge(self, other: Summary) -> Summary:
        first, fine = _add_spans(self.first, self.fine, other.first, other.fine)
        keys = None
        if self.keys is not None or other.keys is not None:
            keys = (self.keys or KeyMoments()).merge(other.keys or KeyMoments())
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
            d["keys"] = self.keys.to_dict()
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
                   keys=None if keys is None else KeyMoments.from_dict(keys))


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
