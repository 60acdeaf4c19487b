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

A weighted fit (``--weight w``) adds ``"weight": "w"`` at the top, the total
weight of the values each feature used (``"weight": 12.5``) beside its
``count``, and ``weight``/``wexp`` to its ``moments`` (the total weight on a
power-of-two scale, see :mod:`pipeline.stats`).

With ``--group-by`` the artifact is ``format_version`` 3 and also holds a
``groups`` section: the key columns and the per-key moments of every feature as
arrays (see :mod:`pipeline.artifact_keys`, which says why arrays in the JSON and
not a side file).  Version 1 files (no groups) and version 2 files (an object
per key) still load.

``mean`` and ``std`` are what the transform uses.  ``moments`` is the exact
internal state (see :mod:`pipeline.stats`) that lets two artifacts merge as if
fitted together; a hand-written artifact may leave it out and still transform.

Loading never executes code: it is ``json.loads`` plus validation, and every
problem is an :class:`~pipeline.errors.ArtifactError` naming the field.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .artifact_fields import DTYPE_NAMES, INF_POLICIES, MAX_BYTES, READABLE_VERSIONS, check
from .errors import ArtifactError, storage_error
from .feature_stats import FeatureStats, Groups, feature_from_dict, groups_from_dict

__all__ = ["DTYPE_NAMES", "FORMAT_VERSION", "INF_POLICIES", "READABLE_VERSIONS", "FeatureStats",
           "FittedStats", "Groups"]

FORMAT_VERSION = 1
GROUPS_FORMAT_VERSION = 3  # written only when there are groups (columnar)
OBJECT_GROUPS_VERSION = 2  # per-key objects: still read, written for hand-made ones


