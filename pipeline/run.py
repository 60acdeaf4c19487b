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

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .artifact import FittedStats, now_iso, tool_version
from .cluster import Session, session_for
from .commit import Commit
from .dataset import Dataset, inspect, scan
from .errors import exception_text
from .fit import check_options, fit_dataset, open_cache, without_keys
from .location import resolve
from .summary import Summary, reference
from .targets import check
from .transform import Plan, check_transform_options
from .write import Written, write_dataset

STATS_NAME = "_stats.json"
REPORT_DIR = "_report"


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
        client: Any = None, storage_options: Mapping[str, Any] | None = None) -> RunResult:
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
    unseen : {"global", "null", "error"}
        What a key not seen at fit time gets.
    client : distributed.Client, optional
        Default: the current client, else an embedded local cluster.
    storage_options : dict, optional
        fsspec options for every path.

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
    return _job(input, output, stats_path=stats_path, fit=True, features=features,
                exclude=exclude, ddof=ddof, inf=inf, mode=mode, dtype=dtype,
                overwrite=overwrite, report=report, filters=filters, cache=cache,
                group_by=group_by, unseen=unseen, client=client,
                storage_options=storage_options)


def transform_dataset(input: str | os.PathLike[str], output: str | os.PathLike[str],
                      stats: FittedStats | str | os.PathLike[str], *,
                      features: str | Sequence[str] | None = None,
                      exclude: str | Sequence[str] = (), mode: str = "standard",
                      dtype: str = "preserve", overwrite: bool = False, report: bool = True,
                      filters: Sequence[str] = (), unseen: str = "global", client: Any = None,
                      storage_options: Mapping[str, Any] | None = None) -> RunResult:
    """Write ``input`` normalized with already-fitted ``stats`` to ``output``, crash-safely.

    ``stats`` is a :class:`FittedStats` or the path of its JSON.  By default
    every feature of ``stats`` is transformed; ``features``/``exclude`` narrow
    that.  Other parameters as for :func:`run`.
    """
    return _job(input, output, stats=stats, fit=False, features=features, exclude=exclude,
                mode=mode, dtype=dtype, overwrite=overwrite, report=report, filters=filters,
                unseen=unseen, client=client, storage_options=storage_options)


def _job(input: Any, output: Any, *, fit: bool, stats: Any = None, stats_path: Any = None,
         features: Any = None, exclude: Any = (), ddof: int = 0, inf: str = "error",
         mode: str = "standard", dtype: str = "preserve", overwrite: bool = False,
         report: bool = True, filters: Sequence[str] = (), cache: str | None = None,
         group_by: Any = (), unseen: str = "global", client: Any = None,
         storage_options: Mapping[str, Any] | None = None) -> RunResult:
    started, t0 = now_iso(), time.monotonic()
    opts = dict(storage_options or {})
    check_options(ddof, inf)
    inp, out = resolve(input, opts), resolve(output, opts)
    listing = scan(inp, filters)
    check(inp, listing.links, output=out, overwrite=overwrite,
          stats=resolve(stats_path, opts) if stats_path is not None else None,
          cache=resolve(cache, opts) if cache else None)
    fitted: FittedStats | None = None
    check_transform_options(mode, dtype)
    if not fit:
        fitted = stats if isinstance(stats, FittedStats) else FittedStats.load(stats, opts)
    timings = Timings()
    with session_for(client) as session:
        console = session.console
        timings.started(session)
        with Commit(out, overwrite=overwrite, warn=session.warn) as commit:
            if fit:
                store = open_cache(cache, opts, session.warn)
                dataset, chosen = inspect(inp, session.mapper, features, exclude,
                                          filters=filters, cache=store, listing=listing,
                                          warn=session.warn)
                chosen = without_keys(chosen, group_by, explicit=features is not None)
                timings.lap("footers")
                console.info(f"features ({len(chosen)}): {', '.join(chosen)}")
                fitted = fit_dataset(session, dataset, chosen, ddof=ddof, inf=inf,
                                     filters=filters, cache=store, group_by=group_by)
                timings.lap("fit")
            else:
                assert fitted is not None
                Plan.build(fitted, mode=mode, dtype=dtype, unseen=unseen)  # options first
                spec = features if features else fitted.names
                dataset, chosen = inspect(inp, session.mapper, spec, exclude,
                                          origin="--features" if features else "statistics",
                                          filters=filters, listing=listing,
                                          warn=session.warn)
                timings.lap("footers")
            assert fitted is not None
            plan = Plan.build(fitted, mode=mode, dtype=dtype, features=chosen, unseen=unseen,
                              types={n: dataset.schema.field(n).type for n in chosen})
            refs = {c.name: reference(c, mode) for c in plan.columns} if report else None
            written, summaries = write_dataset(session, dataset, plan, commit.target, refs)
            timings.lap("transform")
            stats_json = fitted.to_json().encode()
            manifest = _manifest(commit.run_id, started, dataset, fitted, stats_json, plan,
                                 written, command="run" if fit else "transform",
                                 filters=filters)
            extra = {STATS_NAME: stats_json}
            if summaries is not None:
                drawn = _report_files(fitted, summaries, manifest, mode, session.warn)
                extra.update(drawn)
                summaries = summaries if drawn else None
                timings.lap("report")
            manifest["timings"] = timings.seconds
            if stats_path is not None:  # before publishing: if it fails, nothing is published
                fitted.save(stats_path, opts)
            commit.publish([w.rel for w in written], manifest, extra)
    return RunResult(stats=fitted, output=out.display, files=len(written),
                     timings=timings.seconds,
                     rows=sum(w.rows for w in written), bytes=sum(w.bytes for w in written),
                     input_bytes=dataset.nbytes, seconds=time.monotonic() - t0,
                     stats_path=os.fspath(stats_path) if stats_path is not None else None,
                     manifest=manifest, features=list(chosen),
                     report=(f"{out.display.rstrip('/')}/{REPORT_DIR}/index.html"
                             if summaries is not None else None))


