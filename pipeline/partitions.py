"""``--filter`` on hive partition keys, applied while listing (pruned directories are never read).

An expression is ``KEY OP VALUE`` with OP one of ``== = != < <= > >=``, e.g.
``day >= 2026-01-01``.  Values are compared as the partition values look:
integers as integers (``hour=9`` < ``hour=10``), ISO dates and times as dates
and times, anything else as text.  Several ``--filter`` are combined with AND.
Values are compared as Parquet readers show them: percent-escapes in directory names
are decoded (``city=New%20York`` is ``New York``), as pyarrow, Spark and Dask do.
"""

from __future__ import annotations

import datetime as _dt
import operator
import posixpath
import re
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputError, option

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "=": operator.eq, "!=": operator.ne, "<=": operator.le,
    ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_EXPR = re.compile(r"^\s*([^\s=!<>]+)\s*(==|=|!=|<=|>=|<|>)\s*(.*?)\s*$")
_EXAMPLE = "day >= 2026-01-01"


@dataclass(frozen=True)
class Filter:
    """One parsed ``--filter`` expression."""

    key: str
    op: str
    value: str
    text: str

    @classmethod
    def parse(cls, text: str) -> Filter:
        """Parse ``"day >= 2026-01-01"``; :class:`InputError` if it is not KEY OP VALUE."""
        match = _EXPR.match(text)
        if not match or not match.group(3):
            raise InputError(f"{option('filters', [text], cli=repr(text))} is not KEY OP VALUE "
                             "(OP one of == != < <= > >=), e.g. "
                             f"{option('filters', [_EXAMPLE], cli=repr(_EXAMPLE))}")
        key, op, value = match.groups()
        return cls(key=key, op=op, value=value.strip("'\""), text=text)


def parse_all(texts: Sequence[str] | None) -> list[Filter]:
    return [Filter.parse(t) for t in texts or ()]


def _kind(values: Sequence[str]) -> tuple[str, Callable[[str], Any]]:
    """How a key's values compare: ("integer", int), ("date", ...), or ("text", str)."""
    def is_int(v: str) -> bool:
        return bool(re.fullmatch(r"[+-]?\d+", v))

    if values and all(is_int(v) for v in values):
        return "an integer", int
    try:
        for v in values:
            _dt.datetime.fromisoformat(v)
        if values and all(re.match(r"\d{4}-\d{2}-\d{2}", v) for v in values):
            return "a date or time", _dt.datetime.fromisoformat
    except ValueError:
        pass
    return "text", str


def allowed(filters: Sequence[Filter], values: Sequence[str]) -> set[str]:
    """The partition ``values`` (of one key) that pass every filter on that key.

    Raises
    ------
    InputError
        A filter value that cannot be read the way the partition values are.
    """
    kind, convert = _kind(values)
    keep = set(values)
    for f in filters:
        try:
            target = convert(f.value)
        except ValueError:
            example = sorted(values)[0] if values else "?"
            named = option("filters", [f.text], cli=repr(f.text))
            raise InputError(f"value {f.value!r} of {named} is not {kind} like the values of "
                             f"'{f.key}' (e.g. {example})", column=f.key) from None
        keep = {v for v in keep if _OPS[f.op](convert(v), target)}
    return keep


def walk(ls: Callable[[str], list[dict[str, Any]]], root: str, filters: Sequence[Filter]
         ) -> dict[str, dict[str, Any]]:
    """Every file under ``root`` (path -> info), skipping partitions the filters exclude.

    ``ls(directory)`` lists one directory as fsspec info dicts (``name``,
    ``type``), hidden names already left out; on local disks it follows
    symbolic links (see :mod:`pipeline.dataset`).

    Raises
    ------
    InputError
        A filter naming a key that is not a partition key of the dataset.
    """
    by_key: dict[str, list[Filter]] = defaultdict(list)
    for f in filters:
        by_key[f.key].append(f)
    seen_keys: set[str] = set()
    found: dict[str, dict[str, Any]] = {}
    pending = [root]
    while pending:
        directory = pending.pop()
        children: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for info in ls(directory):
            path = info["name"].rstrip("/")
            if info.get("type") == "directory":
                key, eq, value = posixpath.basename(path).partition("=")
                children[key if eq else ""].append((value, path))
            else:
                found[path] = info
        for key, entries in children.items():
            if key:
                seen_keys.add(key)
            if key in by_key:
                shown = [(urllib.parse.unquote(v), p) for v, p in entries]
                keep = allowed(by_key[key], [v for v, _ in shown])
                entries = [(v, p) for v, p in shown if v in keep]
            pending.extend(p for _, p in entries)
    unknown = sorted(set(by_key) - seen_keys)
    if unknown:
        keys = ", ".join(sorted(seen_keys)) or "none"
        raise InputError(f"{option('filters')} names '{unknown[0]}', which is not a partition "
                         f"key of the input (its keys: {keys})", column=unknown[0])
    return found
