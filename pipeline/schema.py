"""A dataset's schema: footers checked against each other, and the features selected.

Every problem is collected and reported at once, each with the file's path
relative to the dataset root, before any data is read.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from .errors import DataError, InputError

if TYPE_CHECKING:
    from .dataset import Footer

MAX_PROBLEMS = 20  # problems listed in one error; the rest are counted


def is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


@dataclass(frozen=True)
class Schema:
    """The validated schema of a whole dataset.

    ``fields`` keeps the column order of the first file.  A feature may be
    stored with different numeric widths in different files (pandas writes an
    int column with a null as float64); its dataset type is the widest, see
    :func:`unify_numeric`.
    """

    fields: tuple[pa.Field, ...]
    partition_keys: tuple[str, ...]
    index_columns: tuple[str, ...] = ()  # a pandas index stored as columns: never a feature

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> pa.Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def unify_numeric(types: Sequence[pa.DataType]) -> pa.DataType:
    """The one type of a feature stored with ``types`` in different files.

    The common type when there is one; the widest float when every file stores a
    float (float16 and float32 give float32); float64 otherwise (an integer type
    next to a float or another integer type: float64 is what the transform
    computes in, and what ``--dtype preserve`` writes for integers anyway).
    """
    if all(t == types[0] for t in types):
        return types[0]
    if all(pa.types.is_floating(t) for t in types):
        return max(types, key=lambda t: t.bit_width)
    return pa.float64()


def validate(footers: Sequence[Footer], partition_keys: Sequence[str],
             features: str | Sequence[str] | None = None,
             exclude: str | Sequence[str] = (), origin: str = "--features"
             ) -> tuple[Schema, list[str]]:
    """Check every footer against the dataset's schema and select the features.

    Parameters
    ----------
    footers
        One per file, in sorted relative-path order.
    partition_keys
        Hive keys (not stored in the files).
    features, exclude
        ``--features`` / ``--exclude`` as for :func:`select_features`.  A selected
        feature may be stored with different numeric widths in different files;
        every other column must have one type across files.

    Returns
    -------
    schema, features

    Raises
    ------
    DataError
        One error listing every unreadable file, every column missing from some
        files, and every column whose type differs between files, each with the
        file's path relative to the dataset root.
    InputError
        A bad feature selection (see :func:`select_features`).
    """
    problems: list[str] = [f"{f.rel} {f.error}" for f in footers if f.error]
    good = [f for f in footers if f.schema is not None]
    if not good:
        _raise(problems, footers)
    order: dict[str, pa.Field] = {}
    types: dict[str, Counter[pa.DataType]] = {}
    for f in good:
        assert f.schema is not None
        for fld in f.schema:
            order.setdefault(fld.name, fld)
            types.setdefault(fld.name, Counter())[fld.type] += 1
    fields = []
    for name, fld in order.items():
        counts = types[name]
        if all(is_numeric(t) for t in counts):
            fields.append(fld.with_type(unify_numeric(list(counts))))
        else:
            fields.append(fld.with_type(counts.most_common(1)[0][0]))
    schema = Schema(fields=tuple(fields), partition_keys=tuple(partition_keys),
                    index_columns=_pandas_index(good[0].schema))
    try:
        chosen = select_features(schema, features, exclude, origin)
    except InputError as exc:
        if not problems:
            raise
        problems.append(exc.message)
        chosen = []
    for fld in fields:
        name = fld.name
        lacking = [f.rel for f in good if f.schema is not None
                   and f.schema.get_field_index(name) < 0]
        if lacking:
            kind = "selected feature" if name in chosen else "column"
            problems.append(f"{kind} '{name}' is missing from {_some(lacking)} "
                            f"but present in {len(good) - len(lacking)} other file(s)")
        counts = types[name]
        if len(counts) > 1 and not (name in chosen and all(is_numeric(t) for t in counts)):
            majority = fld.type
            for f in good:
                assert f.schema is not None
                i = f.schema.get_field_index(name)
                if i >= 0 and f.schema.field(i).type != majority:
                    problems.append(
                        f"column '{name}' is {f.schema.field(i).type} in {f.rel} but "
                        f"{majority} in {counts[majority]} other file(s); "
                        f"exclude it with --exclude {name} or fix the file")
                    break
    if problems:
        _raise(problems, footers)
    return schema, chosen


def _pandas_index(schema: pa.Schema | None) -> tuple[str, ...]:
    """Columns that hold a pandas index (``__index_level_0__`` or a named index)."""
    import json

    raw = (schema.metadata or {}).get(b"pandas") if schema is not None else None
    try:
        cols = json.loads(raw)["index_columns"] if raw else []
    except (ValueError, KeyError, TypeError):
        cols = []
    return tuple(c for c in cols if isinstance(c, str))


def _some(items: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(items[:k])
    return shown + (f" and {len(items) - k} more" if len(items) > k else "")


def _raise(problems: list[str], footers: Sequence[Footer]) -> None:
    if not problems:
        problems = ["no readable Parquet file"]
    shown = problems[:MAX_PROBLEMS]
    more = f"; and {len(problems) - MAX_PROBLEMS} more problems" if len(problems) > MAX_PROBLEMS \
        else ""
    head = f"{len(problems)} problem(s) in the input: " if len(problems) > 1 else ""
    first_path = next((f.rel for f in footers if f.error), None)
    raise DataError(head + "; ".join(shown) + more, path=first_path)


# ----------------------------------------------------------------- features
def select_features(schema: Schema, features: str | Sequence[str] | None = None,
                    exclude: str | Sequence[str] = (), origin: str = "--features") -> list[str]:
    """Resolve ``--features`` / ``--exclude`` (names and shell globs) to column names.

    Default: every integer and floating column, minus hive partition keys, columns
    holding a pandas index, and ``exclude``.  The result keeps the dataset's column order.

    Raises
    ------
    InputError
        A name or pattern matching no column, a non-numeric column asked for
        explicitly, or an empty selection.
    """
    names = [n for n in schema.names if n not in schema.partition_keys]
    wanted = _split(features)
    if wanted:
        chosen = _match(wanted, names, origin)
        for name in chosen:
            t = schema.field(name).type
            if not is_numeric(t):
                raise InputError(f"column '{name}' is {t}, not numeric; only integer and "
                                 "floating columns can be normalized", column=name)
    else:
        chosen = [n for n in names if is_numeric(schema.field(n).type)
                  and n not in schema.index_columns]
    dropped = set(_match(_split(exclude), schema.names, "--exclude"))
    chosen = [n for n in chosen if n not in dropped]
    if not chosen:
        raise InputError("no numeric feature column selected; available columns: "
                         + ", ".join(names[:30]))
    return chosen


def _split(spec: str | Sequence[str] | None) -> list[str]:
    if not spec:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [s.strip() for s in items if s.strip()]


def _match(patterns: list[str], names: list[str], option: str) -> list[str]:
    chosen: list[str] = []
    for pat in patterns:
        hits = [n for n in names if n == pat or fnmatch.fnmatchcase(n, pat)]
        if not hits:
            what = (f"column '{pat}' of the statistics is not in the input" if option ==
                    "statistics" else f"{option} '{pat}' matches no column")
            raise InputError(f"{what}; available columns: " + ", ".join(names[:30]),
                             column=pat)
        chosen.extend(h for h in hits if h not in chosen)
    return [n for n in names if n in chosen]
