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
"""

from __future__ import annotations

import datetime as _dt
import decimal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .artifact import FeatureStats, Groups, Key
from .errors import DataError, InputError, option
from .stats import Moments

GroupMoments = dict[Key, dict[str, Moments]]


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
def merge_into(total: GroupMoments, part: GroupMoments) -> None:
    """Fold ``part`` into ``total`` (in place), key by key, feature by feature."""
    for key, feats in part.items():
        mine = total.setdefault(key, {})
        for name, m in feats.items():
            mine[name] = mine[name].merge(m) if name in mine else m


def sort_keys(keys: Any) -> list[Key]:
    """The canonical order of keys: by their JSON text (None, numbers and text all compare)."""
    import json

    return sorted(keys, key=lambda k: json.dumps(list(k)))


def finalize_groups(by: Sequence[str], per_file: Sequence[GroupMoments],
                    dtypes: Mapping[str, str], ddof: int) -> Groups:
    """Merge per-file group moments in file order and build the artifact's ``groups``."""
    total: GroupMoments = {}
    for gm in per_file:
        merge_into(total, gm)
    keys: dict[Key, dict[str, FeatureStats]] = {}
    for key in sort_keys(total):
        keys[key] = {name: FeatureStats.from_moments(m, dtypes[name], ddof)
                     for name, m in total[key].items() if m.count > 0}
    return Groups(by=tuple(by), keys=keys)


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

    def rows(self, table: pa.Table, where: str | None = None) -> np.ndarray:
        """Per row, its key's index (len(keys) for global, -1 for missing under "null")."""
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
        return lookup[code] if len(code) else np.zeros(0, dtype=np.int64)


def _show(key: Key) -> str:
    return repr(key[0]) if len(key) == 1 else repr(tuple(key))
