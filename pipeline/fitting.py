"""The statistics pass on the client: one way in, one canonical merge, one artifact.

Every fit -- :func:`pipeline.fit`, ``zscore fit``, ``zscore run`` -- goes the same
way: :class:`FitOptions` (checked once), :func:`locate` (resolve and list the input,
check every destination), :func:`prepare_fit` (the validated dataset or frame and
its features), then :func:`fit_prepared` (the pass).  Workers compute moments per
file (:mod:`pipeline.moments`); the client folds them in sorted relative-path
order, so the result is bit-identical however many workers ran and whichever
finished first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .artifact import FittedStats
from .choices import DDOFS, INF_POLICIES, MAX_KEYS
from .dataset import Dataset, load_dataset
from .errors import InputError, option
from .finalize import finalize
from .lakehouse import TableOptions
from .moments import BATCH_ROWS, files_moments, frame_moments
from .schema import split_names, without_keys
from .storage import resolve
from .tables import Located, open_input, plan_output
from .weights import check_weight_column, without_weight

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd

    from .cache import Cache
    from .session import Session


# ------------------------------------------------------------------ options
@dataclass(frozen=True)
class FitOptions:
    """The options of one fit, checked when built (the API, the CLI and the jobs share it).

    ``features``/``exclude`` are names or globs (a string is comma-separated);
    ``group_by`` is normalized to a tuple of names, ``filters`` to a tuple; ``table``
    reads a Delta or Iceberg table input (see :mod:`pipeline.tables`); ``weight``
    names a weight column (see :mod:`pipeline.weights`); ``max_keys`` bounds the
    distinct ``group_by`` keys (see :mod:`pipeline.keyfit`).
    """

    features: str | Sequence[str] | None = None
    exclude: str | Sequence[str] = ()
    ddof: int = 0
    inf: str = "error"
    filters: Sequence[str] = ()
    cache: str | None = None
    group_by: str | Sequence[str] = ()
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    table: TableOptions | None = None
    weight: str | None = None
    max_keys: int = MAX_KEYS

    def __post_init__(self) -> None:
        if not isinstance(self.max_keys, int) or self.max_keys < 1:
            raise InputError(f"{option('max_keys')} must be a positive integer, not "
                             f"{self.max_keys!r}")
        if self.ddof not in DDOFS:
            raise InputError(f"{option('ddof')} must be 0 or 1, not {self.ddof}")
        if self.inf not in INF_POLICIES:
            raise InputError(f"{option('inf')} must be 'error' or 'null', not {self.inf!r}")
        object.__setattr__(self, "group_by", tuple(split_names(self.group_by)))
        object.__setattr__(self, "weight", self.weight or None)
        if self.weight and self.group_by:
            # Per-key moments are arrays (pipeline.keystats) without weights as yet.
            raise InputError(f"{option('weight')} and {option('group_by')} cannot be combined: "
                             "per-key statistics are unweighted; fit weighted without "
                             f"{option('group_by')}, or per key without {option('weight')}")
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "storage_options", dict(self.storage_options or {}))

    @property
    def explicit(self) -> bool:
        """Whether the features were named (else: the default selection)."""
        return self.features is not None


# Options that only mean something for a dataset of files.
_DATASET_ONLY = ("group_by", "filters", "cache", "storage_options", "table")


@dataclass(frozen=True)
class FitInput:
    """What a fit reads: a validated dataset (or an in-memory frame) and its features."""

    features: list[str]
    dataset: Dataset | None = None
    frame: Any = None  # a pandas or Dask DataFrame
    cache: Cache | None = None


def locate(source: str | os.PathLike[str], options: FitOptions, *,
           output: str | os.PathLike[str] | None = None, overwrite: bool = False,
           stats_path: str | os.PathLike[str] | None = None) -> Located:
    """Resolve and list the input, and check every destination before anything runs.

    A Delta or Iceberg table is listed through its library (:func:`pipeline.tables.open_input`).
    ``output`` (its format and files' place: :func:`pipeline.tables.plan_output`),
    ``stats_path`` and ``options.cache`` are checked against the input and each other
    (see :mod:`pipeline.targets`).
    """
    from .targets import check

    opts = dict(options.storage_options)
    loc, listing = open_input(source, opts, options.filters, options.table)
    out = plan_output(options.table, listing.table, output) if output is not None else None
    check(loc, listing.links, output=resolve(out.target, opts) if out is not None else None,
          overwrite=overwrite,
          stats=resolve(stats_path, opts) if stats_path is not None else None,
          cache=resolve(options.cache, opts) if options.cache else None)
    return Located(loc, listing, out)


def prepare_fit(source: Any, options: FitOptions, session: Session | None = None, *,
                located: Located | None = None) -> FitInput:
    """The one way into a fit: the validated dataset (or frame) and the features to fit.

    ``source`` is a path or URL (then ``session`` reads the footers on its cluster;
    ``located`` is :func:`locate`'s result when the caller already checked the
    destinations), or a pandas or Dask DataFrame (then every option that only
    applies to a dataset is refused, naming it).
    """
    if not isinstance(source, str | os.PathLike):
        return _prepare_frame(source, options)
    assert session is not None, "a dataset is read on a cluster"
    loc, listing, _ = located or locate(source, options)
    from .cache import open_cache

    store = open_cache(options.cache, options.storage_options, session.warn)
    dataset, chosen = load_dataset(loc, session.mapper, options.features, options.exclude,
                                   filters=options.filters, cache=store, listing=listing,
                                   warn=session.warn)
    chosen = without_keys(chosen, options.group_by, explicit=options.explicit)
    chosen = without_weight(chosen, options.weight, explicit=options.explicit)
    check_weight_column(options.weight, dataset.schema.names, lambda n: dataset.schema.field(
        n).type, chosen, options.group_by, dataset.schema.varying)
    session.console.info(f"features ({len(chosen)}): {', '.join(chosen)}")
    return FitInput(features=chosen, dataset=dataset, cache=store)


def _prepare_frame(frame: Any, options: FitOptions) -> FitInput:
    from .schema import Schema, select_features

    kind = "Dask" if hasattr(frame, "to_delayed") else "pandas"
    if kind == "pandas" and not hasattr(frame, "columns"):
        raise InputError(f"cannot fit a {type(frame).__name__}: give a directory or URL of "
                         "Parquet files, a pandas DataFrame or a Dask DataFrame")
    for name in _DATASET_ONLY:
        if getattr(options, name):
            raise InputError(f"{option(name)} applies to a dataset of Parquet files, not to a "
                             f"{kind} DataFrame; drop it, or write the frame to Parquet and "
                             "fit that")
    meta = frame._meta if kind == "Dask" else frame.iloc[:0]
    schema = pa.Schema.from_pandas(meta, preserve_index=False)
    chosen = without_weight(select_features(Schema(fields=tuple(schema), partition_keys=()),
                                            options.features, options.exclude),
                            options.weight, explicit=options.explicit)
    check_weight_column(options.weight, schema.names, lambda n: schema.field(n).type, chosen)
    return FitInput(features=chosen, frame=frame)


def fit_prepared(prepared: FitInput, options: FitOptions, session: Session | None = None,
                 client: Any = None) -> FittedStats:
    """The statistics pass over what :func:`prepare_fit` returned."""
    if prepared.dataset is None:
        return _fit_frame(prepared.frame, prepared.features, options, client)
    assert session is not None
    return fit_dataset(session, prepared.dataset, prepared.features, options,
                       cache=prepared.cache)


def fit_dataset(session: Session, dataset: Dataset, features: Sequence[str],
                options: FitOptions, cache: Cache | None = None) -> FittedStats:
    """The statistics pass over a validated dataset, on ``session``'s cluster.

    With a ``cache``, files whose moments it holds are not read, and the moments
    of the others are stored in it.  With ``options.group_by``, statistics per key
    too (see :mod:`pipeline.keyfit`), cached per file the same way.
    """
    from .keyfit import KeyGuard, cache_tag, check_group_by, finish_groups, key_spec

    by = check_group_by(dataset, features, options.group_by)
    spec = key_spec(dataset, by, options.max_keys) if by else None
    tag = cache_tag(spec) if spec is not None else None
    files = list(dataset.files)
    inf = options.inf
    known = cache.moments(files, features, inf, BATCH_ROWS, tag, options.weight) \
        if cache is not None else {}
    guard = KeyGuard(by, options.max_keys) if by else None
    for rel, result in known.items():
        if guard is not None:
            guard.see(rel, result)  # refused before reading anything
    todo = [f for f in files if f.rel not in known]
    rows = {f.rel: ft.rows for f, ft in zip(files, dataset.footers, strict=True)}
    fresh = session.map(partial(files_moments, dataset.location.fs, features=list(features),
                                keys=spec, weight=options.weight), todo,
                        label="fit", weights=[f.size for f in todo],
                        rows=[rows[f.rel] for f in todo],
                        on_result=guard.see if guard is not None else None) if todo else []
    if cache is not None:
        if todo:
            cache.put_moments(todo, features, inf, BATCH_ROWS, fresh, tag, options.weight)
        session.console.info(f"cache: {len(known)} of {len(files)} files' moments reused, "
                             f"{len(todo)} read")
    by_rel = {**known, **{f.rel: m for f, m in zip(todo, fresh, strict=True)}}
    pieces = [(f.rel, by_rel[f.rel][0] if by else by_rel[f.rel]) for f in files]
    dtypes = {n: str(dataset.schema.field(n).type) for n in features}
    source: dict[str, Any] = {"path": dataset.location.display, "files": len(files),
                              "rows": dataset.rows, "fingerprint": dataset.fingerprint,
                              "file_digests": dataset.digests()}
    if options.filters:
        source["filters"] = list(options.filters)
    if dataset.table is not None:
        source["table"] = dataset.table.to_dict()
    stats = finalize(features, dtypes, pieces, ddof=options.ddof, inf=inf, source=source,
                     warn=session.warn, weight=options.weight)
    if not options.explicit and not options.exclude:
        from .lookalikes import warn_dataset

        warn_dataset(session, dataset, stats, [fm for _, fm in pieces], reread=cache is None)
    if not by:
        return stats
    groups = finish_groups(by, [by_rel[f.rel][1] for f in files],
                           {n: stats.features[n].dtype for n in features}, options.ddof)
    session.console.info(f"group-by {', '.join(by)}: {len(groups.keys):,} keys")
    return replace(stats, groups=groups)


# --------------------------------------------------------------- public API
def fit(source: str | os.PathLike[str] | dd.DataFrame | pd.DataFrame, *,
        features: str | Sequence[str] | None = None, exclude: str | Sequence[str] = (),
        ddof: int = 0, inf: str = "error", filters: Sequence[str] = (),
        cache: str | None = None, group_by: str | Sequence[str] = (), client: Any = None,
        storage_options: Mapping[str, Any] | None = None, table: TableOptions | None = None,
        weight: str | None = None, max_keys: int = MAX_KEYS) -> FittedStats:
    """Fit global per-feature mean and standard deviation in one distributed pass.

    Parameters
    ----------
    source : str, path, dask.dataframe.DataFrame or pandas.DataFrame
        A directory (or fsspec URL) of Parquet files, possibly hive-partitioned;
        or a Dask DataFrame, whose partitions are merged in partition order; or a
        pandas DataFrame (fitted in this process, no cluster).
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
        Key columns (stored, or hive partition keys): statistics per key value too
        (see :mod:`pipeline.groups`); they are left out of the default feature selection.
    max_keys : int
        Refuse (:class:`InputError`) as soon as more distinct keys than this are seen.
    client : distributed.Client, optional
        Default: the current client if there is one, else an embedded local
        cluster started for this call.
    storage_options : dict, optional
        Passed to fsspec (``{"endpoint_url": ...}``).
    table : TableOptions, optional
        How to read a Delta or Iceberg table (version, snapshot, catalog); see
        :mod:`pipeline.tables`.  A table directory is recognized by default.
    weight : str, optional
        A column of non-negative weights (frequency weights, as scikit-learn's
        ``sample_weight``): weighted mean and std, ``sum(w) - ddof`` in the
        variance's denominator; rows of weight 0 count for nothing.  See
        :mod:`pipeline.weights`.

    ``filters``, ``cache``, ``group_by``, ``storage_options`` and ``table`` apply to a dataset
    of files: with a DataFrame they are refused (:class:`InputError` naming the
    keyword), never silently dropped.

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
    options = FitOptions(features=features, exclude=exclude, ddof=ddof, inf=inf,
                         filters=filters, cache=cache, group_by=group_by,
                         storage_options=storage_options or {}, table=table, weight=weight,
                         max_keys=max_keys)
    if not isinstance(source, str | os.PathLike):
        return fit_prepared(prepare_fit(source, options), options, client=client)
    from .cluster import session_for

    located = locate(source, options)
    with session_for(client) as session:
        prepared = prepare_fit(source, options, session, located=located)
        return fit_prepared(prepared, options, session)


def _fit_frame(frame: Any, chosen: list[str], options: FitOptions, client: Any) -> FittedStats:
    """Fit a pandas DataFrame (here) or a Dask DataFrame (partition by partition, in order)."""
    weight = options.weight
    if hasattr(frame, "to_delayed"):
        import dask

        parts = frame[chosen + ([weight] if weight else [])].to_delayed()
        kwargs = {"scheduler": client} if client is not None else {}
        labels = [f"partition {i}" for i in range(len(parts))]
        # The lengths in the same compute: each partition is made once for both.
        done = dask.compute([dask.delayed(frame_moments)(p, chosen, weight, where)
                             for p, where in zip(parts, labels, strict=True)],
                            [dask.delayed(len)(p) for p in parts], **kwargs)
        per_part, rows = list(done[0]), sum(done[1])
        what = "<dask DataFrame>"
    else:
        per_part, rows = [frame_moments(frame, chosen, weight)], len(frame)
        what, labels = "<pandas DataFrame>", ["the DataFrame"]
    meta = frame._meta if hasattr(frame, "_meta") else frame.iloc[:0]
    types = pa.Schema.from_pandas(meta[chosen], preserve_index=False)
    stats = finalize(chosen, {n: str(types.field(n).type) for n in chosen},
                     list(zip(labels, per_part, strict=True)), ddof=options.ddof,
                     inf=options.inf, source={"path": what, "files": len(per_part),
                                              "rows": int(rows)}, weight=weight)
    if not options.explicit and not options.exclude:
        from .lookalikes import warn_frame
        from .progress import Console

        warn_frame(frame, stats, Console.library().warn)
    return stats
