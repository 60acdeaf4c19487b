"""The fitted-statistics artifact: a small JSON file, never a pickle.

Layout (``format_version`` 1)::

    {"format_version": 1, "ddof": 0, "inf": "error", "created": "...",
     "tool_version": "...",
     "input": {"path": "...", "files": 40, "rows": 10000000, "fingerprint": "..."},
     "features": {"f00": {"dtype": "float32", "count": 9990001, "missing": 9999,
                          "mean": 0.0012, "std": 0.9987, "min": -5.1, "max": 5.3,
                          "constant": false,
                          "moments": {"shift": 0.0011, "offset": 1e-07, "m2": 9.97e6,
                                      "inf": 0}}, ...}}

With ``--group-by`` the artifact is ``format_version`` 2 and also holds a
``groups`` section: the key columns and, per key value, the same per-feature
statistics.  Version 1 files (no groups) still load.

``mean`` and ``std`` are what the transform uses.  ``moments`` is the exact
internal state (see :mod:`pipeline.stats`) that lets two artifacts merge as if
fitted together; a hand-written artifact may leave it out and still transform.

Loading never executes code: it is ``json.loads`` plus validation, and every
problem is an :class:`~pipeline.errors.ArtifactError` naming the field.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .errors import ArtifactError
from .stats import Moments

FORMAT_VERSION = 1
GROUPS_FORMAT_VERSION = 2  # written only when there are groups
READABLE_VERSIONS = (1, 2)
INF_POLICIES = ("error", "null")


def tool_version() -> str:
    from . import __version__

    return __version__


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

    @classmethod
    def from_moments(cls, m: Moments, dtype: str, ddof: int) -> FeatureStats:
        assert m.minimum is not None and m.maximum is not None
        # A constant column's mean is its value, exactly: x - mean is then 0.0.
        mean = float(m.minimum) if m.constant else m.mean
        return cls(dtype=dtype, count=m.count, missing=m.missing + m.inf, mean=mean,
                   std=m.std(ddof), min=m.minimum, max=m.maximum, constant=m.constant,
                   moments=m)

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
        if self.moments is not None:
            d["moments"] = {"shift": self.moments.shift, "offset": self.moments.offset,
                            "m2": self.moments.m2, "inf": self.moments.inf}
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

    def to_dict(self) -> dict[str, Any]:
        return {"by": list(self.by),
                "keys": [{"key": list(k), "features": {n: f.to_dict() for n, f in v.items()}}
                         for k, v in self.keys.items()]}


@dataclass(frozen=True)
class FittedStats:
    """The result of a fit: per-feature statistics plus where they came from.

    Immutable and JSON-serialisable; pass it explicitly to the transform.

    Examples
    --------
    >>> stats = FittedStats.load("stats.json")          # doctest: +SKIP
    >>> stats.features["f00"].mean, stats.features["f00"].std   # doctest: +SKIP
    """

    features: Mapping[str, FeatureStats]
    ddof: int = 0
    inf: str = "error"
    input: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""
    tool_version: str = ""
    format_version: int = FORMAT_VERSION
    groups: Groups | None = None

    @property
    def names(self) -> list[str]:
        return list(self.features)

    # ------------------------------------------------------------- to / from
    def to_dict(self) -> dict[str, Any]:
        version = GROUPS_FORMAT_VERSION if self.groups is not None else FORMAT_VERSION
        d = {"format_version": version, "ddof": self.ddof, "inf": self.inf,
             "created": self.created, "tool_version": self.tool_version,
             "input": dict(self.input),
             "features": {k: v.to_dict() for k, v in self.features.items()}}
        if self.groups is not None:
            d["groups"] = self.groups.to_dict()
        return d

    def to_json(self) -> str:
        # json writes floats with repr(): the shortest string that round-trips exactly.
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike[str], storage_options: dict | None = None) -> None:
        """Write the artifact (atomically on local disks) to a path or fsspec URL."""
        from .commit import write_bytes

        write_bytes(os.fspath(path), self.to_json().encode(), storage_options)

    @classmethod
    def load(cls, path: str | os.PathLike[str], storage_options: dict | None = None
             ) -> FittedStats:
        """Read and validate an artifact from a path or fsspec URL.

        Raises
        ------
        ArtifactError
            Unreadable file, not JSON, unknown ``format_version``, a missing
            field or a non-finite number; the message names the field.
        """
        from .commit import read_bytes

        name = os.fspath(path)
        try:
            text = read_bytes(name, storage_options).decode("utf-8")
        except FileNotFoundError:
            raise ArtifactError(f"statistics file {name} does not exist; create it with "
                                "'zscore fit INPUT --stats " + name + "'", path=name) from None
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"cannot read statistics file {name}: {exc}", path=name) from None
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ArtifactError(f"statistics file {name} is not valid JSON: {exc}",
                                path=name) from None
        return cls.from_dict(data, source=name)

    @classmethod
    def from_dict(cls, data: Any, source: str = "statistics") -> FittedStats:
        """Validate a parsed artifact; every error names ``source`` and the field."""
        v = _Validator(source)
        if not isinstance(data, dict):
            v.fail("", "must be a JSON object")
        version = v.get(data, "format_version", int)
        if version not in READABLE_VERSIONS:
            v.fail("format_version", f"is {version}, this zscore reads versions "
                   f"{', '.join(map(str, READABLE_VERSIONS))}; upgrade zscore or refit")
        ddof = v.get(data, "ddof", int)
        if ddof not in (0, 1):
            v.fail("ddof", f"is {ddof}, expected 0 or 1")
        inf = v.get(data, "inf", str)
        if inf not in INF_POLICIES:
            v.fail("inf", f"is {inf!r}, expected one of {', '.join(INF_POLICIES)}")
        feats = v.get(data, "features", dict)
        if not feats:
            v.fail("features", "is empty")
        features = {str(k): _feature(v, f"features.{k}", fd) for k, fd in feats.items()}
        groups = _groups(v, data["groups"], features) if "groups" in data else None
        return cls(features=features, ddof=ddof, inf=inf,
                   input=data.get("input") if isinstance(data.get("input"), dict) else {},
                   created=str(data.get("created", "")),
                   tool_version=str(data.get("tool_version", "")), format_version=version,
                   groups=groups)


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _reject_constant(token: str) -> None:
    raise ValueError(f"non-finite number {token} is not allowed")


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, what: str) -> None:
        place = f"field '{where}'" if where else "content"
        raise ArtifactError(f"statistics file {self.source}: {place} {what}", path=self.source,
                            column=where or None)

    def get(self, d: dict, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
        where = f"{where}.{key}" if where else key
        if not isinstance(d, dict) or key not in d:
            self.fail(where, "is missing")
        value = d[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            self.fail(where, f"is {value!r}, expected {_kind_name(kind)}")
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(where, "is not a finite number")
        return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", dict: "an object",
             bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


_NUM = (int, float)


def _feature(v: _Validator, where: str, d: Any) -> FeatureStats:
    if not isinstance(d, dict):
        v.fail(where, "must be an object")
    fs = FeatureStats(
        dtype=v.get(d, "dtype", str, where), count=v.get(d, "count", int, where),
        missing=v.get(d, "missing", int, where), mean=float(v.get(d, "mean", _NUM, where)),
        std=float(v.get(d, "std", _NUM, where)), min=v.get(d, "min", _NUM, where),
        max=v.get(d, "max", _NUM, where), constant=v.get(d, "constant", bool, where))
    if fs.std < 0 or (fs.std == 0 and not fs.constant):
        v.fail(f"{where}.std", f"is {fs.std}; must be positive unless 'constant' is true")
    if fs.count < 0 or fs.missing < 0:
        v.fail(f"{where}.count", "and 'missing' must not be negative")
    moments = None
    if "moments" in d:
        md = v.get(d, "moments", dict, where)
        mw = f"{where}.moments"
        shift = v.get(md, "shift", _NUM, mw)
        moments = Moments(count=fs.count, missing=fs.missing - int(v.get(md, "inf", int, mw)),
                          inf=int(md["inf"]), shift=shift,
                          offset=float(v.get(md, "offset", _NUM, mw)),
                          m2=float(v.get(md, "m2", _NUM, mw)), minimum=fs.min, maximum=fs.max)
    return FeatureStats(dtype=fs.dtype, count=fs.count, missing=fs.missing, mean=fs.mean,
                        std=fs.std, min=fs.min, max=fs.max, constant=fs.constant,
                        moments=moments)


def _groups(v: _Validator, d: Any, features: Mapping[str, FeatureStats]) -> Groups:
    if not isinstance(d, dict):
        v.fail("groups", "must be an object")
    by = v.get(d, "by", list, "groups")
    if not by or not all(isinstance(b, str) for b in by):
        v.fail("groups.by", "must be a non-empty list of column names")
    entries = v.get(d, "keys", list, "groups")
    keys: dict[Key, dict[str, FeatureStats]] = {}
    for i, entry in enumerate(entries):
        where = f"groups.keys[{i}]"
        key = v.get(entry, "key", list, where)
        if len(key) != len(by) or not all(k is None or isinstance(k, str | int | float | bool)
                                          for k in key):
            v.fail(f"{where}.key", f"must hold {len(by)} JSON scalar(s), one per 'by' column")
        feats = v.get(entry, "features", dict, where)
        unknown = [n for n in feats if n not in features]
        if unknown:
            v.fail(f"{where}.features.{unknown[0]}", "is not a feature of the statistics")
        keys[tuple(key)] = {str(n): _feature(v, f"{where}.features.{n}", fd)
                            for n, fd in feats.items()}
    return Groups(by=tuple(by), keys=keys)
