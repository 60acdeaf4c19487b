"""Per-key moments, columnar: one array per moment over all keys, computed without a Python loop.

``--group-by`` a user id gives some 100,000 keys.  Holding a
:class:`~pipeline.stats.Moments` object per key and feature (and calling
:func:`~pipeline.moments.column_moments` per key and batch) took 65 s and 2.1 GB
for 100,000 keys; here the moments of every key live in a few numpy arrays
(:class:`KeyColumn`) and are computed and merged with vectorized numpy.

The arithmetic is that of :class:`~pipeline.stats.Moments`, key by key: the
corrected two-pass moments about a shift (the key's float64 mean; for integer
features an exact integer, every deviation from it exact before one rounding),
merged with Chan, Golub & LeVeque's update keeping the left side's shift, an empty
side being an identity.  Within a batch, the sums of a key with up to
:data:`SMALL` values are ``np.bincount``'s sequential sums (error below
``SMALL * 2**-53`` of the sum of magnitudes, and the two-pass correction removes
the first order of a shift's error); the few larger keys are summed pairwise on
their own slice, as a global column is.  Files are folded in the canonical order,
so the result is bit-identical whatever the number of workers, and a cached
file's moments (stored exactly: JSON floats round-trip) give the same bits as a
fresh read.

Integer features keep their shifts, minima and maxima as Python ints in object
arrays, so uint64 near 2**64 and int64 epoch nanoseconds lose nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .columns import null_mask, numpy_view
from .exact import exact_difference

Key = tuple[Any, ...]
SMALL = 1024  # keys with more values in one batch are summed pairwise


@dataclass
class KeyColumn:
    """One feature's moments for every key: entry ``i`` of each array is key ``i``'s.

    ``shift``, ``lo`` and ``hi`` are float64 arrays, or object arrays of Python
    ints for integer features; an entry with ``count == 0`` has no values (its
    shift, offset, m2, lo and hi are 0).  ``missing`` excludes ``inf``.
    """

    count: np.ndarray
    missing: np.ndarray
    inf: np.ndarray
    shift: np.ndarray
    offset: np.ndarray
    m2: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    FIELDS = ("count", "missing", "inf", "shift", "offset", "m2", "lo", "hi")

    @property
    def integer(self) -> bool:
        return self.shift.dtype == object

    @classmethod
    def empty(cls, n: int, integer: bool) -> KeyColumn:
        def zeros() -> np.ndarray:
            return np.array([0] * n, dtype=object) if integer else np.zeros(n)

        ints = [np.zeros(n, dtype=np.int64) for _ in range(3)]
        return cls(ints[0], ints[1], ints[2], zeros(), np.zeros(n), np.zeros(n), zeros(),
                   zeros())

    def extended(self, n: int) -> KeyColumn:
        """This column with ``n`` empty entries appended (for keys new in a later file)."""
        more = KeyColumn.empty(n, self.integer)
        return KeyColumn.of({f: np.concatenate([getattr(self, f), getattr(more, f)])
                             for f in self.FIELDS})

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray]) -> KeyColumn:
        return cls(**arrays)

    def take(self, order: np.ndarray) -> KeyColumn:
        return KeyColumn.of({f: getattr(self, f)[order] for f in self.FIELDS})

    def to_lists(self) -> dict[str, list[Any]]:
        """JSON-safe lists (floats round-trip exactly; ints stay ints)."""
        return {f: getattr(self, f).tolist() for f in self.FIELDS}

    @classmethod
    def from_lists(cls, d: dict[str, Any], integer: bool) -> KeyColumn:
        def num(v: list[Any]) -> np.ndarray:
            return np.array(v, dtype=object) if integer else np.array(v, dtype=np.float64)

        return cls(count=np.array(d["count"], dtype=np.int64),
                   missing=np.array(d["missing"], dtype=np.int64),
                   inf=np.array(d["inf"], dtype=np.int64), shift=num(d["shift"]),
                   offset=np.array(d["offset"], dtype=np.float64),
                   m2=np.array(d["m2"], dtype=np.float64), lo=num(d["lo"]), hi=num(d["hi"]))


@dataclass
class KeyMoments:
    """Per-key moments of several features: ``keys[i]`` is entry ``i`` of every column."""

    keys: list[Key] = field(default_factory=list)
    columns: dict[str, KeyColumn] = field(default_factory=dict)

    def fold(self, part: KeyMoments) -> None:
        """Merge ``part`` into this (in place), key by key: ``self`` is the left side."""
        if not self.keys:
            self.keys, self.columns = list(part.keys), dict(part.columns)
            return
        index = {k: i for i, k in enumerate(self.keys)}
        new = [k for k in part.keys if k not in index]
        for k in new:
            index[k] = len(index)
        self.keys.extend(new)
        where = np.fromiter((index[k] for k in part.keys), dtype=np.int64, count=len(part.keys))
        for name, col in part.columns.items():
            mine = self.columns.get(name)
            mine = KeyColumn.empty(len(self.keys), col.integer) if mine is None \
                else mine.extended(len(new)) if new else mine
            self.columns[name] = merge_at(mine, where, col)

    def to_payload(self) -> dict[str, Any]:
        """A JSON-safe form (the cache's), exact."""
        return {"keys": [list(k) for k in self.keys],
                "columns": {n: {"integer": c.integer, **c.to_lists()}
                            for n, c in self.columns.items()}}

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> KeyMoments:
        return cls(keys=[tuple(k) for k in p["keys"]],
                   columns={n: KeyColumn.from_lists(c, bool(c["integer"]))
                            for n, c in p["columns"].items()})


# ------------------------------------------------------------------- merge
def merge_at(a: KeyColumn, where: np.ndarray, b: KeyColumn) -> KeyColumn:
    """``a`` with ``b``'s entry ``j`` merged into its entry ``where[j]`` (Chan's update)."""
    out = KeyColumn.of({f: getattr(a, f).copy() for f in KeyColumn.FIELDS})
    if b.integer != a.integer:  # an integer column in one file, floating in another
        for f in ("shift", "lo", "hi"):
            setattr(out, f, getattr(out, f).astype(object))
        b = KeyColumn.of({f: getattr(b, f).astype(object) if f in ("shift", "lo", "hi")
                          else getattr(b, f) for f in KeyColumn.FIELDS})
    na, nb = a.count[where], b.count
    out.missing[where] += b.missing
    out.inf[where] += b.inf
    both = (na > 0) & (nb > 0)
    only_b = (na == 0) & (nb > 0)
    ib = where[only_b]
    for f in ("count", "shift", "offset", "m2", "lo", "hi"):
        getattr(out, f)[ib] = getattr(b, f)[only_b]
    if both.any():
        i = where[both]
        n_a, n_b = na[both], nb[both]
        n = n_a + n_b
        delta = _difference(b.shift[both], a.shift[i]) + (b.offset[both] - a.offset[i])
        out.offset[i] = a.offset[i] + delta * (n_b / n)
        out.m2[i] = a.m2[i] + b.m2[both] + delta * delta * ((n_a * n_b) / n)
        out.count[i] = n
        out.lo[i] = np.minimum(a.lo[i], b.lo[both])
        out.hi[i] = np.maximum(a.hi[i], b.hi[both])
    return out


def _difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x - y`` rounded once: exact Python-int subtraction for integer shifts."""
    if x.dtype == object or y.dtype == object:
        return np.array([float(p - q) if isinstance(p, int) and isinstance(q, int)
                         else float(p) - float(q) for p, q in zip(x, y, strict=True)],
                        dtype=np.float64)
    return x - y


# ----------------------------------------------------------------- compute
def batch_key_moments(table: pa.Table, features: Sequence[str], code: np.ndarray,
                      keys: list[Key]) -> KeyMoments:
    """Per-key moments of ``features`` of one batch; ``code[r]`` is row ``r``'s key index."""
    order = np.argsort(code, kind="stable")
    bounds = np.searchsorted(code[order], np.arange(len(keys) + 1))
    cols = {}
    for name in features:
        col = table.column(name)
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        cols[name] = column_key_moments(arr, code, len(keys), order, bounds)
    return KeyMoments(keys=list(keys), columns=cols)


def column_key_moments(arr: pa.Array, code: np.ndarray, k: int, order: np.ndarray,
                       bounds: np.ndarray) -> KeyColumn:
    """One column's moments per key (``order`` sorts rows by key, ``bounds`` delimits keys)."""
    x = numpy_view(arr)
    bad = null_mask(arr)
    inf = np.zeros(len(x), dtype=bool)
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        inf = ~finite & ~np.isnan(x) & ~bad
        bad = bad | ~finite
    missing = bad & ~inf
    valid = ~bad
    vc = code[valid]
    count = np.bincount(vc, minlength=k).astype(np.int64)
    col = KeyColumn.empty(k, x.dtype.kind in "iu")
    col.count = count
    col.missing = np.bincount(code[missing], minlength=k).astype(np.int64)
    col.inf = np.bincount(code[inf], minlength=k).astype(np.int64)
    vx = x[valid]
    if not vx.size:
        return col
    has = count > 0
    n = np.where(has, count, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.bincount(vc, weights=vx, minlength=k)
    if col.integer:
        shift, lo, hi = _integer_shift(vx, vc, k, total / n)
        d = exact_difference(vx, shift[vc]) if vx.dtype.itemsize == 8 else \
            (vx.astype(np.int64) - shift[vc]).astype(np.float64)
        col.shift, col.lo, col.hi = shift.astype(object), lo.astype(object), hi.astype(object)
    else:
        xd = vx.astype(np.float64)
        shift = total / n
        over = has & ~np.isfinite(shift)  # the sum overflowed: values near float64's max
        if over.any():
            first = np.full(k, -1, dtype=np.int64)
            first[vc[::-1]] = np.arange(len(vc) - 1, -1, -1)
            shift[over] = xd[first[over]]
        d = xd - shift[vc]
        col.lo, col.hi = np.full(k, np.inf), np.full(k, -np.inf)
        np.minimum.at(col.lo, vc, xd)
        np.maximum.at(col.hi, vc, xd)
        col.lo[~has], col.hi[~has] = 0.0, 0.0
        col.shift = np.where(has, shift, 0.0)
    c = np.bincount(vc, weights=d, minlength=k)
    with np.errstate(over="ignore"):  # out of range: refused by the fit
        sq = np.bincount(vc, weights=d * d, minlength=k)
    big = np.flatnonzero(count > SMALL)
    if big.size:  # pairwise sums for the large keys, on their rows in order
        pos = np.cumsum(valid) - 1
        for g in big.tolist():
            rows = order[bounds[g]:bounds[g + 1]]
            dg = d[pos[rows[valid[rows]]]]
            c[g] = float(dg.sum())
            with np.errstate(over="ignore"):
                sq[g] = float(np.square(dg).sum())
    col.offset = np.where(has, c / n, 0.0)
    col.m2 = np.where(has, np.maximum(sq - c * c / n, 0.0), 0.0)
    return col


def _integer_shift(vx: np.ndarray, vc: np.ndarray, k: int, mean: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per key: an integer shift near the mean within [min, max], and the min and max."""
    wide = vx if vx.dtype.itemsize == 8 else vx.astype(np.int64)
    info = np.iinfo(wide.dtype)
    lo = np.full(k, info.max, dtype=wide.dtype)
    hi = np.full(k, info.min, dtype=wide.dtype)
    np.minimum.at(lo, vc, wide)
    np.maximum.at(hi, vc, wide)
    # float(info.max) rounds up past the type: clip to the largest float64 below it
    top = np.nextafter(float(info.max), 0.0)
    guess = np.clip(np.nan_to_num(np.rint(mean)), float(info.min), top).astype(wide.dtype)
    shift = np.minimum(np.maximum(guess, lo), hi)
    empty = lo > hi
    lo[empty], hi[empty], shift[empty] = 0, 0, 0
    return shift, lo, hi
