"""The ``zscore`` command line: a thin click group over the library.

Exit codes: 0 success; 2 usage errors, bad input, bad data, bad artifacts (do
not retry); 1 anything else (a retry may help); 3 ``zscore diff`` found drift;
130 / 143 / 129 when stopped by SIGINT / SIGTERM / SIGHUP before publishing
(nothing is published; see :mod:`pipeline.interrupt`).  Errors are one line on
stderr.

Heavy modules (numpy, pyarrow, Dask) are imported inside the commands, after
:func:`main` has installed its signal handlers: a signal during start-up then
stops zscore with its one-line message rather than a traceback from an import.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from . import interrupt
from .errors import Interrupted, ZscoreError, exception_text
from .progress import Console, printable, scrub_log_records

EXIT_INPUT = 2
EXIT_OTHER = 1
EXIT_DRIFT = 3


# ------------------------------------------------------------------ options
class _Checked(click.ParamType):
    """A text option checked by a function of :mod:`pipeline.cluster` (ValueError: refused).

    The value passes through unchanged: the library checks it again (for Python callers).
    """

    def __init__(self, name: str, check: str):
        self.name = name
        self._check = check

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from . import cluster

        try:
            getattr(cluster, self._check)(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--scheduler", type=_Checked("address", "check_address"),
                     metavar="ADDRESS", default=None,
                     help="Existing Dask scheduler (tcp://host:8786, tls://...). "
                          "Default: $DASK_SCHEDULER_ADDRESS, else an embedded local cluster."),
        click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Workers of the embedded cluster (default: number of cores)."),
        click.option("--memory-limit", type=_Checked("size", "parse_memory"), default=None,
                     metavar="SIZE",
                     help="Memory per embedded worker, e.g. 2GiB, at least 512MiB "
                          "(default: RAM / workers; 0: no limit)."),
        click.option("--processes/--threads", default=False,
                     help="Embedded workers as processes on 127.0.0.1, or threads of this "
                          "process (default, fastest start)."),
        click.option("--filter", "filters", multiple=True, metavar="EXPR",
                     help="Only hive partitions matching KEY OP VALUE, e.g. "
                          "\"day >= 2026-01-01\"; repeatable (AND)."),
        click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
                     help="fsspec option for s3:// etc., repeatable "
                          "(e.g. endpoint_url=http://127.0.0.1:9000)."),
        click.option("-q", "--quiet", is_flag=True,
                     help="No progress or notes on stderr (warnings and errors still), and "
                          "no statistics table on stdout: only the summary lines."),
        click.option("-v", "--verbose", is_flag=True,
                     help="Dask's own logs, and tracebacks for internal errors."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _fit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--features", default=None, metavar="COLS",
                     help="Comma-separated names or globs (f*). Default: every integer and "
                          "floating column except hive partition keys."),
        click.option("--exclude", default="", metavar="COLS",
                     help="Names or globs to leave out (write a comma inside a name as \\,)."),
        click.option("--ddof", type=click.IntRange(0, 1), default=0, show_default=True,
                     help="0: population std (scikit-learn); 1: sample std (Spark)."),
        click.option("--inf", "inf", type=click.Choice(["error", "null"]), default="error",
                     show_default=True, help="Infinite values are an error, or missing."),
        click.option("--group-by", "group_by", default="", metavar="COLS",
                     help="Also fit per key of these columns (e.g. tool,chamber); transforms "
                          "then use each row's key."),
        click.option("--cache", default=None, metavar="LOCATION",
                     help="Directory or URL keeping per-file moments: a re-fit reads only new "
                          "or changed files (same statistics, bit for bit)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _transform_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--mode", type=click.Choice(["standard", "scale", "center"]),
                     default="standard", show_default=True,
                     help="standard: (x-mean)/std; scale: x/std; center: x-mean."),
        click.option("--dtype", type=click.Choice(["preserve", "float32", "float64"]),
                     default="preserve", show_default=True,
                     help="preserve: floats keep their (widest stored) type, integers become "
                          "float64."),
        click.option("--overwrite", is_flag=True,
                     help="Replace an existing zscore OUTPUT (atomically, once the new one "
                          "is complete); other non-empty directories are never replaced."),
        click.option("--unseen", type=click.Choice(["global", "null", "error"]),
                     default="global", show_default=True,
                     help="With per-key statistics: what a key not seen at fit time gets."),
        click.option("--report/--no-report", default=True, show_default=True,
                     help="Write OUTPUT/_report/index.html: the written data, per feature."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _storage_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    from .errors import InputError
    from .location import remember_options

    out: dict[str, Any] = {}
    for i, pair in enumerate(pairs, 1):
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            # Never echo the text: it may be a secret given without its "key=".
            raise InputError(f"--storage-option #{i} is not KEY=VALUE (for example "
                             "endpoint_url=http://127.0.0.1:9000); its text is not shown, as "
                             "it may hold a secret")
        out[key.strip()] = {"true": True, "false": False}.get(value.lower(), value)
    remember_options(out)
    return out


def _publish(stats: Any, path: str, opts: dict[str, Any]) -> None:
    """Save a command's artifact: its publication (a signal from here on lets it finish)."""
    from .location import redact

    with interrupt.publishing():
        stats.save(path, opts)
        interrupt.mark_published(redact(path))
    interrupt.checkpoint("published")


