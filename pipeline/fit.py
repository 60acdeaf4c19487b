"""The statistics pass: per-file moments on the workers, one canonical merge.

Each task reads only the feature columns of its files, batch by batch (so a
file larger than memory is fine), and returns one :class:`Moments` per file
and feature.  The client folds them in sorted relative-path order, so the
result is bit-identical however many workers ran and whichever finished first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .artifact import FeatureStats, FittedStats, now_iso, tool_version
from .cluster import breadcrumb
from .columns import numpy_view
from .dataset import Dataset, SourceFile, open_parquet
from .errors import DataError, InputError
from .groups import GroupMoments, codes, finalize_groups, merge_into
from .schema import as_option
from .stats import Moments, std_in_range

if TYPE_CHECKING:
    import dask.dataframe as dd

    from .cache import Cache
    from .cluster import Session

BATCH_ROWS = 1 << 16  # rows per chunk: big enough for numpy, small enough for L2-friendly passes

FileMoments = dict[str, Moments]


# ------------------------------------------------------------------ workers
def column_moments(arr: pa.Array | pa.ChunkedArray) -> Moments:
    """Moments of one Arrow column: nulls and NaN are missing, +-inf counted apart."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    missing = arr.null_count
    if missing:
        arr = arr.drop_null()
    x = numpy_view(arr)
    inf = 0
    total = None
    if x.dtype.kind == "f":
        # A NaN or an infinity makes the sum non-finite: one pass instead of two
        # (isfinite, then all) in the common case, and the sum is needed anyway.
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, overflow: handled
            total = float(np.sum(x, dtype=np.float64))
        if not math.isfinite(total):
            total = None
            finite = np.isfinite(x)
            if not finite.all():
                nan = int(np.isnan(x).sum())
                inf = int(x.size - finite.sum()) - nan
                missing += nan
                x = x[finite]
    return Moments.from_array(x, missing=missing, inf=inf, total=total)


def batch_group_moments(table: pa.Table, features: Sequence[str], by: Sequence[str]
                        ) -> GroupMoments:
    """Moments of each feature within each key of one batch: :func:`column_moments` per key."""
    code, keys = codes(table, by)
    order = np.argsort(code, kind="stable")
    bounds = np.searchsorted(code[order], np.arange(len(keys) + 1))
    take = pa.array(order)
    out: GroupMoments = {k: {} for k in keys}
    for name in features:
        col = table.column(name)
        ordered = (col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col).take(take)
        for g, key in enumerate(keys):
            lo, hi = int(bounds[g]), int(bounds[g + 1])
            out[key][name] = column_moments(ordered.slice(lo, hi - lo))
    return out


def file_moments(fs: Any, file: SourceFile, features: Sequence[str],
                 batch_rows: int = BATCH_ROWS, by: Sequence[str] = ()
                 ) -> FileMoments | tuple[FileMoments, GroupMoments]:
    """Moments of each feature of one file, folded over its batches in order.

    With ``by`` (``--group-by`` columns), also the moments within each key; the
    global moments are the same, bit for bit, as without.
    """
    result = {name: Moments() for name in features}
    groups: GroupMoments = {}
    columns = list(features) + [b for b in by if b not in features]
    breadcrumb(file.rel)
    try:
        for batch in _batches(open_parquet(fs, file.path), columns, batch_rows):
            for name in features:
                result[name] = result[name].merge(column_moments(batch.column(name)))
            if by:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                merge_into(groups, batch_group_moments(table, features, by))
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise DataError(f"cannot read {file.rel}: {' '.join(str(exc).split())[:300]}; "
                        "the file is corrupt: replace or remove it", path=file.rel) from None
    return (result, groups) if by else result


def _batches(pf: Any, columns: list[str], batch_rows: int) -> Any:
    """``columns`` of a file in batches of ``batch_rows`` rows (the last one shorter).

    The batches run across row groups, so a file of at most ``batch_rows`` rows is
    one batch: read in one call, without a batch reader's set-up (a quarter of the
    cost of reading a 100-row file).
    """
    if 0 < pf.metadata.num_rows <= batch_rows:
        yield pf.read(columns=columns, use_threads=False)
        return
    yield from pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False)


