"""The jobs: fit a dataset, transform it into a published output, or both.

Order of a run, chosen so that nothing is written until the input is known to
be good and nothing is visible until everything is written:

1. resolve paths and list the input (symbolic links followed); check every
   destination (:mod:`pipeline.targets`): nothing inside the input, no
   destination inside another, an output that is absent, empty or (with
   ``--overwrite``) a zscore output; load ``--stats`` for ``transform``;
2. take the output's lock (see :mod:`pipeline.commit`);
3. validate every footer on the cluster;
4. fit (``run`` only): one read of the feature columns;
5. transform: one read of every column and one write, into staging;
6. write ``--stats`` (if asked), then ``_stats.json`` and ``_SUCCESS`` (the
   manifest), and publish: a failure at any step before publishes nothing, so
   exit code 0 is the only one that comes with a published output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .artifact import FittedStats, now_iso, tool_version
from .choices import MAX_KEYS
from .cluster import Session, session_for
from .commit import Commit
from .dataset import Dataset, load_dataset
from .errors import exception_text, option
from .finish import NO_FINISH, FinishOptions, check_indicator_names
from .fitting import FitOptions, fit_prepared, locate, prepare_fit
from .groups import UnseenTally
from .plan import Plan, check_transform_options
from .storage import REPORT_DIR, STATS_NAME, resolve
from .summary import Summary, reference
from .tables import TableOptions, TableOutput, after_publish, finish_output, prepare_output
from .timings import Timings
from .write import Written, write_dataset


@dataclass
class RunResult:
    """What a :func:`run` or :func:`transform_dataset` did."""

    stats: FittedStats
    output: str
    files: int
    rows: int
    bytes: int
    input_bytes: int
    seconds: float
    stats_path: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    report: str | None = None


def run(input: str | os.PathLike[str], output: str | os.PathLike[str], *,
        stats_path: str | os.PathLike[str] | None = None,
        features: str | Sequence[str] | None = None, exclude: str | Sequence[str] = (),
        ddof: int = 0, inf: str = "error", mode: str = "standard", dtype: str = "preserve",
        overwrite: bool = False, report: bool = True, filters: Sequence[str] = (),
        cache: str | None = None, group_by: str | Sequence[str] = (), unseen: str = "global",
        client: Any = None, storage_options: Mapping[str, Any] | None = None,
        table: TableOptions | None = None, weight: str | None = None,
        finish: FinishOptions | None = None, max_keys: int = MAX_KEYS) -> RunResult:
    """Fit on ``input`` and write its normalized copy to ``output``, crash-safely.

    Parameters
    ----------
    input, output : str or path
        Directories or fsspec URLs.  ``output`` mirrors ``input``'s layout and
        gets ``_stats.json`` and ``_SUCCESS`` (the manifest, written last).
    stats_path : str, optional
        Also save the fitted statistics there.
    features, exclude, ddof, inf
        As for :func:`pipeline.fit`.
    mode, dtype
        As for :func:`pipeline.apply`.
    overwrite : bool
        Replace an existing zscore output at ``output`` (atomically on local
        disks); a non-empty directory zscore did not write is never replaced.
    report : bool
        Write ``output/_report/``: the written data per feature against the
        training statistics (see :mod:`pipeline.report`).  A report that cannot
        be drawn costs a warning, never the output.
    filters : list of str
        ``--filter`` expressions on hive keys, e.g. ``["day >= 2026-01-01"]``; only
        matching partitions are listed, read and written.
    cache : str, optional
        As for :func:`pipeline.fit`: reuse per-file footers and moments.
    group_by : str or list of str
        Key columns for per-key statistics (see :mod:`pipeline.groups`).
    max_keys : int
        As for :func:`pipeline.fit`: refuse past this many distinct keys.
    unseen : {"global", "null", "error"}
        What a key not seen at fit time gets.
    client : distributed.Client, optional
        Default: the current client, else an embedded local cluster.
    storage_options : dict, optional
        fsspec options for every path.
    table : TableOptions, optional
        Reading a Delta or Iceberg table input (version, snapshot, catalog) and
        the output's format (see :mod:`pipeline.tables`).
    weight : str, optional
        As for :func:`pipeline.fit`: a weight column (written to the output unchanged).
    finish : FinishOptions, optional
        Clip, fill missing values, add indicator columns after scaling (see
        :mod:`pipeline.finish`); recorded in the manifest with the clipped counts.

    Returns
    -------
    RunResult

    Raises
    ------
    InputError
        Bad options or data (exit code 2 on the command line).
    ZscoreError
        Infrastructure failures (exit code 1).
    """
    begun = now_iso(), time.monotonic()
    fit_options = FitOptions(features=features, exclude=exclude, ddof=ddof, inf=inf,
                             filters=filters, cache=cache, group_by=group_by,
                             storage_options=storage_options or {}, table=table,
                             weight=weight, max_keys=max_keys)
    located = locate(input, fit_options, output=output, overwrite=overwrite,
                     stats_path=stats_path)
    options = WriteOptions(mode=mode, dtype=dtype, unseen=unseen, overwrite=overwrite,
                           report=report, stats_path=stats_path, filters=tuple(filters),
                           storage_options=fit_options.storage_options, command="run",
                           output=located.output, finish=finish or NO_FINISH)
    timings = Timings(begun)
    with _output(output, options, client, timings) as (session, commit):
        prepared = prepare_fit(input, fit_options, session, located=located)
        timings.lap("footers")
        fitted = fit_prepared(prepared, fit_options, session)
        timings.lap("fit")
        if weight and report:  # not yet weighted: say so rather than let its flags mislead
            session.warn(f"the report counts written rows unweighted: its mean z, σ z and drift "
                         f"flags are per row, not weighted by '{weight}' as the statistics are")
        assert prepared.dataset is not None
        return _write_job(session, commit, _Fitted(prepared.dataset, prepared.features,
                                                   fitted), options, timings)


def transform_dataset(input: str | os.PathLike[str], output: str | os.PathLike[str],
                      stats: FittedStats | str | os.PathLike[str], *,
                      features: str | Sequence[str] | None = None,
                      exclude: str | Sequence[str] = (), mode: str = "standard",
                      dtype: str = "preserve", overwrite: bool = False, report: bool = True,
                      filters: Sequence[str] = (), unseen: str = "global", client: Any = None,
                      storage_options: Mapping[str, Any] | None = None,
                      table: TableOptions | None = None, finish: FinishOptions | None = None
                      ) -> RunResult:
    """Write ``input`` normalized with already-fitted ``stats`` to ``output``, crash-safely.

    ``stats`` is a :class:`FittedStats` or the path of its JSON.  By default
    every feature of ``stats`` is transformed; ``features``/``exclude`` narrow
    that.  Other parameters as for :func:`run`.
    """
    begun = now_iso(), time.monotonic()
    opts = dict(storage_options or {})
    loc, listing, planned = locate(input, FitOptions(filters=filters, storage_options=opts,
                                                     table=table),
                                   output=output, overwrite=overwrite)
    options = WriteOptions(mode=mode, dtype=dtype, unseen=unseen, overwrite=overwrite,
                           report=report, filters=tuple(filters), storage_options=opts,
                           command="transform", output=planned, finish=finish or NO_FINISH)
    fitted = stats if isinstance(stats, FittedStats) else FittedStats.load(stats, opts)
    timings = Timings(begun)
    with _output(output, options, client, timings) as (session, commit):
        spec = features if features else fitted.names
        dataset, chosen = load_dataset(loc, session.mapper, spec, exclude,
                                       origin="features" if features else "statistics",
                                       filters=filters, listing=listing, warn=session.warn)
        timings.lap("footers")
        return _write_job(session, commit, _Fitted(dataset, chosen, fitted), options, timings)


@dataclass(frozen=True)
class WriteOptions:
    """How a job writes its output: the transform's options and where the statistics go.

    ``output``: the output's format and place (:func:`pipeline.tables.plan_output`);
    ``None``: Parquet at the job's OUTPUT.
    """

    mode: str = "standard"
    dtype: str = "preserve"
    unseen: str = "global"
    overwrite: bool = False
    report: bool = True
    stats_path: str | os.PathLike[str] | None = None
    filters: tuple[str, ...] = ()
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    command: str = "run"
    output: TableOutput | None = None
    finish: FinishOptions = NO_FINISH

    def __post_init__(self) -> None:
        check_transform_options(self.mode, self.dtype, self.unseen)


@dataclass(frozen=True)
class _Fitted:
    """What the write job transforms: the dataset, the features and their statistics."""

    dataset: Dataset
    features: list[str]
    stats: FittedStats


@contextlib.contextmanager
def _output(output: Any, options: WriteOptions, client: Any, timings: Timings
            ) -> Iterator[tuple[Session, Commit]]:
    """The cluster session and the output's commit (lock, staging) a job runs inside."""
    target = options.output.target if options.output is not None else output
    out = resolve(target, dict(options.storage_options))
    with session_for(client) as session:
        timings.started(session)
        with Commit(out, overwrite=options.overwrite, warn=session.warn) as commit:
            yield session, commit