def _session(kw: dict[str, Any], console: Console) -> Any:
    from .cluster import connect

    return connect(kw["scheduler"], workers=kw["workers"], memory_limit=kw["memory_limit"],
                   processes=kw["processes"], console=console)


def _console(kw: dict[str, Any]) -> Console:
    return Console(quiet=kw["quiet"], verbose=kw["verbose"])


# ----------------------------------------------------------------- commands
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zscore", prog_name="zscore")  # read only if asked
def cli() -> None:
    """Exact global z-score normalization of partitioned Parquet datasets on Dask.

    \b
    Quick start:
      zscore run data/train data/train_z            # fit + transform, on a local cluster
      zscore fit data/train --stats stats.json      # fit only
      zscore transform data/val data/val_z --stats stats.json
      zscore inspect stats.json
    """


@cli.command()
@click.argument("input")
@click.option("--stats", "stats_path", required=True, metavar="STATS.json",
              help="Where to write the fitted statistics (path or URL).")
@_fit_options
@_common
def fit(input: str, stats_path: str, **kw: Any) -> None:
    """Fit global mean and std of every feature of INPUT.

    \b
    Example:
      zscore fit data/train --stats stats.json --exclude label --ddof 0
    """
    from .display import stats_table
    from .run import fit_path

    console = _console(kw)
    opts = _storage_options(kw["storage_option"])
    with _session(kw, console) as session:
        stats, dataset, _ = fit_path(input, features=kw["features"], exclude=kw["exclude"],
                                     ddof=kw["ddof"], inf=kw["inf"], filters=kw["filters"],
                                     cache=kw["cache"], group_by=kw["group_by"],
                                     session=session, stats_path=stats_path,
                                     storage_options=opts)
    _publish(stats, stats_path, opts)
    _say(f"fitted {len(stats.features)} features on {dataset.rows:,} rows in "
         f"{len(dataset.files)} files; statistics: {stats_path}")
    if not kw["quiet"]:
        click.echo(stats_table(stats))


@cli.command()
@click.argument("input")
@click.argument("output")
@click.option("--stats", "stats_path", required=True, metavar="STATS.json",
              help="Fitted statistics to apply (from zscore fit or zscore run).")
@click.option("--features", default=None, metavar="COLS",
              help="Transform only these of the statistics' features (names or globs).")
@click.option("--exclude", default="", metavar="COLS", help="Features to pass through.")
@_transform_options
@_common
def transform(input: str, output: str, stats_path: str, **kw: Any) -> None:
    """Write INPUT normalized with fitted statistics to OUTPUT.

    \b
    Example:
      zscore transform data/val data/val_z --stats stats.json --mode standard
    """
    from .artifact import FittedStats
    from .display import run_summary
    from .run import transform_dataset

    console = _console(kw)
    opts = _storage_options(kw["storage_option"])
    stats = FittedStats.load(stats_path, opts)
    with _session(kw, console) as session:
        result = transform_dataset(input, output, stats, features=kw["features"],
                                   exclude=kw["exclude"], mode=kw["mode"], dtype=kw["dtype"],
                                   overwrite=kw["overwrite"], report=kw["report"],
                                   filters=kw["filters"], unseen=kw["unseen"], client=session,
                                   storage_options=opts)
    click.echo(run_summary(result, "transform", table=not kw["quiet"]))


