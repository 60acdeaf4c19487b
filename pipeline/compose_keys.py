"""Per-key drift between two fits with ``--group-by``: :func:`diff_keys`.

The rule is :func:`pipeline.compose.drift`'s, applied to every key and feature at
once with numpy: the shift of a key's mean in units of its old σ, the ratio of
its σs, flagged past the same limits.  Means are compared as stored float64
numbers (not the exact double-double means the feature-level ``diff`` uses): at
mean 1e9 and σ 1e-3 that moves a shift by at most 1e-4 σ, far below any limit.
A key present in only one of the fits is flagged too (its rows would be
transformed with the global statistics, or no longer be seen), as a feature
present in only one is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .artifact import FittedStats
from .artifact_keys import KeyTable, from_mapping

Key = tuple[Any, ...]


@dataclass(frozen=True)
class KeyDrift:
    """How one feature of one key moved; ``note`` says when the key is on one side only."""

    key: Key
    feature: str
    shift: float
    ratio: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | str | None:
            return x if math.isfinite(x) else None if math.isnan(x) else \
                ("inf" if x > 0 else "-inf")

        return {"key": list(self.key), "feature": self.feature, "shift": num(self.shift),
                "ratio": num(self.ratio), "note": self.note}


@dataclass(frozen=True)
class KeysDiff:
    """The per-key comparison: keys compared, the drifted (key, feature) pairs, one-sided keys."""

    by: tuple[str, ...]
    compared: int
    drifted: list[KeyDrift]
    only_old: list[Key]
    only_new: list[Key]

    @property
    def flagged(self) -> bool:
        return bool(self.drifted or self.only_old or self.only_new)

    def to_dict(self) -> dict[str, Any]:
        return {"by": list(self.by), "compared": self.compared,
                "drifted_keys": len({d.key for d in self.drifted}),
                "drifted": [d.to_dict() for d in self.drifted],
                "only_old": [list(k) for k in self.only_old],
                "only_new": [list(k) for k in self.only_new]}


def key_table(stats: FittedStats) -> KeyTable:
    assert stats.groups is not None
    return from_mapping(stats.groups.keys, {n: f.dtype for n, f in stats.features.items()},
                        stats.ddof)


def diff_keys(old: FittedStats, new: FittedStats, *, max_shift: float, max_ratio: float
              ) -> KeysDiff | None:
    """Per key and feature, drift past the limits; ``None`` unless both fits have keys.

    Per-key entries without exact moments (hand-written, format 2) are compared too.
    """
    if old.groups is None or new.groups is None or old.groups.by != new.groups.by:
        return None
    a, b = key_table(old), key_table(new)
    where = b.index
    common = [(i, where[k]) for i, k in enumerate(a.key_list) if k in where]
    ia = np.array([i for i, _ in common], dtype=np.int64)
    ib = np.array([j for _, j in common], dtype=np.int64)
    drifted: list[KeyDrift] = []
    for name in a.columns:
        if name not in b.columns or not len(common):
            continue
        (ma, sa, _), (mb, sb, _) = a.derived[name], b.derived[name]
        has = (a.columns[name].count[ia] > 0) & (b.columns[name].count[ib] > 0)
        delta = mb[ib] - ma[ia]
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(sa[ia] > 0, delta / sa[ia],
                             np.where(delta == 0, 0.0, np.copysign(np.inf, delta)))
            ratio = np.where(sa[ia] > 0, sb[ib] / sa[ia], np.where(sb[ib] == 0, 1.0, np.inf))
        bad = has & ((np.abs(shift) > max_shift) | (ratio > max_ratio) | (ratio < 1 / max_ratio))
        drifted += [KeyDrift(a.key_list[int(ia[i])], name, float(shift[i]), float(ratio[i]))
                    for i in np.flatnonzero(bad).tolist()]
    drifted.sort(key=lambda d: (-abs(d.shift) if math.isfinite(d.shift) else -math.inf,
                                a.index[d.key], d.feature))
    only_old = [k for k in a.key_list if k not in where]
    only_new = [k for k in b.key_list if k not in a.index]
    return KeysDiff(old.groups.by, len(common), drifted, only_old, only_new)


def diff_report(old: FittedStats, new: FittedStats, *, max_shift: float, max_ratio: float,
                as_json: bool) -> tuple[str, bool]:
    """``zscore diff``'s output (a table, or JSON) and whether anything drifted.

    Per feature (:func:`pipeline.compose.diff`) and, when both fits have keys, per key.
    """
    import json

    from .compose import diff
    from .display import drift_table, keys_drift_table

    drifts = diff(old, new, max_shift=max_shift, max_ratio=max_ratio)
    keyed = diff_keys(old, new, max_shift=max_shift, max_ratio=max_ratio)
    flagged = [d for d in drifts if d.flagged]
    if as_json:
        text = json.dumps({"max_shift": max_shift, "max_ratio": max_ratio,
                           "flagged": len(flagged), "features": [d.to_dict() for d in drifts],
                           **({"keys": keyed.to_dict()} if keyed else {})}, indent=1)
    else:
        text = drift_table(drifts, max_shift, max_ratio) + (
            "\n" + keys_drift_table(keyed, max_shift, max_ratio) if keyed else "")
    return text, bool(flagged) or (keyed is not None and keyed.flagged)
