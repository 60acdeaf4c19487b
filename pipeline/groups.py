"""Per-key normalization (``--group-by``): statistics per key value, applied row by row.

As TF Transform's ``scale_to_z_score_per_key``, for data where each tool,
chamber or sensor has its own level and spread.  Per key the moments are the
same shifted, corrected two-pass moments as the global ones (see
:mod:`pipeline.stats`), merged in the same canonical order, so a key at mean 1e9
with sigma 1e-3 is exact too -- unlike ``groupby().var()`` in Dask, which uses
sum(x**2) - sum(x)**2/n and returns 0 there.

Keys are tuples of JSON scalars, one per ``by`` column (dates and timestamps as
ISO strings, nulls as ``None``).  At transform time a key not seen at fit time
uses the global statistics (``unseen="global"``, the default), becomes missing
(``"null"``) or is an error (``"error"``).  A constant group follows the
constant rule: its values become exactly 0.0 under ``standard`` and ``center``.

A key column may be a hive partition key: its value is the file's directory
value as readers show it (:func:`hive_value`), added to each batch for the
lookup only (:func:`with_hive_keys`).  The moments themselves are computed and
merged as arrays over keys (:mod:`pipeline.keystats`).
"""

from __future__ import annotations

import datetime as _dt
import decimal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .artifact_keys import KeyTable
from .errors import DataError, InputError, option
from .feature_stats import FeatureStats, Groups, Key
from .keystats import KeyMoments


def jsonable(value: Any) -> Any:
    """A key value as a JSON scalar (what the artifact stores and lookups compare)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value else None  # NaN keys are treated as missing keys
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | _dt.timedelta):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def codes(table: pa.Table, by: Sequence[str]) -> tuple[np.ndarray, list[Key]]:
    """Per row, the index of its key in the returned list of distinct keys (sorted by code)."""
    n = table.num_rows
    combined = np.zeros(n, dtype=np.int64)
    values: list[list[Any]] = []
    radix = 1
    for name in by:
        col = table.column(name)
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        enc = pc.dictionary_encode(arr)
        dictionary = enc.dictionary.to_pylist() + [None]
        idx = enc.indices.fill_null(len(dictionary) - 1).to_numpy().astype(np.int64)
        combined += idx * radix
        radix *= len(dictionary)
        values.append([jsonable(v) for v in dictionary])
    if radix >= 2**62:
        names = ",".join(by)
        raise InputError(f"too many distinct keys in {option('group_by', names, cli=names)}")
    uniq, inverse = np.unique(combined, return_inverse=True)
    keys = []
    for u in uniq:
        rest, key = int(u), []
        for vals in values:
            rest, i = divmod(rest, len(vals))
            key.append(vals[i])
        keys.append(tuple(key))
    return inverse.astype(np.int64), keys


# --------------------------------------------------------------------- fit
def sort_keys(keys: Any) -> list[Key]:
    """The canonical order of keys: by their JSON text (None, numbers and text all compare)."""
    import json

    return sorted(keys, key=lambda k: json.dumps(list(k)))


def finalize_groups(by: Sequence[str], per_file: Sequence[KeyMoments],
                    dtypes: Mapping[str, str], ddof: int) -> Groups:
    """Merge per-file key moments in file order and build the artifact's ``groups``."""
    total = KeyMoments()
    for km in per_file:
        total.fold(km)
    position = {k: i for i, k in enumerate(total.keys)}
    keys = sort_keys(total.keys)
    order = np.array([position[k] for k in keys], dtype=np.int64)
    columns = {n: c.take(order) for n, c in total.columns.items() if n in dtypes}
    return Groups(by=tuple(by), keys=KeyTable(keys, columns, dtypes, ddof, FeatureStats))


def too_many_keys(by: Sequence[str], found: int, limit: int, where: str = "") -> InputError:
    """The ``max_keys`` refusal: how many keys were found (so far), and what to do."""
    names = ",".join(by)
    return InputError(f"{option('group_by', names, cli=names)} found {found:,} distinct keys"
                      f"{where}, more than the limit of {limit:,}; group by a coarser key, or "
                      f"raise the limit with {option('max_keys', found * 2, cli=str(found * 2))}",
                      column=by[0])


