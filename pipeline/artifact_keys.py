"""Per-key statistics in the artifact, columnar (``groups`` of ``format_version`` 3).

Why columnar arrays inside the JSON and not a Parquet side file: one file keeps
everything the artifact already guarantees -- an atomic save (one rename or one
PUT), ``FittedStats.load`` from S3, ``merge``, ``diff`` and serving with one
path -- with no second file to keep in step.  Measured on 100,000 keys of 4
features (``python bench/keys.py``, see docs/benchmarks.md): the per-key layout of
format 2 (an object per key and feature, some 400 bytes each) wrote 162.5 MB; the
arrays below 40.7 MB; the same arrays in a Parquet file 19.4 MB (zstd) or 20.9 MB
(snappy) -- float64 values take 17-19 characters in decimal, 8 bytes that hardly
compress in Parquet.  Half the bytes did not seem worth two files to keep atomic.

Layout::

    "groups": {"by": ["user"],
               "keys": {"user": [17, 42, ...]},          # one list per by column
               "features": {"x": {"count": [...], "missing": [...], "inf": [...],
                                  "shift": [...], "offset": [...], "m2": [...],
                                  "min": [...], "max": [...]}, ...}}

Entry ``i`` of every list belongs to key ``i`` (keys in the canonical order).
Only the exact moments are stored; each key's mean and std are derived at load
with the fit's own arithmetic (:class:`~pipeline.stats.Moments`), so every number
is stored once.  A feature without a value in a key has ``count`` 0 and ``null``
shift, offset, m2, min and max (``missing`` still counts its missing values).
``missing`` includes ``inf``, as in a feature entry.

Format 2 artifacts (an object per key) still load; an artifact whose per-key
entries lack exact moments (hand-written) is written in format 2 again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np

from .keystats import KeyColumn
from .stats import Moments

Key = tuple[Any, ...]
_NUMBERS = ("shift", "offset", "m2", "min", "max")


class KeyTable(Mapping[Key, Mapping[str, Any]]):
    """Per-key statistics held as arrays; a read-only mapping key -> feature -> FeatureStats.

    Looking a key up builds its :class:`~pipeline.artifact.FeatureStats` on demand;
    summaries (``inspect``, ``diff``, ``merge``) use the arrays directly.
    """

    def __init__(self, keys: Sequence[Key], columns: Mapping[str, KeyColumn],
                 dtypes: Mapping[str, str], ddof: int, feature: Callable[..., Any]):
        self.feature = feature  # pipeline.artifact.FeatureStats (not imported: no cycle)
        self.key_list = list(keys)
        self.columns = dict(columns)
        self.dtypes = {n: dtypes[n] for n in self.columns}
        self.ddof = ddof

    # -------------------------------------------------------------- mapping
    @cached_property
    def index(self) -> dict[Key, int]:
        return {k: i for i, k in enumerate(self.key_list)}

    def __getitem__(self, key: Key) -> dict[str, Any]:
        i = self.index[key]
        return {n: self.stats(n, i) for n, c in self.columns.items() if c.count[i] > 0}

    def __iter__(self) -> Iterator[Key]:
        return iter(self.key_list)

    def __len__(self) -> int:
        return len(self.key_list)

    # -------------------------------------------------------------- derived
    @cached_property
    def derived(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per feature: each key's (mean, std, constant), as :meth:`FeatureStats.from_moments`."""
        return {n: derive(c, self.ddof) for n, c in self.columns.items()}

    @cached_property
    def _lists(self) -> dict[str, dict[str, list[Any]]]:
        out = {}
        for n, c in self.columns.items():
            mean, std, const = self.derived[n]
            out[n] = {**c.to_lists(), "mean": mean.tolist(), "std": std.tolist(),
                      "constant": const.tolist()}
        return out

    def stats(self, name: str, i: int) -> Any:
        """Key ``i``'s :class:`~pipeline.artifact.FeatureStats` of feature ``name``."""
        v = {f: lst[i] for f, lst in self._lists[name].items()}
        m = Moments(count=v["count"], missing=v["missing"], inf=v["inf"], shift=v["shift"],
                    offset=v["offset"], m2=v["m2"], minimum=v["lo"], maximum=v["hi"])
        return self.feature(dtype=self.dtypes[name], count=m.count,
                            missing=m.missing + m.inf, mean=v["mean"], std=v["std"],
                            min=m.minimum, max=m.maximum,  # type: ignore[arg-type]
                            constant=v["constant"], moments=m)

    def kernel_arrays(self, name: str, glob: Any, bounds: bool = False) -> tuple[Any, ...]:
        """The kernel's per-key (mean, std, constant, residual, low, high) of ``name``
        (low and high: with ``bounds``, the exact min and max as tuples, for minmax;
        else empty, so no plan ships them to every task unused), ``glob`` (the
        global :class:`~pipeline.artifact.FeatureStats`) last and for keys without a value:
        what :meth:`pipeline.kernel.ColumnPlan.of` builds from one FeatureStats per key,
        without building them (100,000 keys: 0.1 s instead of 18 s)."""
        k = len(self.key_list)
        if name not in self.columns:
            n = k + 1 if bounds else 0
            return (*(np.full(k + 1, v) for v in (glob.mean, glob.std, glob.constant,
                                                  glob.kernel_residual)),
                    (glob.min,) * n, (glob.max,) * n)
        c = self.columns[name]
        mean, std, const = self.derived[name]
        residual = _residual(c, mean)
        residual = np.where(const | (np.abs(residual) <= 1e-15 * std), 0.0, residual)
        has = c.count > 0
        out = []
        for values, g in ((mean, glob.mean), (std, glob.std), (const, glob.constant),
                          (residual, glob.kernel_residual)):
            out.append(np.append(np.where(has, values, g), g))
        low: tuple[Any, ...] = ()
        high: tuple[Any, ...] = ()
        if bounds:
            flags = has.tolist()
            low = (*(v if h else glob.min for v, h in zip(c.lo.tolist(), flags, strict=True)),
                   glob.min)
            high = (*(v if h else glob.max for v, h in zip(c.hi.tolist(), flags, strict=True)),
                    glob.max)
        return out[0], out[1], out[2].astype(bool), out[3], low, high

    # ---------------------------------------------------------------- JSON
    def to_dict(self, by: Sequence[str]) -> dict[str, Any]:
        keys = {b: [k[j] for k in self.key_list] for j, b in enumerate(by)}
        feats = {}
        for n, c in self.columns.items():
            lists = c.to_lists()
            absent = (c.count == 0).tolist()
            d = {"count": lists["count"],
                 "missing": (c.missing + c.inf).tolist(), "inf": lists["inf"]}
            for f, src in zip(_NUMBERS, ("shift", "offset", "m2", "lo", "hi"), strict=True):
                d[f] = [None if a else v for a, v in zip(absent, lists[src], strict=True)]
            feats[n] = d
        return {"by": list(by), "keys": keys, "features": feats}

    @classmethod
    def from_dict(cls, d: dict[str, Any], dtypes: Mapping[str, str], ddof: int,
                  feature: Callable[..., Any]) -> KeyTable:
        """Build from a checked ``groups`` section (see :func:`check_columnar`)."""
        by = d["by"]
        keys = list(zip(*(d["keys"][b] for b in by), strict=True))
        cols = {}
        for n, fd in d["features"].items():
            integer = not dtypes[n].startswith("float")
            zero = 0 if integer else 0.0
            num = {f: [zero if v is None else v for v in fd[f]] for f in _NUMBERS}
            count = np.array(fd["count"], dtype=np.int64)
            inf = np.array(fd["inf"], dtype=np.int64)
            cols[n] = KeyColumn.from_lists(
                {"count": count, "missing": np.array(fd["missing"], dtype=np.int64) - inf,
                 "inf": inf, "shift": num["shift"], "offset": num["offset"], "m2": num["m2"],
                 "lo": num["min"], "hi": num["max"]}, integer)
        return cls(keys, cols, dtypes, ddof, feature)


