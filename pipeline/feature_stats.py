"""The entries of a statistics artifact: one feature's statistics, and per-key statistics.

:class:`FeatureStats` (one feature) and :class:`Groups` (``--group-by``) are what
:class:`pipeline.artifact.FittedStats` holds, and all that the kernel, the plan and
the exports read of it.  They live apart from ``FittedStats`` so that
``FittedStats`` can offer the exports as methods (:meth:`~pipeline.FittedStats.to_sql`,
:meth:`~pipeline.FittedStats.to_onnx`) while the exports, through the plan, read
these entries: no import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from .stats import Moments

__all__ = ["FeatureStats", "Groups", "Key", "Statistics", "feature_from_dict", "groups_from_dict"]


@dataclass(frozen=True)
class FeatureStats:
    """Fitted statistics of one feature.

    ``mean`` and ``std`` are final (``std`` uses the artifact's ``ddof``;
    0.0 for a constant column).  ``moments`` is ``None`` for hand-written
    artifacts, which can transform but not merge.
    """

    dtype: str
    count: int
    missing: int
    mean: float
    std: float
    min: float | int
    max: float | int
    constant: bool
    moments: Moments | None = None
    weight: float | None = None  # a weighted fit's total weight of the ``count`` values

    @classmethod
    def from_moments(cls, m: Moments, dtype: str, ddof: int) -> FeatureStats:
        assert m.minimum is not None and m.maximum is not None
        # A constant column's mean is its value, exactly: x - mean is then 0.0.
        mean = float(m.minimum) if m.constant else m.mean
        return cls(dtype=dtype, count=m.count, missing=m.missing + m.inf, mean=mean,
                   std=m.std(ddof), min=m.minimum, max=m.maximum, constant=m.constant,
                   moments=m, weight=m.total_weight if m.weighted else None)

    @property
    def mean_residual(self) -> float:
        """The exact mean minus ``mean``, rounded: the low half of a double-double mean.

        At mean 1e9 with std 1e-3, ``mean`` alone is off by up to half an ulp
        (6e-8), which would shift every standardized value by up to 6e-5; the
        transform subtracts ``mean`` then this residual.
        """
        if self.moments is None or self.constant:
            return 0.0
        exact = Fraction(self.moments.shift) + Fraction(self.moments.offset)
        return float(exact - Fraction(self.mean))

    @property
    def kernel_residual(self) -> float:
        """:attr:`mean_residual` where it moves a result by more than rounding, else 0.0.

        (Subtracting it costs a pass over the data, so the kernel skips a zero.)
        """
        r = self.mean_residual
        return r if abs(r) > 1e-15 * self.std else 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"dtype": self.dtype, "count": self.count, "missing": self.missing,
                             "mean": self.mean, "std": self.std, "min": self.min,
                             "max": self.max, "constant": self.constant}
        if self.weight is not None:
            d["weight"] = self.weight
        if self.moments is not None:
            d["moments"] = {"shift": self.moments.shift, "offset": self.moments.offset,
                            "m2": self.moments.m2, "inf": self.moments.inf}
            if self.moments.weight is not None:
                d["moments"].update(weight=self.moments.weight, wexp=self.moments.wexp)
        return d


Key = tuple[Any, ...]


@dataclass(frozen=True)
class Groups:
    """Per-key statistics: ``keys`` maps a key tuple (one value per ``by`` column,
    JSON scalars) to the statistics of each feature within that key.  A feature
    with no value in a group is absent from that group's mapping.
    """

    by: tuple[str, ...]
    keys: Mapping[Key, Mapping[str, FeatureStats]]

    def to_dict(self, dtypes: Mapping[str, str] | None = None, ddof: int = 0
                ) -> dict[str, Any]:
        """Columnar (format 3) when every entry has exact moments, else per-key objects."""
        from .artifact_keys import columnar, from_mapping

        if dtypes is not None and columnar(self.keys):
            return from_mapping(self.keys, dtypes, ddof).to_dict(self.by)
        return {"by": list(self.by),
                "keys": [{"key": list(k), "features": {n: f.to_dict() for n, f in v.items()}}
                         for k, v in self.keys.items()]}

    @property
    def table(self) -> Any:
        """The statistics as arrays (:class:`pipeline.artifact_keys.KeyTable`), or ``None``
        for per-key entries without exact moments."""
        from .artifact_keys import KeyTable

        return self.keys if isinstance(self.keys, KeyTable) else None


def feature_from_dict(d: dict[str, Any]) -> FeatureStats:
    """A checked feature entry as a :class:`FeatureStats`."""
    moments = None
    if "moments" in d:
        md = d["moments"]
        moments = Moments(count=d["count"], missing=d["missing"] - md["inf"], inf=md["inf"],
                          shift=md["shift"], offset=float(md["offset"]), m2=float(md["m2"]),
                          minimum=d["min"], maximum=d["max"],
                          weight=float(md["weight"]) if "weight" in md else None,
                          wexp=md.get("wexp", 0))
    return FeatureStats(dtype=d["dtype"], count=d["count"], missing=d["missing"],
                        mean=float(d["mean"]), std=float(d["std"]), min=d["min"], max=d["max"],
                        constant=d["constant"], moments=moments,
                        weight=float(d["weight"]) if "weight" in d else None)


def groups_from_dict(d: dict[str, Any], features: Mapping[str, FeatureStats], ddof: int) -> Groups:
    if "features" in d:  # format 3: arrays
        from .artifact_keys import KeyTable

        table = KeyTable.from_dict(d, {n: f.dtype for n, f in features.items()}, ddof,
                                   FeatureStats)
        return Groups(by=tuple(d["by"]), keys=table)
    keys = {tuple(e["key"]): {str(n): feature_from_dict(fd) for n, fd in e["features"].items()}
            for e in d["keys"]}
    return Groups(by=tuple(d["by"]), keys=keys)


class Statistics(Protocol):
    """What the plan reads of :class:`pipeline.FittedStats` (typed without importing it)."""

    @property
    def features(self) -> Mapping[str, FeatureStats]: ...

    @property
    def groups(self) -> Groups | None: ...

    @property
    def inf(self) -> str: ...