def files_moments(fs: Any, files: Sequence[SourceFile], features: Sequence[str],
                  by: Sequence[str] = ()) -> list[Any]:
    """:func:`file_moments` over a batch of files: the unit of work of one task."""
    return [file_moments(fs, f, features, by=by) for f in files]


# ------------------------------------------------------------------- client
def finalize(features: Sequence[str], dtypes: Mapping[str, str],
             pieces: Sequence[tuple[str, FileMoments]], *, ddof: int, inf: str,
             source: Mapping[str, Any], warn: Any = None) -> FittedStats:
    """Merge per-piece moments in the order given and build the artifact.

    ``pieces`` pairs a label (a file's relative path) with its moments, in the
    canonical order; the label names the culprit in errors.

    Raises
    ------
    DataError
        A feature with infinite values (``inf="error"``) or with no value at all.
    """
    warn = warn or (lambda msg: None)
    feats: dict[str, FeatureStats] = {}
    for name in features:
        total = Moments.merge_all(fm[name] for _, fm in pieces)
        if total.inf and inf == "error":
            where = next(label for label, fm in pieces if fm[name].inf)
            raise DataError(f"column '{name}' has {total.inf} infinite value(s), e.g. in "
                            f"{where}; fix the data, exclude the column, or pass --inf null "
                            "to treat them as missing", column=name, path=where)
        if total.count == 0 and not total.missing + total.inf:
            raise DataError("the input has no rows: every file is empty; there is nothing to "
                            "fit", column=name)
        if total.count == 0:
            raise DataError(f"column '{name}' has no values (all {total.missing + total.inf} "
                            "are missing); exclude it with --exclude " + as_option(name),
                            column=name)
        feats[name] = FeatureStats.from_moments(total, dtype_name(dtypes[name]), ddof)
        check_spread(name, feats[name])
        if total.constant:
            warn(f"column '{name}' is constant ({feats[name].min!r}): its std is 0 and its "
                 "standardized values will be 0.0")
    return FittedStats(features=feats, ddof=ddof, inf=inf, created=now_iso(),
                       tool_version=tool_version(), input=dict(source))


def dtype_name(arrow_type: str) -> str:
    """The artifact's name of an Arrow type (``float32`` for Arrow's ``float``, ...)."""
    return {"float": "float32", "double": "float64", "halffloat": "float16"}.get(
        arrow_type, arrow_type)


def check_spread(name: str, f: FeatureStats, key: str = "") -> None:
    """Refuse a non-constant feature whose std is outside float64's range for squares.

    See :data:`pipeline.stats.MIN_STD`: below it squares of deviations underflow, so
    no digit of the std can be trusted; above :data:`~pipeline.stats.MAX_STD` sums of
    squares overflow.  ``key`` names a ``--group-by`` key in the message.
    """
    if f.constant or std_in_range(f.std):
        return
    where = f" within {key}" if key else ""
    if f.std < 1:
        what, fix = "too small", "multiply it by a power of ten"
    else:
        what, fix = "too large", "divide it by a power of ten"
    raise DataError(f"column '{name}'{where} has std {f.std:.3g}, {what} for float64 squares "
                    "(the supported range is 1.5e-154 to 6.7e153); rescale the column "
                    f"({fix}) or exclude it with --exclude {as_option(name)}", column=name)


def check_options(ddof: int, inf: str) -> None:
    if ddof not in (0, 1):
        raise InputError(f"--ddof must be 0 or 1, not {ddof}")
    if inf not in ("error", "null"):
        raise InputError(f"--inf must be 'error' or 'null', not {inf!r}")