# ------------------------------------------------------------- hive keys
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def hive_kinds(values: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Per hive key, how readers type it: "int" when every (non-null) value is an integer
    (pyarrow infers int32, Dask a categorical of integers), else "str"."""
    import re

    def kind(vs: Sequence[str]) -> str:
        real = [v for v in vs if v != HIVE_NULL]
        return "int" if real and all(re.fullmatch(r"[+-]?\d+", v) for v in real) else "str"

    return {k: kind(vs) for k, vs in values.items()}


def hive_value(raw: str, kind: str) -> Any:
    """A hive directory's value as readers show it: percent-escapes decoded, the default
    partition null, integers as integers for an "int" key."""
    import urllib.parse

    if raw == HIVE_NULL:
        return None
    text = urllib.parse.unquote(raw)
    return int(text) if kind == "int" else text


def with_hive_keys(table: pa.Table, partition: Mapping[str, Any]) -> pa.Table:
    """``table`` with a constant column per hive key in ``partition`` (name -> value)."""
    for name, value in partition.items():
        if name in table.column_names:
            continue
        typ = pa.int64() if isinstance(value, int) else pa.string()
        table = table.append_column(name, pa.array([value] * table.num_rows, typ))
    return table


def hive_keys_of(plan: GroupPlan, partition: Sequence[tuple[str, str]],
                 stored: Sequence[str]) -> dict[str, Any]:
    """The hive values of a file for the plan's key columns it does not store, typed as
    at fit time (integers when the fitted values of that column are integers)."""
    out = {}
    pairs = dict(partition)
    for j, b in enumerate(plan.by):
        if b in stored or b not in pairs:
            continue
        ints = any(isinstance(v, int) and not isinstance(v, bool) for v in plan.seen[j])
        out[b] = hive_value(pairs[b], "int" if ints else "str")
    return out


# --------------------------------------------------------------- transform
@dataclass(frozen=True)
class GroupPlan:
    """Which rows use which key's statistics.

    The numbers themselves live in each :class:`pipeline.kernel.ColumnPlan`,
    as arrays indexed by key number, the global statistics last (used for unseen
    keys under ``unseen="global"`` and for features a key lacks).
    """

    by: tuple[str, ...]
    index: Mapping[Key, int]
    unseen: str = "global"

    @classmethod
    def build(cls, groups: Groups, unseen: str = "global") -> GroupPlan:
        """Number the keys in the artifact's order; ``unseen`` is checked by the plan."""
        return cls(by=groups.by, index={k: i for i, k in enumerate(groups.keys)}, unseen=unseen)

    @cached_property
    def seen(self) -> tuple[frozenset[Any], ...]:
        """Per ``by`` column, the values it had at fit time."""
        return tuple(frozenset(k[j] for k in self.index) for j in range(len(self.by)))

    def rows(self, table: pa.Table, where: str | None = None,
             tally: UnseenTally | None = None) -> np.ndarray:
        """Per row, its key's index (len(keys) for global, -1 for missing under "null").

        ``tally``, if given, counts the rows whose key was not seen at fit time.
        """
        missing = [b for b in self.by if b not in table.column_names]
        if missing:
            raise DataError(f"{option('group_by')} column '{missing[0]}' is missing" +
                            (f" from {where}" if where else ""), column=missing[0], path=where)
        code, keys = codes(table, self.by)
        fallback = {"global": len(self.index), "null": -1, "error": -2}[self.unseen]
        lookup = np.array([self.index.get(k, fallback) for k in keys], dtype=np.int64)
        if self.unseen == "error" and (lookup == -2).any():
            key = keys[int(np.argmax(lookup == -2))]
            by = ",".join(self.by)
            raise DataError(f"key {_show(key)} of {option('group_by', by, cli=by)} was not seen "
                            "at fit time" + (f" (in {where})" if where else "") +
                            f"; refit, or pass {option('unseen', 'global')} or "
                            f"{option('unseen', 'null')}",
                            column=self.by[0], path=where)
        if tally is not None and len(code):
            tally.add(self, keys, np.bincount(code, minlength=len(keys)), lookup == fallback)
        return lookup[code] if len(code) else np.zeros(0, dtype=np.int64)


@dataclass
class UnseenTally:
    """Rows with a key not seen at fit time: in all, and per ``by`` column the rows whose
    value in that column was never seen (a new combination of seen values counts in
    ``rows`` only)."""

    rows: int = 0
    by_column: dict[str, int] = field(default_factory=dict)

    def add(self, plan: GroupPlan, keys: Sequence[Key], counts: np.ndarray,
            unseen: np.ndarray) -> None:
        for i in np.flatnonzero(unseen).tolist():
            n = int(counts[i])
            self.rows += n
            for j, b in enumerate(plan.by):
                if keys[i][j] not in plan.seen[j]:
                    self.by_column[b] = self.by_column.get(b, 0) + n

    def merge(self, other: UnseenTally) -> UnseenTally:
        cols = {b: self.by_column.get(b, 0) + other.by_column.get(b, 0)
                for b in {**self.by_column, **other.by_column}}
        return UnseenTally(self.rows + other.rows, cols)

    def to_dict(self, by: Sequence[str]) -> dict[str, Any]:
        return {"rows": self.rows, "by_column": {b: self.by_column.get(b, 0) for b in by}}


def _show(key: Key) -> str:
    return repr(key[0]) if len(key) == 1 else repr(tuple(key))
