"""Checks of a format 3 ``groups`` section (per-key arrays, see :mod:`pipeline.artifact_keys`).

Called by :func:`pipeline.artifact_fields.check` with its checker, which names the
field of the first problem (``groups.features.x.m2[17]``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .artifact_keys import _NUMBERS
from .stats import MAX_STD, MIN_STD


def key_value(k: Any) -> bool:
    """Whether ``k`` is a valid key value: a JSON scalar, integers within 64 bits."""
    if isinstance(k, int) and not isinstance(k, bool):
        return -(2**63) <= k < 2**64
    if isinstance(k, float):
        return math.isfinite(k)
    return k is None or isinstance(k, str | bool)


def check_columnar(c: Any, d: Any, features: Mapping[str, Any], ddof: int) -> None:
    """Check a format 3 ``groups`` section; ``c`` is :mod:`pipeline.artifact_fields`' checker.

    Per entry: counts are integers in range (``inf <= missing``, ``count + missing``
    at most the feature's global ``count + missing``); a key with values has
    finite shift, offset, m2 >= 0, min <= max within the feature's range, integers
    for integer features; one without has nulls there.  Keys are JSON scalars and
    appear once.  The mean and std are derived, so they cannot disagree.
    """
    c.object(d, "groups", ("by", "keys", "features"))
    by = c.get(d, "by", "groups", "list")
    if not by or not all(isinstance(b, str) for b in by) or len(set(by)) != len(by):
        c.fail("groups.by", "must be a non-empty list of distinct column names")
    keys = c.object(c.get(d, "keys", "groups", "object"), "groups.keys", tuple(by))
    n = None
    for b in by:
        values = c.get(keys, b, "groups.keys", "list")
        n = len(values) if n is None else n
        if len(values) != n:
            c.fail(f"groups.keys.{b}", f"has {len(values):,} values, not {n:,} as the others")
        bad = next((i for i, v in enumerate(values) if not key_value(v)), None)
        if bad is not None:
            c.fail(f"groups.keys.{b}[{bad}]", "must be a JSON scalar (integers within 64 bits)")
    tuples = list(zip(*(keys[b] for b in by), strict=True))
    seen: dict[str, int] = {}
    for i, t in enumerate(tuples):
        if seen.setdefault(repr(t), i) != i:
            c.fail(f"groups.keys[{i}]", f"{list(t)!r} appears twice")
    for name, fd in c.get(d, "features", "groups", "object").items():
        if name not in features:
            c.fail(f"groups.features.{name}", "is not a feature of the statistics")
        _check_feature(c, f"groups.features.{name}", fd, features[name], len(tuples), ddof)


def _check_feature(c: Any, where: str, fd: Any, glob: dict[str, Any], n: int, ddof: int
                   ) -> None:
    fields = ("count", "missing", "inf", *_NUMBERS)
    c.object(fd, where, fields)
    lists = {f: c.get(fd, f, where, "list") for f in fields}
    for f, values in lists.items():
        if len(values) != n:
            c.fail(f"{where}.{f}", f"has {len(values):,} values, not one per key ({n:,})")
    for f in ("count", "missing", "inf"):
        bad = next((i for i, v in enumerate(lists[f]) if type(v) is not int or
                    not 0 <= v <= 2**63), None)
        if bad is not None:
            c.fail(f"{where}.{f}[{bad}]", "must be an integer in [0, 2**63]")
    count = np.array(lists["count"], dtype=object)
    rows = glob["count"] + glob["missing"]
    for i, (a, m, f) in enumerate(zip(lists["count"], lists["missing"], lists["inf"],
                                      strict=True)):
        if f > m:
            c.fail(f"{where}.inf[{i}]", f"is {f}, more than 'missing' ({m})")
        if a + m > rows:
            c.fail(f"{where}.count[{i}]", f"plus 'missing' is {a + m:,}, more than the "
                   f"feature's {rows:,} values")
    has = (count > 0).astype(bool)
    integer = not glob["dtype"].startswith("float")
    for f in _NUMBERS:
        exact = integer and f in ("shift", "min", "max")
        for i, (v, h) in enumerate(zip(lists[f], has.tolist(), strict=True)):
            ok = (v is None) if not h else (type(v) is int if exact else
                                            type(v) in (int, float) and math.isfinite(v))
            if not ok:
                what = ("an integer" if exact else "a finite number") if h else \
                    "null (the key has no value of the feature)"
                c.fail(f"{where}.{f}[{i}]", f"must be {what}")
    _check_ranges(c, where, lists, has, glob)
    _check_spread(c, where, lists, np.flatnonzero(has), ddof)


def _check_ranges(c: Any, where: str, lists: dict[str, list[Any]], has: np.ndarray,
                  glob: dict[str, Any]) -> None:
    idx = np.flatnonzero(has)
    lo = np.array([lists["min"][i] for i in idx], dtype=object)
    hi = np.array([lists["max"][i] for i in idx], dtype=object)
    checks = [("min", (lo < glob["min"]) | (lo > hi), "outside [the feature's min, this max]"),
              ("max", hi > glob["max"], "more than the feature's max"),
              ("m2", np.array([lists["m2"][i] < 0 for i in idx], dtype=bool), "is negative"),
              ("count", np.array([lists["count"][i] < 2 for i in idx], dtype=bool) & (lo < hi),
               "is 1, but min < max needs at least 2 values")]
    for f, bad, what in checks:
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            i = int(idx[int(np.argmax(bad))])
            c.fail(f"{where}.{f}[{i}]", f"is {lists[f][i]!r}: {what}")


def _check_spread(c: Any, where: str, lists: dict[str, list[Any]], idx: np.ndarray,
                  ddof: int) -> None:
    """The shift near [min, max] and offset within the span (as for a feature's moments,
    see :mod:`pipeline.artifact_fields`), and a non-constant key's std, which the load
    derives from m2, within float64's range for squares and at most max - min."""
    def floats(f: str) -> np.ndarray:
        return np.array([float(lists[f][i]) for i in idx], dtype=np.float64)

    lo, hi, shift, offset, m2 = (floats(f) for f in ("min", "max", "shift", "offset", "m2"))
    count = np.array([lists["count"][i] for i in idx], dtype=np.float64)
    w = 2.0**-40 * np.maximum(np.abs(lo), np.abs(hi))
    span = hi / 2 - lo / 2 + (hi / 2 - lo / 2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        std = np.sqrt(m2 / (count - ddof))
    varies = lo < hi
    checks = [("shift", (shift < lo - w) | (shift > hi + w), "outside [min, max]"),
              ("offset", np.abs(offset) > span + w, "more than max - min from the shift"),
              ("m2", varies & ~((std >= MIN_STD) & (std <= MAX_STD)),
               "gives a std outside float64's range for squares (1.5e-154 to 6.7e153)"),
              ("m2", varies & (std > span * (1 + 2.0**-50)), "gives a std more than max - min")]
    for f, bad, what in checks:
        if bad.any():
            i = int(idx[int(np.argmax(bad))])
            c.fail(f"{where}.{f}[{i}]", f"is {lists[f][i]!r}: {what}")