@cli.command()
@click.argument("input")
@click.argument("output")
@click.option("--stats", "stats_path", default=None, metavar="STATS.json",
              help="Also save the fitted statistics here (they are always in "
                   "OUTPUT/_stats.json).")
@_fit_options
@_transform_options
@_common
def run(input: str, output: str, stats_path: str | None, **kw: Any) -> None:
    """Fit on INPUT, then write its normalized copy to OUTPUT.

    OUTPUT mirrors INPUT's layout and gets _stats.json and _SUCCESS (a JSON
    manifest, written last).

    \b
    Example:
      zscore run data/train data/train_z --exclude label --workers 4
    """
    from .display import run_summary
    from .run import run as run_job

    console = _console(kw)
    opts = _storage_options(kw["storage_option"])
    with _session(kw, console) as session:
        result = run_job(input, output, stats_path=stats_path, features=kw["features"],
                         exclude=kw["exclude"], ddof=kw["ddof"], inf=kw["inf"],
                         mode=kw["mode"], dtype=kw["dtype"], overwrite=kw["overwrite"],
                         report=kw["report"], filters=kw["filters"], cache=kw["cache"],
                         group_by=kw["group_by"], unseen=kw["unseen"], client=session,
                         storage_options=opts)
    click.echo(run_summary(result, "run", table=not kw["quiet"]))


@cli.command()
@click.argument("stats_path", metavar="STATS.json")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE")
def inspect(stats_path: str, storage_option: tuple[str, ...]) -> None:
    """Print a statistics artifact as a table.

    \b
    Example:
      zscore inspect stats.json
    """
    from .artifact import FittedStats
    from .display import stats_table

    stats = FittedStats.load(stats_path, _storage_options(storage_option))
    src = stats.input
    _say(f"statistics {stats_path}: format {stats.format_version}, ddof {stats.ddof}, "
         f"inf {stats.inf}, created {stats.created or '?'} by zscore "
         f"{stats.tool_version or '?'}")
    if src:
        _say(f"input {src.get('path', '?')}: {src.get('files', '?')} files, "
             f"{src.get('rows', '?'):,} rows" if isinstance(src.get("rows"), int)
             else f"input {src.get('path', '?')}")
    click.echo(stats_table(stats))


@cli.command()
@click.argument("stats_paths", nargs=-1, required=True, metavar="STATS.json...")
@click.option("-o", "--output", required=True, metavar="OUT.json",
              help="Where to write the merged statistics.")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE")
def merge(stats_paths: tuple[str, ...], output: str, storage_option: tuple[str, ...]) -> None:
    """Merge statistics fitted on disjoint inputs, as if fitted together.

    \b
    Example:
      zscore merge jan.json feb.json -o jan-feb.json
    """
    from .artifact import FittedStats
    from .compose import merge as merge_stats
    from .display import stats_table

    opts = _storage_options(storage_option)
    merged = merge_stats([FittedStats.load(p, opts) for p in stats_paths], names=stats_paths)
    _publish(merged, output, opts)
    _say(f"merged {len(stats_paths)} statistics ({merged.input.get('rows', 0):,} rows) "
         f"into {output}")
    click.echo(stats_table(merged))


