"""A dataset's schema: footers checked against each other, and the features selected.

Every problem is collected and reported at once, each with the file's path
relative to the dataset root, before any data is read.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pyarrow as pa

from .errors import DataError, InputError, option

MAX_PROBLEMS = 20  # problems listed in one error; the rest are counted


def is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


@dataclass(frozen=True)
class Footer:
    """What a file's footer says (or why it could not be read): read by :mod:`pipeline.dataset`."""

    rel: str
    rows: int = 0
    row_groups: tuple[int, ...] = ()
    schema: pa.Schema | None = None
    error: str | None = None
    digest: str = ""  # the file's identity: see pipeline.dataset.file_digest


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
    # Pass-through columns whose type or presence differs between files (each output
    # file keeps its input's), and what to tell the user about them.
    varying: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

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
             exclude: str | Sequence[str] = (), origin: str = "features"
             ) -> tuple[Schema, list[str]]:
    """Check every footer against the dataset's schema and select the features.

    Parameters
    ----------
    footers
        One per file, in sorted relative-path order.
    partition_keys
        Hive keys (not stored in the files).
    features, exclude
        ``--features`` / ``--exclude`` as for :func:`select_features`.

    Returns
    -------
    schema, features
        ``schema.notes`` holds the warnings to show: pass-through columns whose
        type or presence differs between files (allowed: each output file keeps
        its input file's schema for every column that is not a feature), and
        stored columns named like a hive partition key.

    Raises
    ------
    DataError
        One error listing every unreadable file, every file with a duplicate
        column name, every selected feature missing from some files, and every
        selected feature whose type is not numeric in all files, each with the
        file's path relative to the dataset root.  A feature may be stored with
        different numeric widths in different files.
    InputError
        A bad feature selection (see :func:`select_features`).
    """
    problems: list[str] = [f"{f.rel} {f.error}" for f in footers if f.error]
    good = []
    same = _same_schemas(footers)
    verdicts: dict[int, str | None] = {}  # per distinct schema: what is wrong with its names
    for f in footers:
        if f.schema is None:
            continue
        first = same[id(f)]
        if id(first) not in verdicts:
            verdicts[id(first)] = _names_problem(f.schema.names)
        problem = verdicts[id(first)]
        if problem:
            problems.append(f"{f.rel} {problem}")
        else:
            good.append(f)
    if not good:
        _raise(problems, footers)
    order: dict[str, pa.Field] = {}
    types: dict[str, Counter[pa.DataType]] = {}
    groups: dict[int, list[Footer]] = {}
    for f in good:
        groups.setdefault(id(same[id(f)]), []).append(f)
    for members in groups.values():
        assert members[0].schema is not None
        for fld in members[0].schema:
            order.setdefault(fld.name, fld)
            types.setdefault(fld.name, Counter())[fld.type] += len(members)
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
    notes, varying = _drift(schema, good, list(groups.values()), types, chosen, problems)
    if problems:
        _raise(problems, footers)
    return replace(schema, varying=tuple(varying), notes=tuple(notes)), chosen


def _names_problem(names: list[str]) -> str | None:
    """What is wrong with a file's column names (none, or one twice), or None."""
    counts = Counter(names)
    twice = [n for n, k in counts.items() if k > 1]
    if not names:
        return "has no columns; remove it or write it with the dataset's columns"
    if twice:
        return (f"has column '{twice[0]}' {_times(counts[twice[0]])}"
                + (f" (and {len(twice) - 1} more duplicate names)" if len(twice) > 1 else "")
                + "; rewrite the file with distinct column names")
    return None


def _same_schemas(footers: Sequence[Footer]) -> dict[int, Footer]:
    """For each footer (by ``id``), the first footer whose schema equals its own.

    Ten thousand files usually hold a handful of schemas: checking each distinct one
    once instead of each file (a second per 10,000 files) changes no verdict, as
    ``Schema.equals`` compares names, types and order.  Only the last few distinct
    schemas are compared with (a dataset whose every file differs is still checked
    file by file).
    """
    out: dict[int, Footer] = {}
    recent: list[Footer] = []
    for f in footers:
        if f.schema is None:
            continue
        first = next((g for g in recent if g.schema is not None and g.schema.equals(f.schema)),
                     None)
        if first is None:
            first = f
            recent = [f, *recent[:7]]
        out[id(f)] = first
    return out