def _write_job(session: Session, commit: Commit, job: _Fitted, options: WriteOptions,
               timings: Timings) -> RunResult:
    """The transform pass into staging, the report, the statistics, then publication."""
    dataset, chosen, fitted = job.dataset, job.features, job.stats
    plan = Plan.build(fitted, mode=options.mode, dtype=options.dtype, features=chosen,
                      unseen=options.unseen, finish=options.finish,
                      types={n: dataset.schema.field(n).type for n in chosen})
    check_indicator_names(dataset.schema.names, chosen, options.finish,
                          dataset.location.display.rstrip("/"))
    refs = {c.name: reference(c, options.mode) for c in plan.columns} if options.report \
        else None
    to = options.output or TableOutput("parquet", commit.out.display, commit.out.display)
    to_write = prepare_output(to, dataset, commit.run_id)
    written, summaries = write_dataset(session, to_write, plan, commit.target, refs)
    timings.lap("transform")
    stats_json = fitted.to_json().encode()
    manifest = _manifest(commit.run_id, timings.started_iso, job, stats_json, plan, written,
                         options)
    manifest["output_format"] = to.format
    if options.finish.clip is not None:
        manifest["clipped"] = {c.name: sum((w.clipped or {}).get(c.name, 0) for w in written)
                               for c in plan.columns}
    if plan.groups is not None:
        manifest["unseen_keys"] = _unseen(plan, written, session.warn)
    extra = {STATS_NAME: stats_json, **finish_output(to, commit.out, to_write, written, plan,
                                                     options.overwrite, options.storage_options)}
    if summaries is not None:
        drawn = _report_files(fitted, summaries, manifest, options.mode, session.warn)
        extra.update(drawn)
        summaries = summaries if drawn else None
        timings.lap("report")
    manifest["timings"] = timings.seconds
    if options.stats_path is not None:  # before publishing: if it fails, nothing is published
        fitted.save(options.stats_path, dict(options.storage_options))
    commit.publish([w.rel for w in written], manifest, extra)
    after_publish(to, commit.out, dataset, [w.rel for w in written], plan)
    out = commit.out.display.rstrip("/")
    return RunResult(stats=fitted, output=commit.out.display, files=len(written),
                     timings=timings.seconds,
                     rows=sum(w.rows for w in written), bytes=sum(w.bytes for w in written),
                     input_bytes=dataset.nbytes, seconds=time.monotonic() - timings.t0,
                     stats_path=(os.fspath(options.stats_path)
                                 if options.stats_path is not None else None),
                     manifest=manifest, features=list(chosen),
                     report=f"{out}/{REPORT_DIR}/index.html" if summaries is not None
                     else None)