def tool_version() -> str:
    from . import __version__

    return __version__


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
    weight: str | None = None  # the weight column of a weighted fit

    @property
    def names(self) -> list[str]:
        return list(self.features)

    # ---------------------------------------------------------------- serving
    def to_sql(self, dialect: str = "duckdb", **options: Any) -> str:
        """A ``SELECT`` that reproduces :func:`pipeline.apply` with these statistics.

        ``dialect``: ``duckdb``, ``postgres``, ``bigquery`` or ``spark``; ``options``:
        ``mode``, ``dtype``, ``table`` (the ``FROM`` item), ``features``,
        ``fill_missing``, ``missing_indicator``, ``clip`` (see
        :func:`pipeline.exports.to_sql`).  The chosen options are written into the
        export's header comment.

        >>> stats.to_sql("duckdb", table="read_parquet('val/*.parquet')")  # doctest: +SKIP
        """
        from .exports import to_sql

        return to_sql(self, dialect, **options)

    def to_onnx(self, **options: Any) -> bytes:
        """A float64 (or float32) ONNX model of :func:`pipeline.apply` with these statistics.

        ``options``: ``mode``, ``dtype``, ``features``, ``fill_missing``,
        ``missing_indicator``, ``clip`` (see :func:`pipeline.exports_onnx.to_onnx`);
        needs the ``onnx`` extra.  Returns the serialized ``ModelProto``, ready for
        ``onnxruntime.InferenceSession``.
        """
        from .exports_onnx import to_onnx

        return to_onnx(self, **options)

    # ------------------------------------------------------------- to / from
    def to_dict(self) -> dict[str, Any]:
        d = {"format_version": FORMAT_VERSION, "ddof": self.ddof, "inf": self.inf,
             "created": self.created, "tool_version": self.tool_version,
             "input": dict(self.input),
             "features": {k: v.to_dict() for k, v in self.features.items()}}
        if self.groups is not None:
            groups = self.groups.to_dict({n: f.dtype for n, f in self.features.items()},
                                         self.ddof)
            d["format_version"] = GROUPS_FORMAT_VERSION if "features" in groups \
                else OBJECT_GROUPS_VERSION
            d["groups"] = groups
        if self.weight is not None:
            d["weight"] = self.weight
        return d

    def to_json(self) -> str:
        # json writes floats with repr(): the shortest string that round-trips exactly.
        d = self.to_dict()
        groups = d.pop("groups", None)
        text = json.dumps(d, indent=1, allow_nan=False)
        if groups is None or "features" not in groups:
            if groups is not None:
                text = json.dumps({**d, "groups": groups}, indent=1, allow_nan=False)
            return text + "\n"
        # Per-key arrays one line each: indented, every number would take a line of its own.
        parts = [f' "by": {json.dumps(groups["by"])}',
                 ' "keys": {' + ", ".join(f"{json.dumps(b)}: {json.dumps(v, allow_nan=False)}"
                                          for b, v in groups["keys"].items()) + "}"]
        feats = [f'  {json.dumps(n)}: {json.dumps(fd, allow_nan=False, separators=(",", ":"))}'
                 for n, fd in groups["features"].items()]
        body = ",\n".join(parts) + ',\n "features": {\n' + ",\n".join(feats) + "\n }"
        return text[:-2] + ',\n "groups": {\n' + body + "\n }\n}\n"

    def save(self, path: str | os.PathLike[str], storage_options: dict | None = None) -> None:
        """Write the artifact (atomically on local disks) to a path or fsspec URL."""
        from .storage import write_bytes

        write_bytes(os.fspath(path), self.to_json().encode(), storage_options)

    @classmethod
    def load(cls, path: str | os.PathLike[str], storage_options: dict | None = None
             ) -> FittedStats:
        """Read and check an artifact from a path or fsspec URL.

        Raises
        ------
        ArtifactError
            Unreadable file, larger than 256 MiB, not JSON, or any field of the
            wrong type, out of range or disagreeing with another (see
            :mod:`pipeline.artifact_fields`); the message names the field.
        """
        name = os.fspath(path)
        try:
            text = _read(name, storage_options).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"cannot read statistics file {name}: {exc}", path=name) from None
        try:
            data = json.loads(text, parse_constant=_reject_constant,
                              object_pairs_hook=_unique_names)
        except RecursionError:
            raise ArtifactError(f"statistics file {name} is nested too deeply to be zscore "
                                "statistics", path=name) from None
        except ValueError as exc:
            raise ArtifactError(f"statistics file {name} is not valid JSON: {exc}",
                                path=name) from None
        return cls.from_dict(data, source=name)

    @classmethod
    def from_dict(cls, data: Any, source: str = "statistics") -> FittedStats:
        """Check a parsed artifact (see :mod:`pipeline.artifact_fields`) and build it.

        Every error names ``source`` and the field.
        """
        check(data, source)
        features = {str(k): feature_from_dict(fd) for k, fd in data["features"].items()}
        return cls(features=features, ddof=data["ddof"], inf=data["inf"],
                   input=data.get("input", {}), created=data.get("created", ""),
                   tool_version=data.get("tool_version", ""),
                   format_version=data["format_version"],
                   groups=groups_from_dict(data["groups"], features, data["ddof"])
                   if "groups" in data else None,
                   weight=data.get("weight"))


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _reject_constant(token: str) -> None:
    raise ValueError(f"non-finite number {token} is not allowed")


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        names = [k for k, _ in pairs]
        twice = next(k for i, k in enumerate(names) if k in names[:i])
        raise ValueError(f"the name {twice!r} appears twice in one object")
    return d


def _read(name: str, storage_options: dict | None) -> bytes:
    """The file's bytes, refused past :data:`MAX_BYTES` without reading further."""
    from .storage import resolve

    loc = resolve(name, storage_options)
    try:
        with loc.fs.open(loc.path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ArtifactError(f"statistics file {name} does not exist; create it with "
                            "'zscore fit INPUT --stats " + name + "'", path=name) from None
    except Exception as exc:  # noqa: BLE001 - object stores raise their own exception types
        raise storage_error(exc, "cannot read", loc.display) from None
    if len(data) > MAX_BYTES:
        raise ArtifactError(f"statistics file {name} is larger than {MAX_BYTES // 2**20} MiB, "
                            "the limit for zscore statistics", path=name)
    return data
