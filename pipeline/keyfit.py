"""The ``--group-by`` side of a fit on the client: which key columns, typed how, and limits.

:func:`check_group_by` validates the key columns (stored columns or hive partition
keys), :func:`key_spec` types hive values as readers show them (see
:func:`pipeline.groups.hive_kinds`), :class:`KeyGuard` refuses a fit as soon as
the distinct keys seen pass ``max_keys`` (results are counted as they arrive, not
after all are merged), and :func:`finish_groups` merges and checks the per-key
statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .dataset import Dataset
from .errors import DataError, InputError, option
from .feature_stats import Groups
from .groups import finalize_groups, hive_kinds, hive_value, too_many_keys
from .keystats import KeyMoments
from .moments import KeySpec
from .schema import split_names
from .stats import MAX_STD, MIN_STD


def check_group_by(dataset: Dataset, features: Sequence[str], group_by: Sequence[str]
                   ) -> list[str]:
    """Validate ``group_by`` columns: stored in the files or hive partition keys, not features."""
    by = split_names(group_by)
    for b in by:
        named = f"{option('group_by')} column '{b}'"
        if b not in dataset.schema.names and b not in dataset.schema.partition_keys:
            raise InputError(f"{named} is neither a column of the files nor a hive partition "
                             "key; available: " + ", ".join(
                                 [*dataset.schema.partition_keys, *dataset.schema.names][:30]),
                             column=b)
        if b in dataset.schema.varying:
            raise InputError(f"{named} differs in type or presence between files (see the "
                             "warning above); its keys would not compare: fix the files",
                             column=b)
        if b in features:
            raise InputError(f"{named} is also a selected feature; exclude it with "
                             f"{option('exclude', b)}", column=b)
    return by


def key_spec(dataset: Dataset, by: Sequence[str], max_keys: int) -> KeySpec:
    """The workers' :class:`KeySpec`: hive keys among ``by`` typed over the whole dataset."""
    hive_by = [b for b in by if b not in dataset.schema.names]
    raw = {b: [dict(f.partition)[b] for f in dataset.files] for b in hive_by}
    kinds = hive_kinds(raw)
    hive = {f.rel: {b: hive_value(dict(f.partition)[b], kinds[b]) for b in hive_by}
            for f in dataset.files} if hive_by else {}
    return KeySpec(by=tuple(by), hive=hive, max_keys=max_keys)


def cache_tag(spec: KeySpec) -> list[Any]:
    """What per-key cache entries depend on besides the file: the key columns and how
    their hive values are typed (a new text value turns an integer key into text)."""
    kinds = sorted({(b, type(v).__name__) for p in spec.hive.values() for b, v in p.items()
                    if v is not None})
    return [list(spec.by), [list(k) for k in kinds]]


class KeyGuard:
    """Counts distinct keys as per-file results arrive; refuses past ``limit`` (0: none)."""

    def __init__(self, by: Sequence[str], limit: int):
        self.by, self.limit = list(by), limit
        self.seen: set[Any] = set()

    def see(self, _item: Any, result: Any) -> None:
        if not self.limit:
            return
        self.seen.update(result[1].keys)
        if len(self.seen) > self.limit:
            raise too_many_keys(self.by, len(self.seen), self.limit, " so far")


def finish_groups(by: Sequence[str], per_file: Sequence[KeyMoments],
                  dtypes: Mapping[str, str], ddof: int) -> Groups:
    """Merge per-file key moments in file order; refuse a key's std outside float64's range."""
    from .artifact_keys import KeyTable, spread_problem

    groups = finalize_groups(by, per_file, dtypes, ddof)
    assert isinstance(groups.keys, KeyTable)
    problem = spread_problem(groups.keys, lambda s: (s >= MIN_STD) & (s <= MAX_STD))
    if problem is not None:
        name, key, std = problem
        names = ",".join(by)
        raise DataError(f"column '{name}' within key {list(key)} of "
                        f"{option('group_by', names, cli=names)} has std {std:.3g}, outside "
                        "float64's range for squares (1.5e-154 to 6.7e153); rescale the column "
                        f"or exclude it with {option('exclude', name)}", column=name)
    return groups