class Timings:
    """Seconds spent in each phase of a job, for the manifest.

    ``before_job``: from the process's start to the job's, minus ``startup``
    (imports and argument parsing, for the command line); ``startup``: starting
    or connecting to the cluster.  Publishing happens after the manifest is
    written, so it has no entry.
    """

    def __init__(self) -> None:
        self._last = time.time()
        self.seconds: dict[str, float] = {}
        age = process_age()
        if age is not None:
            self.seconds["before_job"] = round(age, 4)

    def started(self, session: Session) -> None:
        """Account the cluster's start-up (it may predate the job: the CLI starts it)."""
        now = time.time()
        startup = session.startup_seconds + (now - self._last)
        if "before_job" in self.seconds:
            self.seconds["before_job"] = round(max(self.seconds["before_job"] -
                                                   session.startup_seconds, 0.0), 4)
        self.seconds["startup"] = round(startup, 4)
        self._last = now

    def lap(self, phase: str) -> None:
        now = time.time()
        self.seconds[phase] = round(now - self._last, 4)
        self._last = now


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc, to the clock tick; else psutil)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after the ")"
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except (ImportError, OSError):
        return None


def fit_path(input: Any, *, features: Any = None, exclude: Any = (), ddof: int = 0,
             inf: str = "error", filters: Sequence[str] = (), cache: str | None = None,
             group_by: Any = (), session: Session, stats_path: Any = None,
             storage_options: Mapping[str, Any] | None = None
             ) -> tuple[FittedStats, Dataset, list[str]]:
    """The ``zscore fit`` job on an open session: check destinations, validate, then fit.

    ``stats_path`` (where the caller will save the result) is checked before
    anything is computed, as is ``cache`` (see :mod:`pipeline.targets`).
    """
    check_options(ddof, inf)
    opts = dict(storage_options or {})
    loc = resolve(input, opts)
    listing = scan(loc, filters)
    check(loc, listing.links, stats=resolve(stats_path, opts) if stats_path is not None else None,
          cache=resolve(cache, opts) if cache else None)
    store = open_cache(cache, opts, session.warn)
    dataset, chosen = inspect(loc, session.mapper, features, exclude, filters=filters,
                              cache=store, listing=listing, warn=session.warn)
    chosen = without_keys(chosen, group_by, explicit=features is not None)
    session.console.info(f"features ({len(chosen)}): {', '.join(chosen)}")
    stats = fit_dataset(session, dataset, chosen, ddof=ddof, inf=inf, filters=filters,
                        cache=store, group_by=group_by)
    return stats, dataset, chosen


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


def _manifest(run_id: str, started: str, dataset: Dataset, stats: FittedStats,
              stats_json: bytes, plan: Plan, written: Sequence[Written], *, command: str,
              filters: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "run_id": run_id, "command": command, "tool_version": tool_version(),
        "started": started, "finished": now_iso(),
        "input": {"path": dataset.location.display, "files": len(dataset.files),
                  "rows": dataset.rows, "bytes": dataset.nbytes,
                  "fingerprint": dataset.fingerprint, "filters": list(filters)},
        "statistics_sha256": hashlib.sha256(stats_json).hexdigest(),
        "mode": plan.mode, "dtype": plan.dtype, "features": [c.name for c in plan.columns],
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
    from .commit import SUCCESS, read_bytes, write_bytes
    from .errors import ArtifactError

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
                            "zscore run or transform with --overwrite and the report on (the "
                            "default)", path=shown) from None
    summaries = report.read_summaries(data, where)
    # Without timings, as the run drew it (see _report_files): the same page again.
    files = report.build(stats, summaries, mode=str(manifest.get("mode", "standard")),
                         manifest={k: v for k, v in manifest.items() if k != "timings"},
                         warn=warn)
    for name, data in files.items():
        write_bytes(f"{base}/{REPORT_DIR}/{name}", data, opts)
    return f"{shown}/{REPORT_DIR}/index.html"
