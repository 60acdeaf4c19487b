"""Combining and comparing fitted artifacts.

:func:`merge` gives the statistics of the union of disjoint inputs, as if they
had been fitted together (the exact moments merge with Chan's update, to float64
rounding).  :func:`diff` measures how far a new fit drifted from an old one, in
units of the old standard deviation, so a scheduler can stop a pipeline whose
input changed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

from .artifact import FittedStats, now_iso, tool_version
from .artifact_keys import columnar, from_mapping
from .errors import ArtifactError, option
from .feature_stats import FeatureStats, Groups
from .groups import finalize_groups
from .keystats import KeyMoments
from .schema import unify_numeric
from .stats import Moments

MAX_SHIFT = 0.5  # default: flag a mean that moved by more than half an old sigma
MAX_RATIO = 1.5  # default: flag a sigma that grew or shrank by more than 1.5x


def merge(artifacts: Sequence[FittedStats], names: Sequence[str] | None = None) -> FittedStats:
    """The statistics of the union of the (disjoint) inputs of ``artifacts``.

    Parameters
    ----------
    artifacts : list of FittedStats
        Fitted on disjoint data (e.g. different days), with the same features,
        ``ddof`` and ``inf`` policy, and with their ``moments`` (every artifact
        zscore writes has them).
    names : list of str, optional
        How to call each artifact in errors (default "artifact 1", ...).

    Returns
    -------
    FittedStats

    Raises
    ------
    ArtifactError
        Fewer than two artifacts, or they disagree on features, ddof or inf
        policy or weight column (weighted and unweighted statistics never
        merge), or one lacks exact moments, or two have the same input fingerprint
        (the same data twice), or two read a same file (``input.file_digests``,
        see :func:`check_disjoint`).

    Examples
    --------
    >>> jan, feb = FittedStats.load("jan.json"), FittedStats.load("feb.json")  # doctest: +SKIP
    >>> merge([jan, feb]).save("jan-feb.json")                                 # doctest: +SKIP
    """
    labels = list(names) if names else [f"artifact {i + 1}" for i in range(len(artifacts))]
    if len(artifacts) < 2:
        raise ArtifactError("merge needs at least two statistics files")
    first = artifacts[0]
    for label, a in zip(labels[1:], artifacts[1:], strict=True):
        checks: list[tuple[str, Any, Any]] = [
            ("features", list(a.features), list(first.features)),
            ("ddof", a.ddof, first.ddof), ("inf", a.inf, first.inf),
            ("weight column", a.weight, first.weight)]
        for what, mine, theirs in checks:
            same = set(mine) == set(theirs) if what == "features" else mine == theirs
            if not same:
                raise ArtifactError(f"{label} has {what} {_show(mine)} but {labels[0]} has "
                                    f"{_show(theirs)}; only statistics fitted the same way "
                                    "can be merged", path=label)
    prints = [a.input.get("fingerprint") for a in artifacts]
    for i, p in enumerate(prints):
        if p and p in prints[:i]:
            raise ArtifactError(f"{labels[i]} and {labels[prints.index(p)]} were fitted on the "
                                "same input (same fingerprint); merge disjoint inputs only",
                                path=labels[i])
    check_disjoint(artifacts, labels)
    feats: dict[str, FeatureStats] = {}
    for name in first.features:
        pieces = []
        for label, a in zip(labels, artifacts, strict=True):
            m = a.features[name].moments
            if m is None:
                raise ArtifactError(f"{label} has no exact moments for '{name}' (hand-written?); "
                                    "refit it with zscore", path=label, column=name)
            pieces.append(m)
        dtype = _wider([a.features[name].dtype for a in artifacts])
        feats[name] = FeatureStats.from_moments(Moments.merge_all(pieces), dtype, first.ddof)
    groups = _merge_groups(artifacts, labels, first.ddof)
    digest = hashlib.sha256("".join(str(p) for p in prints).encode()).hexdigest()
    source = {"path": [a.input.get("path") for a in artifacts],
              "files": sum(int(a.input.get("files") or 0) for a in artifacts),
              "rows": sum(int(a.input.get("rows") or 0) for a in artifacts),
              "fingerprint": digest, "merged_from": labels}
    digests = [a.input.get("file_digests") for a in artifacts]
    if all(d is not None for d in digests):  # a union only when every input vouches for its files
        source["file_digests"] = {k: v for d in digests for k, v in (d or {}).items()}
    return FittedStats(features=feats, ddof=first.ddof, inf=first.inf, input=source,
                       created=now_iso(), tool_version=tool_version(), groups=groups,
                       weight=first.weight)


def check_disjoint(artifacts: Sequence[FittedStats], labels: Sequence[str]) -> None:
    """Refuse two artifacts that read a same file (same ``input.file_digests`` entry).

    Artifacts written before zscore recorded file digests are compared by their
    whole-input fingerprint only.
    """
    seen: dict[str, int] = {}
    for i, a in enumerate(artifacts):
        for digest in a.input.get("file_digests") or {}:
            j = seen.setdefault(digest, i)
            if j == i:
                continue
            mine, theirs = a.input["file_digests"], artifacts[j].input["file_digests"]
            shared = sorted(mine[d] for d in mine if d in theirs)
            few = ", ".join(shared[:5]) + (f" and {len(shared) - 5:,} more" if len(shared) > 5
                                            else "")
            raise ArtifactError(f"{labels[i]} and {labels[j]} overlap: both were fitted on "
                                f"{len(shared):,} same file(s) ({few}); merge statistics of "
                                "disjoint inputs only (refit one without the shared files, "
                                f"e.g. with {option('filters')})", path=labels[i])


def _merge_groups(artifacts: Sequence[FittedStats], labels: Sequence[str], ddof: int
                  ) -> Groups | None:
    """Per-key statistics merged key by key (keys may differ between inputs)."""
    bys = [a.groups.by if a.groups is not None else None for a in artifacts]
    if all(b is None for b in bys):
        return None
    if len(set(bys)) > 1:
        i = next(i for i, b in enumerate(bys) if b != bys[0])
        raise ArtifactError(f"{labels[i]} has group-by {_show(list(bys[i] or []))} but "
                            f"{labels[0]} has {_show(list(bys[0] or []))}; only statistics "
                            "fitted the same way can be merged", path=labels[i])
    per_artifact: list[KeyMoments] = []
    for label, a in zip(labels, artifacts, strict=True):
        assert a.groups is not None
        if not columnar(a.groups.keys):
            raise ArtifactError(f"{label} has per-key statistics without exact moments "
                                "(hand-written?); refit it with zscore", path=label)
        table = from_mapping(a.groups.keys, {n: f.dtype for n, f in a.features.items()},
                             a.ddof)
        per_artifact.append(KeyMoments(keys=list(table.key_list), columns=dict(table.columns)))
    dtypes = {n: _wider([a.features[n].dtype for a in artifacts]) for n in artifacts[0].features}
    assert bys[0] is not None
    # The same merge, key order and finalize as a fit's per-file group moments.
    return finalize_groups(bys[0], per_artifact, dtypes, ddof)


def _show(value: Any) -> str:
    if value is None:
        return "none (unweighted)"
    return ", ".join(value) if isinstance(value, list) else repr(value)


def _wider(dtypes: Sequence[str]) -> str:
    """The stored type of a feature merged from fits that stored it as ``dtypes``.

    The same rule as for files of one dataset (float16 and float32 give float32).
    """
    types = [pa.from_numpy_dtype(np.dtype(d)) for d in dtypes]
    return str(np.dtype(unify_numeric(types).to_pandas_dtype()))


def _exact_mean(f: FeatureStats) -> Fraction:
    # ``mean`` alone is rounded to float64: at epoch nanoseconds (1.7e18) its ulp is
    # 256 ns, comparable to sigma, so the shift is taken between the exact means.
    return Fraction(f.mean) + Fraction(f.mean_residual)


@dataclass(frozen=True)
class Drift:
    """How one feature moved between two fits."""

    feature: str
    shift: float  # (new mean - old mean) / old std; inf if a constant moved
    ratio: float  # new std / old std; 1.0 when both are constant
    flagged: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | str:
            return x if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")

        return {"feature": self.feature, "shift": num(self.shift), "ratio": num(self.ratio),
                "flagged": self.flagged, "note": self.note}


def diff(old: FittedStats, new: FittedStats, *, max_shift: float = MAX_SHIFT,
         max_ratio: float = MAX_RATIO) -> list[Drift]:
    """Per feature: the mean's shift in old sigmas and the ratio of sigmas, flagged past limits.

    A feature is flagged when ``|shift| > max_shift``, when ``ratio > max_ratio``
    or ``ratio < 1 / max_ratio``, or when it is in only one of the two fits.
    """
    out = []
    for name in list(old.features) + [n for n in new.features if n not in old.features]:
        if name not in new.features or name not in old.features:
            note = "only in the old statistics" if name in old.features else \
                "only in the new statistics"
            out.append(Drift(name, math.nan, math.nan, True, note))
            continue
        o, n = old.features[name], new.features[name]
        out.append(drift(name, _exact_mean(o), o.std, _exact_mean(n), n.std,
                         max_shift=max_shift, max_ratio=max_ratio))
    return out


def drift(name: str, old_mean: float | Fraction, old_std: float,
          new_mean: float | Fraction, new_std: float, *,
          max_shift: float = MAX_SHIFT, max_ratio: float = MAX_RATIO) -> Drift:
    """One feature's :class:`Drift` from its old and new mean and σ (the rule of :func:`diff`).

    The report applies it to the written data in z against the training
    reference (mean 0, σ 1), so its drift flag and ``zscore diff`` agree.
    """
    delta = float(new_mean - old_mean)  # :func:`diff` passes exact means (Fractions)
    if old_std > 0:
        shift = delta / old_std
        ratio = new_std / old_std
    else:  # the old fit was constant
        shift = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        ratio = 1.0 if new_std == 0 else math.inf
    flagged = abs(shift) > max_shift or ratio > max_ratio or ratio < 1 / max_ratio
    return Drift(name, shift, ratio, flagged)