def fit_path(input: Any, options: FitOptions, *, session: Session, stats_path: Any = None
             ) -> tuple[FittedStats, Dataset]:
    """The ``zscore fit`` job on an open session: check destinations, validate, then fit.

    ``stats_path`` (where the caller will save the result) is checked before
    anything is computed, as is ``options.cache`` (see :mod:`pipeline.targets`).
    """
    located = locate(input, options, stats_path=stats_path)
    prepared = prepare_fit(input, options, session, located=located)
    assert prepared.dataset is not None
    return fit_prepared(prepared, options, session), prepared.dataset


def _report_files(stats: FittedStats, summaries: Mapping[str, Summary],
                  manifest: Mapping[str, Any], mode: str,
                  warn: Callable[[str], None] | None = None) -> dict[str, bytes]:
    """The report's files under ``_report/``; with ``warn``, empty (and a warning) on failure.

    A run's report is a picture of data already normalized: whatever goes wrong
    while drawing it must not cost the user the output (exit 0, a warning).
    """
    from . import report

    # Timings are left out: the report is drawn before the run's last lap is known,
    # and 'zscore report' must draw the same page again.
    shown = {k: v for k, v in manifest.items() if k != "timings"}
    try:
        files = report.build(stats, summaries, manifest=shown, mode=mode, warn=warn)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        if warn is None:
            raise
        warn(f"no report was written ({type(exc).__name__}: {exception_text(exc)}); the "
             "output itself is complete")
        return {}
    return {f"{REPORT_DIR}/{name}": data for name, data in files.items()}