def fit_dataset(session: Session, dataset: Dataset, features: Sequence[str], *,
                ddof: int = 0, inf: str = "error", filters: Sequence[str] = (),
                cache: Cache | None = None, group_by: Sequence[str] = ()) -> FittedStats:
    """The statistics pass over a validated dataset, on ``session``'s cluster.

    With a ``cache``, files whose moments it holds are not read, and the moments
    of the others are stored in it.  With ``group_by``, statistics per key too.
    """
    check_options(ddof, inf)
    by = check_group_by(dataset, features, group_by, cache)
    fs = dataset.location.fs
    files = list(dataset.files)
    known = cache.moments(files, features, inf, BATCH_ROWS) if cache is not None else {}
    todo = [f for f in files if f.rel not in known]
    rows = {f.rel: ft.rows for f, ft in zip(files, dataset.footers, strict=True)}
    fresh = session.map(partial(files_moments, fs, features=list(features), by=by), todo,
                        label="fit", weights=[f.size for f in todo],
                        rows=[rows[f.rel] for f in todo]) if todo else []
    per_group: list[GroupMoments] = []
    if by:
        fresh, per_group = [r[0] for r in fresh], [r[1] for r in fresh]
    if cache is not None:
        if todo:
            cache.put_moments(todo, features, inf, BATCH_ROWS, fresh)
        session.console.info(f"cache: {len(known)} of {len(files)} files' moments reused, "
                             f"{len(todo)} read")
    by_rel = {**known, **{f.rel: m for f, m in zip(todo, fresh, strict=True)}}
    per_file = [by_rel[f.rel] for f in files]
    dtypes = {n: str(dataset.schema.field(n).type) for n in features}
    source = {"path": dataset.location.display, "files": len(dataset.files),
              "rows": dataset.rows, "fingerprint": dataset.fingerprint}
    if filters:
        source["filters"] = list(filters)
    stats = finalize(features, dtypes, list(zip((f.rel for f in dataset.files), per_file,
                                                strict=True)),
                     ddof=ddof, inf=inf, source=source, warn=session.warn)
    if not by:
        return stats
    groups = finalize_groups(by, per_group, {n: stats.features[n].dtype for n in features}, ddof)
    for key, feats in groups.keys.items():
        for name, f in feats.items():
            check_spread(name, f, key=f"key {list(key)} of --group-by {','.join(by)}")
    session.console.info(f"group-by {', '.join(by)}: {len(groups.keys)} keys")
    return replace(stats, groups=groups)


def check_group_by(dataset: Dataset, features: Sequence[str], group_by: Sequence[str],
                   cache: Any = None) -> list[str]:
    """Validate ``--group-by`` columns: present in the files, not features, no cache."""
    by = split_names(group_by)
    for b in by:
        if b not in dataset.schema.names:
            raise InputError(f"--group-by column '{b}' is not a column of the files (hive "
                             "partition keys cannot be used); available: "
                             + ", ".join(dataset.schema.names[:30]), column=b)
        if b in dataset.schema.varying:
            raise InputError(f"--group-by column '{b}' differs in type or presence between "
                             "files (see the warning above); its keys would not compare: fix "
                             "the files", column=b)
        if b in features:
            raise InputError(f"--group-by column '{b}' is also a selected feature; exclude it "
                             f"with --exclude {as_option(b)}", column=b)
    if by and cache is not None:
        raise InputError("--cache cannot be combined with --group-by yet; drop one of them")
    return by


