"""The incremental-fit cache: per-file footers and moments, so a re-fit reads only new files.

An entry is keyed by what identifies a file's content and how it was summarised:
its relative path, size and version (mtime, or the ETag on object stores), plus
for moments the selected features, the inf policy, the chunking and the weight
column (``--weight``; absent from unweighted keys, so those are unchanged).  Because a
fit merges per-file moments in sorted path order, statistics from cached
entries are bit-identical to a fit without cache.

Safety: each entry is one small JSON file written atomically (a rename on local
disks, a single PUT on object stores), so concurrent fits sharing a cache at
worst write the same bytes twice.  Each entry carries a format version, its own
key fields and a sha256 of its payload; anything that does not check out is
reported with a warning and recomputed, never trusted.

With ``--group-by``, a moments entry also holds the file's per-key moments as
arrays (:meth:`pipeline.keystats.KeyMoments.to_payload`, exact), and its key adds
the key columns and how their hive values are typed.

Layout: ``LOCATION/footers/<sha256>.json`` and ``LOCATION/moments/<sha256>.json``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from .dataset import SourceFile
from .keystats import KeyMoments
from .schema import Footer
from .stats import Moments
from .storage import resolve, write_bytes

FORMAT = 5  # 3: moments from the 7-pass from_array; 4: footers without codecs; 5: digests
FileMoments = dict[str, Moments]


class Cache:
    """A cache directory (local path or fsspec URL).

    Parameters
    ----------
    location : str
        Where the entries live; created on first write.
    storage_options : dict, optional
        fsspec options.
    warn : callable, optional
        Receives one line per entry that was corrupt or foreign.
    """

    def __init__(self, location: str, storage_options: dict[str, Any] | None = None,
                 warn: Callable[[str], None] | None = None):
        self.location = location.rstrip("/")
        self.options = dict(storage_options or {})
        self.loc = resolve(self.location, self.options)
        self.warn = warn or (lambda msg: None)
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ keys
    @staticmethod
    def _identity(f: SourceFile) -> list[Any]:
        return [f.rel, f.size, f.version]

    def _path(self, kind: str, key: list[Any]) -> tuple[str, str]:
        digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()
        return digest, posixpath.join(self.loc.path, kind, f"{digest}.json")

    # ------------------------------------------------------------- reading
    def _get(self, kind: str, keys: dict[str, list[Any]]) -> dict[str, Any]:
        """Payloads found for ``keys`` (rel -> key); misses and bad entries are left out."""
        paths = {rel: self._path(kind, key)[1] for rel, key in keys.items()}
        fs = self.loc.fs
        try:
            raw = fs.cat(list(paths.values()), on_error="omit")
        except Exception as exc:  # noqa: BLE001 - an unreadable cache is a miss, not a failure
            self.warn(f"cache {self.location} unreadable ({type(exc).__name__}); fitting "
                      "without it")
            return {}
        found = {}
        for rel, path in paths.items():
            data = raw.get(path) if isinstance(raw, dict) else None
            if data is None:
                data = raw.get(fs._strip_protocol(path)) if isinstance(raw, dict) else None
            if data is None:
                continue
            payload = self._check(data, kind, keys[rel], path)
            if payload is not None:
                found[rel] = payload
        return found

    def _check(self, data: bytes, kind: str, key: list[Any], path: str) -> Any:
        name = posixpath.basename(path)
        try:
            entry = json.loads(data)
            payload = entry["payload"]
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
            ok_sum = hashlib.sha256(text.encode()).hexdigest() == entry["sha256"]
        except (ValueError, KeyError, TypeError):
            self.warn(f"cache entry {kind}/{name} is corrupt; recomputing it")
            return None
        if entry.get("format") != FORMAT:
            self.warn(f"cache entry {kind}/{name} has format {entry.get('format')!r}, not "
                      f"{FORMAT}; recomputing it")
            return None
        if not ok_sum:
            self.warn(f"cache entry {kind}/{name} fails its checksum; recomputing it")
            return None
        if entry.get("key") != key:
            self.warn(f"cache entry {kind}/{name} belongs to another file or selection; "
                      "recomputing it")
            return None
        return payload

    # ------------------------------------------------------------- writing
    def _put(self, kind: str, items: Sequence[tuple[list[Any], Any]]) -> None:
        for key, payload in items:
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
            entry = {"format": FORMAT, "key": key, "payload": payload,
                     "sha256": hashlib.sha256(text.encode()).hexdigest()}
            _, path = self._path(kind, key)
            url = f"{self.location}/{kind}/{posixpath.basename(path)}"
            try:
                write_bytes(url, json.dumps(entry).encode(), self.options)
            except Exception as exc:  # noqa: BLE001 - a cache that cannot be written is skipped
                self.warn(f"cannot write to the cache {self.location} ({exc}); continuing "
                          "without storing")
                return

    # ------------------------------------------------------------- footers
    def footers(self, files: Sequence[SourceFile]) -> dict[str, Footer]:
        found = self._get("footers", {f.rel: self._identity(f) for f in files})
        out = {}
        for rel, p in found.items():
            try:
                out[rel] = _footer_from(rel, p)
            except (ValueError, KeyError, TypeError, pa.ArrowException):
                self.warn(f"cache entry for the footer of {rel} is unusable; recomputing it")
        return out

    def put_footers(self, files: Sequence[SourceFile], footers: Sequence[Footer]) -> None:
        self._put("footers", [(self._identity(f), _footer_to(ft))
                              for f, ft in zip(files, footers, strict=True) if ft.error is None])

    # ------------------------------------------------------------- moments
    def _moments_key(self, f: SourceFile, features: Sequence[str], inf: str, chunk: int,
                     tag: list[Any] | None = None, weight: str | None = None) -> list[Any]:
        # ``tag`` (the group-by columns and hive typing) and ``weight`` only when given:
        # entries of plain fits keep their keys.
        base = [*self._identity(f), sorted(features), inf, chunk,
                *([{"weight": weight}] if weight else [])]
        return base if tag is None else [*base, tag]

    def moments(self, files: Sequence[SourceFile], features: Sequence[str], inf: str,
                chunk: int, tag: list[Any] | None = None, weight: str | None = None
                ) -> dict[str, Any]:
        """Cached per-file moments; with ``tag`` (``--group-by``): (moments, key moments)."""
        keys = {f.rel: self._moments_key(f, features, inf, chunk, tag, weight) for f in files}
        found = self._get("moments", keys)
        out: dict[str, Any] = {}
        for rel, p in found.items():
            try:
                feats = p if tag is None else p["features"]
                fm = {name: Moments.from_dict(feats[name]) for name in features}
                out[rel] = fm if tag is None else (fm, KeyMoments.from_payload(p["groups"]))
            except (KeyError, TypeError, ValueError):
                self.warn(f"cache entry for the moments of {rel} is unusable; recomputing it")
        self.hits += len(out)
        self.misses += len(files) - len(out)
        return out

    def put_moments(self, files: Sequence[SourceFile], features: Sequence[str], inf: str,
                    chunk: int, moments: Sequence[Any], tag: list[Any] | None = None,
                    weight: str | None = None) -> None:
        def payload(result: Any) -> dict[str, Any]:
            if tag is None:
                return {k: m.to_dict() for k, m in result.items()}
            fm, km = result
            return {"features": {k: m.to_dict() for k, m in fm.items()},
                    "groups": km.to_payload()}

        self._put("moments", [(self._moments_key(f, features, inf, chunk, tag, weight),
                               payload(r)) for f, r in zip(files, moments, strict=True)])


def _footer_to(f: Footer) -> dict[str, Any]:
    assert f.schema is not None
    return {"rows": f.rows, "row_groups": list(f.row_groups), "digest": f.digest,
            "schema": base64.b64encode(f.schema.serialize().to_pybytes()).decode()}


def _footer_from(rel: str, p: dict[str, Any]) -> Footer:
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(p["schema"])))
    return Footer(rel=rel, rows=int(p["rows"]), row_groups=tuple(p["row_groups"]),
                  schema=schema, digest=str(p["digest"]))


def open_cache(location: str | None, options: Mapping[str, Any], warn: Any) -> Cache | None:
    """The cache at ``location`` (``--cache``), or ``None`` without one."""
    return Cache(location, dict(options), warn) if location else None