def _unseen(plan: Plan, written: Sequence[Written], warn: Callable[[str], None]
            ) -> dict[str, Any]:
    """The manifest's count of rows whose ``--group-by`` key was not seen at fit time."""
    assert plan.groups is not None
    total = UnseenTally()
    for w in written:
        total = total.merge(w.unseen or UnseenTally())
    if total.rows:
        cols = ", ".join(f"{b} {total.by_column[b]:,}" for b in plan.groups.by
                         if total.by_column.get(b))
        got = {"global": "the global statistics", "null": "missing values"}[plan.groups.unseen]
        warn(f"{total.rows:,} row(s) have a key of {', '.join(plan.groups.by)} not seen at fit "
             f"time (values never seen, per column: {cols or 'none, new combinations only'}); "
             f"they got {got} (_SUCCESS: unseen_keys)")
    return total.to_dict(plan.groups.by)


def _manifest(run_id: str, started: str, job: _Fitted, stats_json: bytes, plan: Plan,
              written: Sequence[Written], options: WriteOptions) -> dict[str, Any]:
    dataset = job.dataset
    return {
        "run_id": run_id, "command": options.command, "tool_version": tool_version(),
        "started": started, "finished": now_iso(),
        "input": {"path": dataset.location.display, "files": len(dataset.files),
                  "rows": dataset.rows, "bytes": dataset.nbytes,
                  "fingerprint": dataset.fingerprint, "filters": list(options.filters),
                  **({"table": dataset.table.to_dict()} if dataset.table else {})},
        "statistics_sha256": hashlib.sha256(stats_json).hexdigest(),
        "mode": plan.mode, "dtype": plan.dtype, **options.finish.to_dict(),
        "features": [c.name for c in plan.columns],
        "rows": sum(w.rows for w in written),
        "files": [{"path": w.rel, "rows": w.rows, "bytes": w.bytes} for w in written],
    }


def rerender_report(output: str | os.PathLike[str],
                    storage_options: Mapping[str, Any] | None = None,
                    warn: Callable[[str], None] | None = None) -> str:
    """Draw ``output/_report/`` again from the files a run left (no data is read).

    Returns the report's index URL (without credentials).  Raises
    :class:`~pipeline.errors.ArtifactError` when the output lacks its statistics,
    manifest or report summary.  A figure that cannot be drawn is left out with a
    warning through ``warn`` (default :func:`warnings.warn`).
    """
    import json

    from . import report
    from .errors import ArtifactError
    from .storage import SUCCESS, read_bytes, write_bytes

    opts = dict(storage_options or {})
    out = resolve(output, opts)
    base, shown = os.fspath(output).rstrip("/"), out.display.rstrip("/")
    try:
        manifest = json.loads(read_bytes(f"{base}/{SUCCESS}", opts))
    except FileNotFoundError:
        raise ArtifactError(f"{shown} is not a published zscore output (it has no {SUCCESS}); "
                            "give the OUTPUT of a finished zscore run or transform",
                            path=shown) from None
    except ValueError as exc:
        raise ArtifactError(f"{shown}/{SUCCESS} is not a zscore manifest: "
                            f"{exception_text(exc)}", path=shown) from None
    stats = FittedStats.load(f"{base}/{STATS_NAME}", opts)
    where = f"{shown}/{REPORT_DIR}/{report.SUMMARY_NAME}"
    try:
        data = read_bytes(f"{base}/{REPORT_DIR}/{report.SUMMARY_NAME}", opts)
    except FileNotFoundError:
        raise ArtifactError(f"{shown} has no {REPORT_DIR}/{report.SUMMARY_NAME}: it was "
                            "written without the report (or by an older zscore); rerun its "
                            f"zscore run or transform with {option('overwrite')} and the report "
                            "on (the default)", path=shown) from None
    summaries = report.read_summaries(data, where)
    # Without timings, as the run drew it (see _report_files): the same page again.
    files = report.build(stats, summaries, mode=str(manifest.get("mode", "standard")),
                         manifest={k: v for k, v in manifest.items() if k != "timings"},
                         warn=warn)
    for name, data in files.items():
        write_bytes(f"{base}/{REPORT_DIR}/{name}", data, opts)
    return f"{shown}/{REPORT_DIR}/index.html"
