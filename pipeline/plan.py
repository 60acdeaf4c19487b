"""Applying fitted statistics: the plan, and the Arrow front end of the kernel.

* :func:`pipeline.kernel.scale_array` -- the kernel: any numeric numpy array in,
  float64 out, with per-row statistics for per-key plans (the global case is one
  group); exact for 64-bit integers too (see :mod:`pipeline.kernel`).
* :func:`transform_table` -- Arrow tables / record batches (the writer's path).
* :func:`pipeline.frames.apply` -- pandas DataFrames, no Dask (serving, notebooks).
* :func:`pipeline.frames.transform` / :func:`~pipeline.frames.inverse_transform` --
  lazy Dask DataFrames (``map_partitions`` of ``apply``; nothing is computed until
  you ask).

Modes: ``standard`` is (x - mean) / std, ``scale`` is x / std, ``center`` is
x - mean, ``minmax`` is (x - min) / (max - min) (no inverse).  A constant
feature (min == max) becomes exactly 0.0 under ``standard``, ``center`` and
``minmax`` and is left unchanged under ``scale``.  Clipping, filling missing
values and indicator columns come after scaling (:mod:`pipeline.finish`).  Missing
values (null or NaN) stay missing.  Infinite values follow the artifact's
``inf`` policy: ``error`` raises naming the column, ``null`` makes them missing.

All arithmetic is float64; the result is cast at the end (``dtype``):
``preserve`` keeps float16, float32 and float64 (the widest type the feature
is stored with in the dataset being written, see :attr:`Plan.types`) and turns
integers into float64, as does the inverse of an integer feature.  A value that
would overflow the output type is an error, never a silent infinity.

This module neither reads nor writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .blocks import BySchema, block_transform
from .choices import DTYPES, MODES, UNSEEN
from .columns import cast, empty, null_mask, numpy_view, one_array
from .errors import ArtifactError, DataError, InputError, option
from .feature_stats import Statistics
from .finish import NO_FINISH, FinishOptions, check_indicator_names, clip_in_place, indicator
from .groups import GroupPlan, UnseenTally
from .kernel import ColumnPlan, scale_array

__all__ = ["DTYPES", "MODES", "ColumnPlan", "Plan", "Transformed", "check_transform_options",
           "output_schema", "scale_array", "transform_array", "transform_arrays",
           "transform_column", "transform_table", "transform_values"]



@dataclass(frozen=True, eq=False)
class Plan:
    """What to do to a table: per-feature constants, the mode and the output dtype.

    ``types`` maps a feature to the type it has in the whole dataset being
    written (the widest type it is stored with); under ``preserve`` its output
    type follows it, so every file gets the same output type.  A feature not in
    ``types`` follows the type of the column at hand.
    """

    columns: tuple[ColumnPlan, ...]
    mode: str = "standard"
    dtype: str = "preserve"
    inf: str = "error"
    inverse: bool = False
    groups: GroupPlan | None = None
    types: Mapping[str, pa.DataType] = field(default_factory=dict)
    finish: FinishOptions = NO_FINISH

    @classmethod
    def build(cls, stats: Statistics, *, mode: str = "standard", dtype: str = "preserve",
              features: Sequence[str] | None = None, inverse: bool = False,
              unseen: str = "global", types: Mapping[str, pa.DataType] | None = None,
              finish: FinishOptions | None = None) -> Plan:
        """Check the options and pick the columns (default: every feature in ``stats``).

        With per-key statistics in ``stats``, each row uses its key's numbers;
        ``unseen`` says what a key not seen at fit time gets (see
        :mod:`pipeline.groups`).  ``types``: see the class docstring.  ``finish``:
        the steps after scaling (:mod:`pipeline.finish`); an inverse plan keeps
        them only to know what the forward transform did (it does not apply them).
        """
        check_transform_options(mode, dtype, unseen)
        if inverse and mode == "minmax":
            raise InputError(f"{option('mode', 'minmax')} has no inverse transform in this "
                             f"version; invert with the mode it was written with, or keep "
                             "the input")
        names = list(stats.features) if features is None else list(features)
        for name in names:
            if name not in stats.features:
                raise ArtifactError(f"column '{name}' is not in the statistics (they hold "
                                    f"{_few(list(stats.features))}); refit including it",
                                    column=name)
        feats, keys = stats.features, stats.groups.keys if stats.groups else {}
        table = stats.groups.table if stats.groups else None  # arrays: no object per key
        bounds = mode == "minmax"  # the exact min and max per key: only minmax reads them
        cols = tuple(ColumnPlan(n, *table.kernel_arrays(n, feats[n], bounds)) if table is not None
                     else ColumnPlan.of(n, [*(k.get(n, feats[n]) for k in keys.values()),
                                            feats[n]]) for n in names)
        groups = GroupPlan.build(stats.groups, unseen) if stats.groups else None
        return cls(columns=cols, mode=mode, dtype=dtype, inf=stats.inf, inverse=inverse,
                   groups=groups, types=dict(types or {}), finish=finish or NO_FINISH)

    @property
    def finishing(self) -> FinishOptions:
        """The steps after scaling that this plan applies (none for an inverse)."""
        return NO_FINISH if self.inverse else self.finish

    def out_type(self, name: str, t: pa.DataType) -> pa.DataType:
        """Arrow type of feature ``name``, stored as ``t`` here, after the transform."""
        if self.dtype == "float32":
            return pa.float32()
        t = self.types.get(name, t)
        if self.dtype == "preserve" and pa.types.is_floating(t):
            return t
        return pa.float64()


def check_transform_options(mode: str, dtype: str, unseen: str = "global") -> None:
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if unseen not in UNSEEN:
        raise InputError(f"{option('unseen')} must be one of {', '.join(UNSEEN)}, not {unseen!r}")


def _few(names: list[str], k: int = 10) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _check_finite(values: np.ndarray, out: np.ndarray, x: np.ndarray,
                  nulls: np.ndarray | None, col: ColumnPlan, plan: Plan, where: str | None
                  ) -> np.ndarray | None:
    """Apply the ``inf`` policy and refuse overflows; return the input's infinities made missing.

    One pass over the result in the common case: an infinity in the input gives one
    in the result, except for constant columns (exactly 0.0), whose input is checked.
    A finite input whose result is infinite overflowed the output type: an error,
    never a silent infinity.  An inverse transform lets infinities through unless
    the policy is ``null``.
    """
    policy = plan.inf == "null" or not plan.inverse
    floating = x.dtype.kind == "f"
    bad = np.isinf(values, out=empty(values.size, bool))
    if not bad.any() and not (floating and policy and col.constant.any()):
        return None
    inf = np.isinf(x) if floating else np.zeros(x.shape, dtype=bool)
    if nulls is not None:
        inf &= ~nulls
    bad &= ~inf
    n = int(bad.sum())
    if n:
        name = values.dtype.name
        fix = (f"pass {option('dtype', 'float64')}" if name != "float64" else
               f"rescale the column or exclude it with {option('exclude', col.name)}")
        raise DataError(f"column '{col.name}' has {n} value(s) that overflow {name} when "
                        "transformed" + (f" in {where}" if where else "") + f"; {fix}",
                        column=col.name, path=where)
    if not policy or not inf.any():
        return None
    if plan.inf == "error":
        place = f" in {where}" if where else ""
        raise DataError(f"column '{col.name}' has {int(inf.sum())} infinite value(s){place}; "
                        f"fix the data or use statistics fitted with {option('inf', 'null')}",
                        column=col.name, path=where)
    values[inf] = np.nan
    out[inf] = np.nan
    return inf


# -------------------------------------------------------------------- arrow
Observer = Callable[[str, np.ndarray, "np.ndarray | None"], None]


@dataclass(frozen=True, eq=False)
class Transformed:
    """One column transformed: its values in the output type, and what finishing did.

    ``filled``: where missing values were filled (``fill_missing``), else None;
    ``clipped``: how many values were clamped to ``[-clip, clip]``.
    """

    values: np.ndarray
    type: pa.DataType
    filled: np.ndarray | None = None
    clipped: int = 0


def transform_column(arr: pa.Array | pa.ChunkedArray, col: ColumnPlan, plan: Plan,
                     where: str | None = None, observe: Observer | None = None,
                     rows: np.ndarray | None = None) -> Transformed:
    """Transform one Arrow column into a numpy array of its output type, then finish it.

    Missing values (null or NaN) come out as NaN unless ``plan.finish`` fills them;
    the caller keeps the validity.  ``observe(name, values, rows)``, if given, sees
    the values as they will be written (the output dtype, NaN for missing) and must
    not modify them, with ``rows`` (None for a global plan).  ``rows`` are the rows'
    key indices for a per-key plan (see :meth:`GroupPlan.rows`).  The order of the
    steps after scaling is :mod:`pipeline.finish`'s.
    """
    arr = one_array(arr)
    t = arr.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise DataError(f"column '{col.name}' is {t}, not numeric" +
                        (f" in {where}" if where else ""), column=col.name, path=where)
    # A zero-copy view: no float64 copy first.  What sits under a null is arbitrary (even
    # an infinity): it goes through the kernel like the rest and is made NaN after.
    x = numpy_view(arr)
    nulls = null_mask(arr) if arr.null_count else None
    grouped = rows if plan.groups is not None else None
    out = scale_array(x, col, plan.mode, plan.inverse, grouped)
    if nulls is not None:
        out[nulls] = np.nan
    finish = plan.finishing
    clipped = clip_in_place(out, x, finish.clip) if finish.clip is not None else 0
    out_type = plan.out_type(col.name, t)
    if out_type == pa.float64():
        values = out
    else:
        with np.errstate(over="ignore"):  # an overflow is refused just below
            values = cast(out, out_type.to_pandas_dtype())
    # From integers, float64 cannot overflow: |x - mean| / std < 2**65 / MIN_STD = 2**576.
    if x.dtype.kind == "f" or values.dtype != np.float64:
        _check_finite(values, out, x, nulls, col, plan, where)  # makes --inf null's NaN
    filled = None
    if finish.fill_missing is not None:
        filled = np.isnan(values)
        values[filled] = finish.fill_missing
    if observe is not None:
        observe(col.name, values, grouped)
    return Transformed(values, out_type, filled, clipped)


def transform_values(arr: pa.Array | pa.ChunkedArray, col: ColumnPlan, plan: Plan,
                     where: str | None = None, observe: Observer | None = None,
                     rows: np.ndarray | None = None) -> tuple[np.ndarray, pa.DataType]:
    """The values and output type of :func:`transform_column` (same parameters)."""
    t = transform_column(arr, col, plan, where, observe, rows)
    return t.values, t.type


def transform_arrays(arr: pa.Array | pa.ChunkedArray, col: ColumnPlan, plan: Plan,
                     where: str | None = None, observe: Observer | None = None,
                     rows: np.ndarray | None = None, clipped: dict[str, int] | None = None
                     ) -> list[pa.Array]:
    """Transform one Arrow column: the feature, then its indicator column if asked for.

    Nulls stay null and NaN stays NaN unless filled.  ``clipped``, if given, gets
    the count of clipped values added under the feature's name.  Other parameters
    as for :func:`transform_column`.
    """
    arr = one_array(arr)
    t = transform_column(arr, col, plan, where, observe, rows)
    if clipped is not None:
        clipped[col.name] = clipped.get(col.name, 0) + t.clipped
    # From buffers, with the input's validity bitmap: nulls stay null, NaN stays NaN, and
    # no pa.array(numpy) call (which imports pandas just to ask if this is a Series).
    nulls = arr.null_count if t.filled is None else 0
    validity = arr.is_valid().buffers()[1] if nulls else None
    out = [pa.Array.from_buffers(t.type, len(t.values), [validity, pa.py_buffer(t.values)],
                                 null_count=nulls)]
    if t.filled is not None and plan.finishing.missing_indicator:
        out.append(pa.array(t.filled, type=pa.bool_()))
    return out


def transform_array(arr: pa.Array | pa.ChunkedArray, col: ColumnPlan, plan: Plan,
                    where: str | None = None, observe: Observer | None = None,
                    rows: np.ndarray | None = None) -> pa.Array:
    """Transform one Arrow column (without its indicator); see :func:`transform_arrays`."""
    return transform_arrays(arr, col, plan, where, observe, rows)[0]


def output_schema(schema: pa.Schema, plan: Plan) -> pa.Schema:
    """``schema`` with each feature's type replaced by its output type (order kept).

    With ``missing_indicator``, each feature is followed by its boolean indicator
    (refused if ``schema`` already has a column of that name).
    """
    # Per file and batch, the same few schemas (1 ms each to build), found by equality:
    # hashing a schema for a dict costs more than comparing it.
    return _OUTPUT_SCHEMAS.get(schema, plan)


def _output_schema(schema: pa.Schema, plan: Plan) -> pa.Schema:
    fields = {c.name for c in plan.columns}
    check_indicator_names(schema.names, fields, plan.finishing)
    marked = plan.finishing.missing_indicator
    out: list[pa.Field] = []
    for f in schema:
        if f.name not in fields:
            out.append(f)
            continue
        out.append(f.with_type(plan.out_type(f.name, f.type)))
        if marked:
            out.append(pa.field(indicator(f.name), pa.bool_()))
    new = pa.schema(out, metadata=schema.metadata)
    return _fix_pandas_metadata(new, fields)


_OUTPUT_SCHEMAS = BySchema(_output_schema, size=32, metadata=True)


def transform_table(table: pa.Table | pa.RecordBatch, plan: Plan, where: str | None = None,
                    observe: Observer | None = None, tally: UnseenTally | None = None,
                    clipped: dict[str, int] | None = None) -> pa.Table:
    """Transform the feature columns of an Arrow table; other columns pass through untouched.

    ``where`` names the source in errors; ``observe`` is as for :func:`transform_array`;
    ``tally`` counts rows with keys unseen at fit time (see :class:`GroupPlan`);
    ``clipped`` gets each feature's count of clipped values added.  Indicator columns
    (``missing_indicator``) come right after their features.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    schema = output_schema(table.schema, plan)  # first: it refuses a clashing indicator
    columns = table.columns
    arrays = [[c] for c in columns]
    index = {name: i for i, name in enumerate(table.column_names)}
    rows = plan.groups.rows(table, where, tally) if plan.groups is not None else None
    # Small batches: many columns per numpy call.
    done = block_transform(table, plan, observe, columns)
    for col in plan.columns:
        if col.name not in index:
            raise DataError(f"column '{col.name}' is missing" + (f" from {where}" if where
                            else ""), column=col.name, path=where)
        i = index[col.name]
        arrays[i] = [done[col.name]] if col.name in done else \
            transform_arrays(table.column(i), col, plan, where, observe, rows, clipped)
    return pa.Table.from_arrays([a for pair in arrays for a in pair], schema=schema)


def _fix_pandas_metadata(schema: pa.Schema, names: set[str]) -> pa.Schema:
    """Keep pandas' schema metadata truthful about the new float types."""
    meta = schema.metadata or {}
    raw = meta.get(b"pandas")
    if not raw:
        return schema
    import json

    try:
        pandas_meta = json.loads(raw)
        for c in pandas_meta.get("columns", []):
            if c.get("name") in names:
                t = schema.field(c["name"]).type
                c["pandas_type"] = c["numpy_type"] = str(t.to_pandas_dtype().__name__)
    except (ValueError, KeyError, TypeError, AttributeError):
        return schema
    return schema.with_metadata({**meta, b"pandas": json.dumps(pandas_meta).encode()})