def derive(c: KeyColumn, ddof: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each key's mean, std and constant flag from its moments (0.0 where no value)."""
    has = c.count > 0
    const = has & (c.lo == c.hi).astype(bool)
    if c.integer:
        small = np.array([abs(s) <= 2**53 for s in c.shift.tolist()], dtype=bool)
        mean = np.where(small, c.shift.astype(np.float64) + c.offset, 0.0)
        for i in np.flatnonzero(~small).tolist():  # float(shift) would round: exact sum
            mean[i] = float(Fraction(int(c.shift[i])) + Fraction(float(c.offset[i])))
        lo = c.lo.astype(np.float64)
    else:
        mean = c.shift + c.offset
        lo = c.lo
    mean = np.where(const, lo, np.where(has, mean, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.sqrt(c.m2 / (c.count - ddof))
    std = np.where(const | ~has, 0.0, std)
    return mean, std, const


def _residual(c: KeyColumn, mean: np.ndarray) -> np.ndarray:
    """``shift + offset - mean`` exactly, rounded (a TwoSum when ``shift`` is a float64)."""
    if c.integer:
        small = np.array([abs(v) <= 2**53 for v in c.shift.tolist()], dtype=bool)
        shift = np.where(small, c.shift, 0).astype(np.float64)
    else:
        small, shift = np.ones(len(c.count), dtype=bool), c.shift
    total = shift + c.offset  # == mean where not constant (mean is this sum)
    back = total - shift
    err = (shift - (total - back)) + (c.offset - back)
    residual = (total - mean) + err
    for i in np.flatnonzero(~small & (c.count > 0)).tolist():
        exact = Fraction(int(c.shift[i])) + Fraction(float(c.offset[i]))
        residual[i] = float(exact - Fraction(float(mean[i])))
    return residual


def columnar(keys: Mapping[Key, Mapping[str, Any]]) -> bool:
    """Whether per-key statistics can be stored as arrays (every entry has exact moments)."""
    return isinstance(keys, KeyTable) or all(
        f.moments is not None for feats in keys.values() for f in feats.values())


def from_mapping(keys: Mapping[Key, Mapping[str, Any]], dtypes: Mapping[str, str],
                 ddof: int) -> KeyTable:
    """A :class:`KeyTable` of per-key :class:`FeatureStats` (exact when they have moments)."""
    if isinstance(keys, KeyTable):
        return keys
    names = list(dict.fromkeys(n for feats in keys.values() for n in feats))
    cols = {}
    for n in names:
        ms = [_moments_of(feats[n], ddof) if n in feats else Moments()
              for feats in keys.values()]
        integer = any(isinstance(m.shift, int) and m.count for m in ms)
        cols[n] = KeyColumn.from_lists(
            {"count": [m.count for m in ms], "missing": [m.missing for m in ms],
             "inf": [m.inf for m in ms], "shift": [m.shift if m.count else 0 for m in ms],
             "offset": [m.offset for m in ms], "m2": [m.m2 for m in ms],
             "lo": [m.minimum if m.count else 0 for m in ms],
             "hi": [m.maximum if m.count else 0 for m in ms]}, integer)
    first = next((f for feats in keys.values() for f in feats.values()), None)
    return KeyTable(list(keys), cols, dtypes, ddof, type(first))


def _moments_of(f: Any, ddof: int) -> Moments:
    """``f``'s exact moments; for a hand-written entry without them, moments that give back
    its mean and std to rounding (for summaries: ``inspect``, ``diff``; never merged, see
    :func:`columnar`)."""
    if f.moments is not None:
        return f.moments  # type: ignore[no-any-return]
    return Moments(count=f.count, missing=f.missing, shift=f.mean, offset=0.0,
                   m2=f.std * f.std * max(f.count - ddof, 1), minimum=f.min, maximum=f.max)


def spread_problem(table: KeyTable, in_range: Any) -> tuple[str, Key, float] | None:
    """The first (feature, key, std) whose non-constant std fails ``in_range``, if any."""
    for n, (_, std, const) in table.derived.items():
        bad = (table.columns[n].count > 0) & ~const & ~in_range(std)
        if bad.any():
            i = int(np.argmax(bad))
            return n, table.key_list[i], float(std[i])
    return None