# --------------------------------------------------------------- public API
def fit(source: str | os.PathLike[str] | dd.DataFrame, *,
        features: str | Sequence[str] | None = None, exclude: str | Sequence[str] = (),
        ddof: int = 0, inf: str = "error", filters: Sequence[str] = (),
        cache: str | None = None, group_by: str | Sequence[str] = (), client: Any = None,
        storage_options: Mapping[str, Any] | None = None) -> FittedStats:
    """Fit global per-feature mean and standard deviation in one distributed pass.

    Parameters
    ----------
    source : str, path or dask.dataframe.DataFrame
        A directory (or fsspec URL) of Parquet files, possibly hive-partitioned;
        or a Dask DataFrame, whose partitions are merged in partition order.
    features : str or list of str, optional
        Names or shell globs (``"f*"``); default every integer and floating
        column except hive partition keys.
    exclude : str or list of str
        Names or globs to leave out.
    ddof : {0, 1}
        0 for the population std (default, as scikit-learn), 1 for the sample std.
    inf : {"error", "null"}
        What infinite values are: an error, or missing.
    filters : list of str
        Hive-partition filters such as ``["day >= 2026-01-01", "day < 2026-02-01"]``.
    cache : str, optional
        A directory or fsspec URL keeping per-file footers and moments: a re-fit
        reads only new or changed files and gives bit-identical statistics.
    group_by : str or list of str
        Key columns: statistics per key value too (see :mod:`pipeline.groups`);
        they are left out of the default feature selection.
    client : distributed.Client, optional
        Default: the current client if there is one, else an embedded local
        cluster started for this call.
    storage_options : dict, optional
        Passed to fsspec (``{"endpoint_url": ...}``).

    Returns
    -------
    FittedStats

    Raises
    ------
    InputError
        Bad options, unknown or non-numeric columns, unreadable files, features
        with no values or (``inf="error"``) infinite values.

    Examples
    --------
    >>> stats = fit("data/train", exclude="label")        # doctest: +SKIP
    >>> stats.save("stats.json")                          # doctest: +SKIP
    """
    from .cluster import session_for

    check_options(ddof, inf)
    if not isinstance(source, str | os.PathLike):
        return _fit_frame(source, features=features, exclude=exclude, ddof=ddof, inf=inf,
                          client=client)
    from .dataset import inspect, scan
    from .location import resolve
    from .targets import check

    opts = dict(storage_options or {})
    loc = resolve(source, opts)
    listing = scan(loc, filters)
    check(loc, listing.links, cache=resolve(cache, opts) if cache else None)
    with session_for(client) as session:
        store = open_cache(cache, opts, session.warn)
        dataset, chosen = inspect(loc, session.mapper, features, exclude, filters=filters,
                                  cache=store, listing=listing, warn=session.warn)
        chosen = without_keys(chosen, group_by, explicit=features is not None)
        return fit_dataset(session, dataset, chosen, ddof=ddof, inf=inf, filters=filters,
                           cache=store, group_by=group_by)


def split_names(value: str | Sequence[str] | None) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return [x.strip() for x in items if x.strip()]


def without_keys(chosen: list[str], group_by: str | Sequence[str], *, explicit: bool
                 ) -> list[str]:
    """Drop ``--group-by`` columns from a default feature selection (keys are not features)."""
    keys = set(split_names(group_by))
    if explicit or not keys:
        return chosen
    kept = [c for c in chosen if c not in keys]
    if not kept:
        raise InputError("no numeric feature column left besides the --group-by columns")
    return kept


def open_cache(location: str | None, options: Mapping[str, Any], warn: Any) -> Cache | None:
    from .cache import Cache

    return Cache(location, dict(options), warn) if location else None


def _fit_frame(ddf: dd.DataFrame, *, features: Any, exclude: Any, ddof: int, inf: str,
               client: Any) -> FittedStats:
    import dask

    from .schema import Schema, select_features

    meta = pa.Schema.from_pandas(ddf._meta, preserve_index=False)
    schema = Schema(fields=tuple(meta), partition_keys=())
    chosen = select_features(schema, features, exclude)
    parts = ddf[chosen].to_delayed()
    kwargs = {"scheduler": client} if client is not None else {}
    per_part = dask.compute(*[dask.delayed(_frame_moments)(p, chosen) for p in parts], **kwargs)
    rows = sum(m.count + m.missing + m.inf for m in (pm[chosen[0]] for pm in per_part))
    return finalize(chosen, {n: str(schema.field(n).type) for n in chosen},
                    [(f"partition {i}", pm) for i, pm in enumerate(per_part)], ddof=ddof,
                    inf=inf, source={"path": "<dask DataFrame>", "files": len(parts),
                                     "rows": int(rows)})


def _frame_moments(df: Any, features: Sequence[str]) -> FileMoments:
    table = pa.Table.from_pandas(df[list(features)], preserve_index=False)
    return {name: column_moments(table.column(name)) for name in features}
