"""What a valid statistics artifact is: every field type- and range-checked, and agreeing.

:func:`check` runs on every load (``FittedStats.load``/``from_dict``, so ``zscore
transform``, ``inspect``, ``merge`` and ``diff``) before anything is built from
the data; the first problem is an :class:`~pipeline.errors.ArtifactError`
naming the field (``features.f1.moments.shift``).  It works on the parsed JSON
only, so :mod:`pipeline.artifact` builds its objects from checked values.

Per feature (and per key of a per-key artifact):

* ``dtype`` one of :data:`DTYPE_NAMES`; ``count`` an integer in [1, 2**63];
  ``missing`` in [0, 2**63]; ``min``/``max`` within the dtype (integers for
  integer dtypes), ``min <= max``; ``constant`` true exactly when ``min == max``;
* ``min <= mean <= max``, after rounding ``min`` and ``max`` to float64 (rounding
  is monotone, so a correctly rounded mean always passes); a constant's mean is
  its value and its std 0;
* a non-constant std is in [:data:`~pipeline.stats.MIN_STD`,
  :data:`~pipeline.stats.MAX_STD`] and at most ``max - min``;
* ``moments`` (optional) agree with ``mean``/``std`` within rounding: ``mean`` at
  most one ulp from ``shift + offset`` rounded to float64 (the fit writes the
  nearest float64, within half an ulp: an edited mean cannot move the result by
  more than rounding, and the transform uses the exact ``shift + offset``
  anyway); ``std`` within 2**-50 relative (4 ulps) of ``sqrt(m2 / (count -
  ddof))`` (what the fit writes, exactly).  ``shift`` lies in [min - w, max + w]
  and ``|offset| <= max - min + w``, w = 2**-40 max(|min|, |max|) (a float shift
  is a float64 sum divided by the count, within 2**-47 of the data's scale);
  ``m2 >= 0``; ``inf <= missing``.  To use an edited ``mean``/``std``, remove
  ``moments`` (the artifact then transforms but cannot be merged).
* a weighted artifact (top-level ``weight``: the weight column's name) has a
  positive ``weight`` (the total) in every feature and ``weight``/``wexp`` in its
  ``moments``, agreeing within 2**-50; its std agrees with ``sqrt(m2 / (weight -
  ddof * 2**-wexp))`` and, with ddof 1, is not bounded by ``max - min``.
* ``input.file_digests`` (optional: older artifacts lack it and still load)
  maps each input file's identity (:func:`pipeline.dataset.file_digest`, 32 hex
  digits) to its relative path, one entry per ``input.files``; ``merge`` refuses
  inputs that share one.  About 50 bytes plus the path per file: a million files
  of 60-character paths take some 110 MB, within :data:`MAX_BYTES`.
* ``count + missing`` is at most ``input.rows`` and, for a key, at most the
  feature's global ``count + missing``.

The file is at most :data:`MAX_BYTES` (256 MiB: a per-key artifact of format 3
takes about 100 bytes per feature and key, 40.7 MB for 100,000 keys of 4 features;
format 2 took about 400);
deeper nesting than Python's parser handles, duplicate names in an object and
unknown fields are refused too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .artifact_keys_check import check_columnar, key_value
from .choices import INF_POLICIES
from .errors import ArtifactError
from .stats import MAX_STD, MIN_STD

MAX_BYTES = 256 * 2**20
MAX_INT = 2**63  # counts; also the bound of a JSON integer that must fit a float field
DTYPE_NAMES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
               "uint16", "uint32", "uint64")
READABLE_VERSIONS = (1, 2, 3)
_FLOAT_MAX = {"float16": 65504.0, "float32": 3.4028234663852886e38, "float64": math.inf}
_INT_RANGE = {f"{s}int{b}": ((0, 2**b - 1) if s else (-(2**(b - 1)), 2**(b - 1) - 1))
              for s in ("", "u") for b in (8, 16, 32, 64)}
_TOP = ("format_version", "ddof", "inf", "created", "tool_version", "input", "features",
        "groups", "weight")
_FEATURE = ("dtype", "count", "missing", "mean", "std", "min", "max", "constant", "moments",
            "weight")
_MOMENTS = ("shift", "offset", "m2", "inf", "weight", "wexp")
_INPUT = {"path": "paths", "files": "count", "rows": "count", "fingerprint": str,
          "filters": "strings", "merged_from": "strings", "table": "table",
          "file_digests": "digests"}
# input.table: the Delta or Iceberg table read (pipeline.lakehouse.TableInfo.to_dict)
_TABLE = {"format": str, "uri": str, "version": "count", "snapshot_id": "int",
          "timestamp": str, "table": str, "catalog": str, "partition_columns": "strings"}
_DIGEST = re.compile(r"[0-9a-f]{32}")
_KINDS = {"int": (int,), "number": (int, float), "string": (str,), "bool": (bool,),
          "object": (dict,), "list": (list,)}
_ROUNDING = 2.0**-40  # slack of a float shift (see the module docstring)
_STD_AGREES = 2.0**-50


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, what: str) -> None:
        place = f"field '{where}'" if where else "content"
        raise ArtifactError(f"statistics file {self.source}: {place} {what}", path=self.source,
                            column=where or None)

    def object(self, d: Any, where: str, allowed: tuple[str, ...] | Mapping[str, Any]
               ) -> dict[str, Any]:
        if not isinstance(d, dict):
            self.fail(where, "must be a JSON object")
        unknown = [k for k in d if k not in allowed]
        if unknown:
            self.fail(f"{where}.{unknown[0]}" if where else unknown[0],
                      "is not a field of zscore statistics (expected: "
                      f"{', '.join(allowed)})")
        return d

    def get(self, d: dict[str, Any], key: str, where: str, kind: str) -> Any:
        """``d[key]`` checked to be ``kind``: int, number, string, bool, object or list."""
        at = f"{where}.{key}" if where else key
        if key not in d:
            self.fail(at, "is missing")
        v = d[key]
        if type(v) not in _KINDS[kind]:  # type(), not isinstance: true is not an integer
            article = "an" if kind in ("int", "object") else "a"
            self.fail(at, f"is {_show(v)}, expected {article} {kind.replace('int', 'integer')}")
        if kind == "number" and isinstance(v, int) and abs(v) >= 2**1024:
            self.fail(at, "is beyond float64's range")
        if isinstance(v, float) and not math.isfinite(v):
            self.fail(at, "is not a finite number")
        return v

    def int_in(self, d: dict[str, Any], key: str, where: str, lo: int, hi: int) -> int:
        v = self.get(d, key, where, "int")
        if not lo <= v <= hi:
            self.fail(f"{where}.{key}" if where else key, f"is {_show(v)}, expected an integer "
                      f"in [{lo}, {_power(hi)}]")
        return int(v)


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, bool) else str(v).lower()
    return text if len(text) <= 40 else text[:37] + "..."


def _power(n: int) -> str:
    return "2**63" if n == MAX_INT else str(n)


# ---------------------------------------------------------------------- the file
def check(data: Any, source: str) -> None:
    """Check a parsed artifact; raise :class:`ArtifactError` naming the first bad field."""
    c = _Checker(source)
    top = c.object(data, "", _TOP)
    version = c.get(top, "format_version", "", "int")
    if version not in READABLE_VERSIONS:
        c.fail("format_version", f"is {version}, this zscore reads versions "
               f"{', '.join(map(str, READABLE_VERSIONS))}; upgrade zscore or refit")
    ddof = c.get(top, "ddof", "", "int")
    if ddof not in (0, 1):
        c.fail("ddof", f"is {ddof}, expected 0 or 1")
    inf = c.get(top, "inf", "", "string")
    if inf not in INF_POLICIES:
        c.fail("inf", f"is {inf!r}, expected one of {', '.join(INF_POLICIES)}")
    for key in ("created", "tool_version"):
        if key in top:
            c.get(top, key, "", "string")
    rows = _input(c, top["input"]) if "input" in top else None
    features = c.get(top, "features", "", "object")
    if not features:
        c.fail("features", "is empty")
    weighted = "weight" in top
    if weighted and not c.get(top, "weight", "", "string"):
        c.fail("weight", "is empty, expected the weight column's name")
    for name, fd in features.items():
        _feature(c, f"features.{name}", fd, ddof, rows)
        if ("weight" in fd) != weighted:
            c.fail(f"features.{name}.weight", "is missing (the statistics name a weight column)"
                   if weighted else "is given, but the statistics name no weight column")
    if "groups" in top:
        if version < 2:
            c.fail("groups", "needs format_version 2")
        if version >= 3:  # per-key arrays: pipeline.artifact_keys
            check_columnar(c, top["groups"], features, ddof)
        else:
            _groups(c, top["groups"], features, ddof)


def _input(c: _Checker, d: Any) -> int | None:
    c.object(d, "input", _INPUT)
    for key, kind in _INPUT.items():
        if key not in d:
            continue
        if kind == "count":
            c.int_in(d, key, "input", 0, MAX_INT)
        elif kind is str:
            c.get(d, key, "input", "string")
        elif kind == "digests":
            _digests(c, c.get(d, key, "input", "object"), d.get("files"))
        elif kind == "strings":
            if not all(isinstance(s, str) for s in c.get(d, key, "input", "list")):
                c.fail(f"input.{key}", "must be a list of strings")
        elif kind == "table":
            _table(c, d[key])
        elif not _paths(d[key], 0):
            c.fail(f"input.{key}", "must be a string, or a list of paths (merged statistics)")
    return int(d["rows"]) if "rows" in d else None


def _table(c: _Checker, d: Any) -> None:
    c.object(d, "input.table", _TABLE)
    for key, kind in _TABLE.items():
        if key not in d:
            continue
        if kind is str:
            c.get(d, key, "input.table", "string")
        elif kind == "count":
            c.int_in(d, key, "input.table", 0, MAX_INT)
        elif kind == "int":
            c.int_in(d, key, "input.table", -MAX_INT, MAX_INT)
        elif not all(isinstance(s, str) for s in c.get(d, key, "input.table", "list")):
            c.fail(f"input.table.{key}", "must be a list of strings")


def _digests(c: _Checker, digests: dict[str, Any], files: Any) -> None:
    for digest, rel in digests.items():
        if not _DIGEST.fullmatch(digest):
            c.fail("input.file_digests", f"has key {_show(digest)}, expected 32 hex digits")
        if not isinstance(rel, str) or not rel:
            c.fail(f"input.file_digests.{digest}", f"is {_show(rel)}, expected a file's path")
    if isinstance(files, int) and len(digests) != files:
        c.fail("input.file_digests", f"has {len(digests):,} files, but 'files' is {files:,}")


def _paths(v: Any, depth: int) -> bool:
    if v is None or isinstance(v, str):
        return True
    return isinstance(v, list) and depth < 32 and all(_paths(x, depth + 1) for x in v)


# --------------------------------------------------------------------- features
def _feature(c: _Checker, where: str, d: Any, ddof: int, rows: int | None,
             dtype: str | None = None) -> dict[str, Any]:
    c.object(d, where, _FEATURE)
    name = c.get(d, "dtype", where, "string")
    if name not in DTYPE_NAMES or (dtype is not None and name != dtype):
        expected = dtype or ", ".join(DTYPE_NAMES)
        c.fail(f"{where}.dtype", f"is {_show(name)}, expected {expected}")
    count = c.int_in(d, "count", where, 1, MAX_INT)
    missing = c.int_in(d, "missing", where, 0, MAX_INT)
    if rows is not None and count + missing > rows:
        c.fail(f"{where}.count", f"plus 'missing' is {count + missing:,}, more than the "
               f"{rows:,} rows of the input")
    lo, hi = _bound(c, d, "min", where, name), _bound(c, d, "max", where, name)
    if lo > hi:
        c.fail(f"{where}.min", f"is {_show(lo)}, more than 'max' ({_show(hi)})")
    constant = c.get(d, "constant", where, "bool")
    if constant != (lo == hi):
        relation = "==" if lo == hi else "<"
        c.fail(f"{where}.constant", f"is {str(constant).lower()} but min {relation} max; a "
               "feature is constant exactly when its min equals its max")
    mean = float(c.get(d, "mean", where, "number"))
    std = float(c.get(d, "std", where, "number"))
    if not float(lo) <= mean <= float(hi):
        c.fail(f"{where}.mean", f"is {mean!r}, outside [min, max] = [{lo!r}, {hi!r}]")
    if constant:
        if mean != float(lo) or std != 0:
            c.fail(f"{where}.mean" if mean != float(lo) else f"{where}.std",
                   f"must be {float(lo)!r}" if mean != float(lo) else "must be 0 for a "
                   "constant feature")
    elif not MIN_STD <= std <= MAX_STD:
        c.fail(f"{where}.std", f"is {std!r}; a non-constant std must be in [{MIN_STD:.3g}, "
               f"{MAX_STD:.3g}] (float64 squares)")
    elif std > _span(lo, hi) * (1 + _STD_AGREES) and not ("weight" in d and ddof):
        c.fail(f"{where}.std", f"is {std!r}, more than max - min ({_span(lo, hi):.17g})")
    elif count < 2:
        c.fail(f"{where}.count", "is 1, but min < max needs at least 2 values")
    if "weight" in d and not float(c.get(d, "weight", where, "number")) > 0:
        c.fail(f"{where}.weight", f"is {_show(d['weight'])}, expected a positive total weight")
    if "moments" in d:
        _moments(c, f"{where}.moments", c.get(d, "moments", where, "object"), d, ddof)
    return d


def _bound(c: _Checker, d: dict[str, Any], key: str, where: str, dtype: str) -> int | float:
    if dtype in _INT_RANGE:
        lo, hi = _INT_RANGE[dtype]
        v = c.get(d, key, where, "int")
        if not lo <= v <= hi:
            c.fail(f"{where}.{key}", f"is {_show(v)}, outside {dtype}'s range")
        return int(v)
    v = c.get(d, key, where, "number")
    if abs(v) > _FLOAT_MAX[dtype]:
        c.fail(f"{where}.{key}", f"is {_show(v)}, outside {dtype}'s range")
    return v  # type: ignore[no-any-return]


def _span(lo: int | float, hi: int | float) -> float:
    """max - min rounded once (exact integers first), never overflowing."""
    if isinstance(lo, int) and isinstance(hi, int):
        return float(hi - lo)
    return float(hi) / 2 - float(lo) / 2 + (float(hi) / 2 - float(lo) / 2)


def _moments(c: _Checker, where: str, md: dict[str, Any], d: dict[str, Any], ddof: int) -> None:
    c.object(md, where, _MOMENTS)
    lo, hi = d["min"], d["max"]
    shift = c.get(md, "shift", where, "int" if d["dtype"] in _INT_RANGE else "number")
    offset = float(c.get(md, "offset", where, "number"))
    m2 = float(c.get(md, "m2", where, "number"))
    c.int_in(md, "inf", where, 0, d["missing"])
    w = _ROUNDING * max(abs(float(lo)), abs(float(hi)))
    if not float(lo) - w <= float(shift) <= float(hi) + w:
        c.fail(f"{where}.shift", f"is {_show(shift)}, outside [min, max] = [{lo!r}, {hi!r}]")
    if abs(offset) > _span(lo, hi) + w:
        c.fail(f"{where}.offset", f"is {offset!r}, more than max - min from the shift")
    if m2 < 0:
        c.fail(f"{where}.m2", f"is {m2!r}, must not be negative")
    denominator = _weight(c, where, md, d, ddof)
    if d["constant"]:
        return
    exact = _nearest_sum(shift, offset)
    if abs(float(d["mean"]) - exact) > math.ulp(exact):
        c.fail(f"{where[:-len('.moments')]}.mean", f"is {float(d['mean'])!r} but the moments give "
               f"{exact!r} (shift + offset); mean/std and moments must agree: refit, or remove "
               "'moments' to use mean and std as written")
    ref = math.sqrt(m2 / denominator) if denominator > 0 else math.inf
    if not abs(float(d["std"]) - ref) <= _STD_AGREES * ref:
        c.fail(f"{where[:-len('.moments')]}.std", f"is {float(d['std'])!r} but the moments give "
               f"{ref!r} (sqrt(m2 / (count - ddof))); mean/std and moments must agree: refit, "
               "or remove 'moments' to use mean and std as written")


def _weight(c: _Checker, where: str, md: dict[str, Any], d: dict[str, Any], ddof: int
            ) -> float:
    """Check a weighted feature's ``moments.weight``/``wexp``; the variance's denominator."""
    if ("weight" in md or "wexp" in md) != ("weight" in d):
        c.fail(f"{where}.weight", "and 'wexp' must be given exactly when the feature has a "
               "'weight'")
    if "weight" not in d:
        return float(d["count"] - ddof)
    scaled = float(c.get(md, "weight", where, "number"))
    wexp = c.int_in(md, "wexp", where, -1100, 1100)
    if not scaled > 0:
        c.fail(f"{where}.weight", f"is {scaled!r}, expected a positive number")
    try:
        total = math.ldexp(scaled, wexp)
    except OverflowError:
        total = math.inf
    if not abs(total - float(d["weight"])) <= _STD_AGREES * float(d["weight"]):
        c.fail(f"{where[:-len('.moments')]}.weight", f"is {float(d['weight'])!r} but the "
               f"moments give {total!r} (weight * 2**wexp); refit")
    return scaled - math.ldexp(ddof, -wexp)


def _nearest_sum(shift: int | float, offset: float) -> float:
    """``shift + offset`` correctly rounded (a float64 sum is, unless an int shift is huge)."""
    if isinstance(shift, int) and abs(shift) > 2**53:
        from fractions import Fraction

        return float(Fraction(shift) + Fraction(offset))
    return float(shift) + offset


# ----------------------------------------------------------------------- groups
def _groups(c: _Checker, d: Any, features: dict[str, Any], ddof: int) -> None:
    c.object(d, "groups", ("by", "keys"))
    by = c.get(d, "by", "groups", "list")
    if not by or not all(isinstance(b, str) for b in by):
        c.fail("groups.by", "must be a non-empty list of column names")
    seen: set[str] = set()
    for i, entry in enumerate(c.get(d, "keys", "groups", "list")):
        where = f"groups.keys[{i}]"
        c.object(entry, where, ("key", "features"))
        key = c.get(entry, "key", where, "list")
        if len(key) != len(by) or not all(key_value(k) for k in key):
            c.fail(f"{where}.key", f"must hold {len(by)} JSON scalar(s), one per 'by' column "
                   "(integers within 64 bits)")
        text = repr(key)
        if text in seen:
            c.fail(f"{where}.key", f"{_show(key)} appears twice")
        seen.add(text)
        for name, fd in c.get(entry, "features", where, "object").items():
            at = f"{where}.features.{name}"
            if name not in features:
                c.fail(at, "is not a feature of the statistics")
            glob = features[name]
            _feature(c, at, fd, ddof, glob["count"] + glob["missing"], dtype=glob["dtype"])