@cli.command()
@click.argument("old_path", metavar="OLD.json")
@click.argument("new_path", metavar="NEW.json")
@click.option("--max-shift", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Flag a mean that moved by more than this many old sigmas.")
@click.option("--max-ratio", type=click.FloatRange(min=1), default=1.5, show_default=True,
              help="Flag a sigma that grew or shrank by more than this factor.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE")
def diff(old_path: str, new_path: str, max_shift: float, max_ratio: float, as_json: bool,
         storage_option: tuple[str, ...]) -> None:
    """Compare two fits; exit 3 when a feature drifted past the limits.

    \b
    Example (a pipeline gate):
      zscore diff stats/2026-01-01.json stats/2026-01-02.json --max-shift 0.5 || exit $?
    """
    import json

    from .artifact import FittedStats
    from .compose import diff as diff_stats
    from .display import drift_table

    opts = _storage_options(storage_option)
    drifts = diff_stats(FittedStats.load(old_path, opts), FittedStats.load(new_path, opts),
                        max_shift=max_shift, max_ratio=max_ratio)
    flagged = [d for d in drifts if d.flagged]
    if as_json:
        click.echo(json.dumps({"max_shift": max_shift, "max_ratio": max_ratio,
                               "flagged": len(flagged),
                               "features": [d.to_dict() for d in drifts]}, indent=1))
    else:
        click.echo(drift_table(drifts, max_shift, max_ratio))
    if flagged:
        raise click.exceptions.Exit(EXIT_DRIFT)


@cli.command()
@click.argument("output")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE")
def report(output: str, storage_option: tuple[str, ...]) -> None:
    """Draw OUTPUT/_report/ again from a finished output (reads no data).

    \b
    Example:
      zscore report data/train_z && open data/train_z/_report/index.html
    """
    from .run import rerender_report

    index = rerender_report(output, _storage_options(storage_option), warn=Console().warn)
    _say(f"report: {index}")


@cli.command()
@click.argument("directory")
@click.option("--rows", type=click.IntRange(1), default=300_000, show_default=True)
@click.option("--days", type=click.IntRange(1), default=4, show_default=True,
              help="Hive partitions day=2026-01-01, ...")
@click.option("--files-per-day", type=click.IntRange(1), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def sample(directory: str, rows: int, days: int, files_per_day: int, seed: int) -> None:
    """Write a synthetic hive-partitioned training set to DIRECTORY, to try zscore on.

    It has NaNs and nulls, a float32 column at a large offset, a column at mean
    1e9 with std 1e-3, int64 epoch seconds, a constant column, and pass-through
    id, label, city and event_time columns.

    \b
    Example:
      zscore sample data/train && zscore run data/train data/train_z --exclude id,label
    """
    import os

    from .errors import OutputError
    from .sample import make_dataset

    if os.path.exists(directory) and os.listdir(directory):
        raise OutputError(f"{directory} exists and is not empty; choose another directory",
                          path=directory)
    files = make_dataset(directory, rows=rows, days=days, files_per_day=files_per_day,
                         seed=seed)
    _say(f"wrote {rows:,} rows in {len(files)} files under {directory}")


# --------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zscore`` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    restore = interrupt.install()
    try:
        try:
            code = _main(args)
            interrupt.hold()
        except Interrupted as exc:  # arrived while another outcome was being reported
            interrupt.hold()
            _error(str(exc))
            code = exc.exit_code
        late = interrupt.late_signal()
        if late and code == 0:
            # The run was published before the signal could stop it: say so, and exit 0,
            # because OUTPUT now holds this run (a retry would fail on "exists").
            click.echo(f"zscore: warning: {late} arrived after {interrupt.published()} was "
                       "published; the run completed", err=True)
        return code
    finally:
        restore()


def _main(args: list[str]) -> int:
    verbose = "-v" in args or "--verbose" in args
    scrub_log_records()
    try:
        rv = cli.main(args=args, prog_name="zscore", standalone_mode=False)
        return rv if isinstance(rv, int) else 0  # click returns Exit's code here
    except Interrupted as exc:
        _error(str(exc))
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):  # SIGINT with Python's own handler
        _error("stopped by SIGINT; nothing was published")
        return 130
    except click.UsageError as exc:
        hint = f" (see 'zscore {exc.ctx.info_name} --help')" if exc.ctx and \
            exc.ctx.info_name != "zscore" else " (see 'zscore --help')"
        _error(" ".join(exc.format_message().split()) + hint)
        return EXIT_INPUT
    except click.ClickException as exc:
        _error(" ".join(exc.format_message().split()))
        return EXIT_INPUT
    except ZscoreError as exc:
        _error(str(exc))
        return exc.exit_code
    except OSError as exc:
        _error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_OTHER
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, traceback on -v
        if verbose:
            for line in traceback.format_exc().splitlines():
                click.echo(printable(line), err=True)
        _error(f"internal error {type(exc).__name__}: {exception_text(exc, 300)} "
               "(this is a bug; rerun with --verbose for the traceback and report it)")
        return EXIT_OTHER


def _error(text: str) -> None:
    click.echo(f"zscore: error: {printable(text)}", err=True)


def _say(text: str) -> None:
    """A result line on stdout (names escaped, URLs without credentials)."""
    click.echo(printable(text))