def _drift(schema: Schema, good: Sequence[Footer], groups: Sequence[Sequence[Footer]],
           types: dict[str, Counter[pa.DataType]], chosen: Sequence[str], problems: list[str]
           ) -> tuple[list[str], list[str]]:
    """Columns that differ between files: problems for features, notes for the rest.

    ``groups``: ``good`` (in path order) grouped by equal schemas (:func:`_same_schemas`).
    """
    notes: list[str] = []
    varying: list[str] = []
    for fld in schema.fields:
        name = fld.name
        feature = name in chosen
        if name in schema.partition_keys:
            notes.append(f"column '{name}' is stored in the files and is also a hive partition "
                         "key; the stored column is passed through unchanged, never normalized")
        lacking = sorted(f.rel for members in groups if members[0].schema is not None
                         and members[0].schema.get_field_index(name) < 0 for f in members)
        counts = types[name]
        drift = len(counts) > 1 and not (feature and all(is_numeric(t) for t in counts))
        if (lacking or drift) and not feature:
            varying.append(name)
        if lacking:
            where = (f"'{name}' is missing from {_some(lacking)} but present in "
                     f"{len(good) - len(lacking)} other file(s)")
            if feature:
                problems.append(f"selected feature {where}; exclude it with "
                                f"{option('exclude', name)} or fix the files")
            else:
                notes.append(f"pass-through column {where}; each output file keeps the "
                             "columns of its input file")
        if drift:
            majority = fld.type
            odd = next((f, f.schema.field(name).type) for f in good if f.schema is not None
                       and f.schema.get_field_index(name) >= 0
                       and f.schema.field(name).type != majority)
            where = (f"'{name}' is {odd[1]} in {odd[0].rel} but {majority} in "
                     f"{counts[majority]} other file(s)")
            if feature:
                problems.append(f"column {where}; exclude it with {option('exclude', name)} "
                                "or fix the file")
            else:
                notes.append(f"pass-through column {where}; each output file keeps the type "
                             "of its input file")
    return notes, varying


def _times(k: int) -> str:
    return "twice" if k == 2 else f"{k} times"


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
                    exclude: str | Sequence[str] = (), origin: str = "features") -> list[str]:
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
    if features is not None and not wanted:
        # An empty list (often an unset shell variable: --features "$COLS") is not
        # "every column": normalizing ids and labels silently is the worse mistake.
        raise InputError(f"{option(origin)} is empty; name the columns to normalize, or "
                         f"leave {option(origin)} out to normalize every numeric column")
    keys = [w for w in wanted if w in schema.partition_keys]
    if keys:
        what = (f"column '{keys[0]}' of the statistics" if origin == "statistics"
                else f"{option(origin)} '{keys[0]}'")
        raise InputError(f"{what} is a hive partition key; partition keys (and "
                         "stored columns of the same name) are passed through, never "
                         "normalized", column=keys[0])
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
    dropped = set(_match(_split(exclude), schema.names, "exclude"))
    chosen = [n for n in chosen if n not in dropped]
    if not chosen:
        if not any(is_numeric(schema.field(n).type) for n in names):
            raise InputError("no integer or floating column to normalize; the columns are "
                             + ", ".join(f"{n} ({schema.field(n).type})" for n in names[:30]))
        raise InputError("no numeric feature column selected; available columns: "
                         + ", ".join(names[:30]))
    return chosen


def _split(spec: str | Sequence[str] | None) -> list[str]:
    """Names from a comma-separated option; ``\\,`` is a comma inside a name."""
    if not spec:
        return []
    items = ([s.replace("\\,", ",") for s in re.split(r"(?<!\\),", spec)]
             if isinstance(spec, str) else list(spec))
    return [s.strip() for s in items if s.strip()]



def _match(patterns: list[str], names: list[str], origin: str) -> list[str]:
    chosen: list[str] = []
    for pat in patterns:
        hits = [n for n in names if n == pat or fnmatch.fnmatchcase(n, pat)]
        if not hits:
            what = (f"column '{pat}' of the statistics is not in the input" if origin ==
                    "statistics" else f"{option(origin)} '{pat}' matches no column")
            raise InputError(f"{what}; available columns: " + ", ".join(names[:30]),
                             column=pat)
        chosen.extend(h for h in hits if h not in chosen)
    return [n for n in names if n in chosen]


def split_names(value: str | Sequence[str] | None) -> list[str]:
    """Names from a comma-separated string or a list (``group_by``), blanks dropped."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return [x.strip() for x in items if x.strip()]


def without_keys(chosen: list[str], group_by: Sequence[str], *, explicit: bool) -> list[str]:
    """Drop ``group_by`` columns from a default feature selection (keys are not features)."""
    keys = set(group_by)
    if explicit or not keys:
        return chosen
    kept = [c for c in chosen if c not in keys]
    if not kept:
        raise InputError(f"no numeric feature column left besides the {option('group_by')} "
                         "columns")
    return kept


def dtype_name(arrow_type: str) -> str:
    """The artifact's name of an Arrow type (``float32`` for Arrow's ``float``, ...)."""
    return {"float": "float32", "double": "float64", "halffloat": "float16"}.get(
        arrow_type, arrow_type)
