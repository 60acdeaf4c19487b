"""The ``zscore`` command line: a thin click group over the library.

Exit codes: 0 success; 2 usage errors, bad input, bad data, bad artifacts (do not retry);
1 anything else (a retry may help); 3 ``zscore diff`` found drift; 130 / 143 / 129 when
stopped by SIGINT / SIGTERM / SIGHUP before publishing (nothing is published; see
:mod:`pipeline.interrupt`).  Errors are one line on stderr.  Heavy modules (numpy, pyarrow,
Dask) are imported inside the commands, after :func:`main` has installed its signal handlers:
a signal during start-up then stops zscore with its one-line message, not an import's traceback.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from . import interrupt
from .cli_export import export
from .cli_options import (
    PATH,
    Group,
    common,
    finish_of,
    fit_options,
    fit_options_of,
    output_format,
    quiet,
    storage_options,
    table_options,
    table_options_of,
    transform_options,
)
from .errors import EXIT_DRIFT, EXIT_INPUT, EXIT_OTHER, Interrupted, ZscoreError, exception_text
from .progress import Console, printable, scrub_log_records


def _publish(stats: Any, path: str, opts: dict[str, Any]) -> None:
    """Save a command's artifact: its publication (a signal from here on lets it finish)."""
    from .redaction import redact

    with interrupt.publishing():
        stats.save(path, opts)
        interrupt.mark_published(redact(path))
    interrupt.checkpoint("published")


def _session(kw: dict[str, Any], console: Console) -> Any:
    from .cluster import connect

    return connect(kw["scheduler"], workers=kw["workers"], memory_limit=kw["memory_limit"],
                   processes=kw["processes"], console=console)


def _lineage(kw: dict[str, Any]) -> Any:
    """The MLflow run to log to, checked before any work; ``None`` without ``--mlflow``."""
    if not (kw["mlflow"] or kw["mlflow_run_id"]):
        return None
    from .lineage import prepare

    return prepare(kw["mlflow_run_id"])


def _console(kw: dict[str, Any]) -> Console:
    return Console(quiet=kw["quiet"], verbose=kw["verbose"])


# ----------------------------------------------------------------- commands
@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dask-zscore", prog_name="zscore")  # read only if asked
def cli() -> None:
    """Exact global z-score normalization of partitioned Parquet datasets on Dask.

    \b
    Quick start:
      zscore run data/train data/train_z            # fit + transform, on a local cluster
      zscore fit data/train --stats stats.json      # fit only
      zscore transform data/val data/val_z --stats stats.json
      zscore inspect stats.json
      zscore export stats.json --format sql --dialect duckdb
    """


@cli.command()
@click.argument("input", type=PATH)
@click.option("--stats", "stats_path", type=PATH, required=True, metavar="STATS.json",
              help="Where to write the fitted statistics (path or URL).")
@fit_options
@table_options
@common
def fit(input: str, stats_path: str, **kw: Any) -> None:
    """Fit global mean and std of every feature of INPUT.

    \b
    Example:
      zscore fit data/train --stats stats.json --exclude label --ddof 0
    """
    from .display import stats_table
    from .jobs import fit_path

    console = _console(kw)
    opts = storage_options(kw["storage_option"])
    options = fit_options_of(kw, opts)
    with _session(kw, console) as session:
        stats, dataset = fit_path(input, options, session=session, stats_path=stats_path)
    _publish(stats, stats_path, opts)
    _say(f"fitted {len(stats.features)} features on {dataset.rows:,} rows in "
         f"{len(dataset.files)} files; statistics: {stats_path}")
    if not kw["quiet"]:
        click.echo(stats_table(stats))


@cli.command()
@click.argument("input", type=PATH)
@click.argument("output", type=PATH)
@click.option("--stats", "stats_path", type=PATH, required=True, metavar="STATS.json",
              help="Fitted statistics to apply (from zscore fit or zscore run).")
@click.option("--features", default=None, metavar="COLS",
              help="Transform only these of the statistics' features (names or globs).")
@click.option("--exclude", default="", metavar="COLS", help="Features to pass through.")
@transform_options
@table_options
@output_format
@common
def transform(input: str, output: str, stats_path: str, **kw: Any) -> None:
    """Write INPUT normalized with fitted statistics to OUTPUT.

    \b
    Example:
      zscore transform data/val data/val_z --stats stats.json --mode standard
    """
    from .artifact import FittedStats
    from .display import run_summary
    from .jobs import transform_dataset

    console = _console(kw)
    opts = storage_options(kw["storage_option"])
    stats = FittedStats.load(stats_path, opts)
    lineage = _lineage(kw)
    with _session(kw, console) as session:
        result = transform_dataset(input, output, stats, features=kw["features"],
                                   exclude=kw["exclude"], mode=kw["mode"], dtype=kw["dtype"],
                                   overwrite=kw["overwrite"], report=kw["report"],
                                   filters=kw["filters"], unseen=kw["unseen"], client=session,
                                   storage_options=opts, table=table_options_of(kw),
                                   finish=finish_of(kw))
    click.echo(run_summary(result, "transform", table=not kw["quiet"], passes=console.passes))
    if lineage is not None:
        _say(f"mlflow: logged {result.output} to run {lineage.log(result.output, opts)}")


@cli.command()
@click.argument("input", type=PATH)
@click.argument("output", type=PATH)
@click.option("--stats", "stats_path", type=PATH, default=None, metavar="STATS.json",
              help="Also save the fitted statistics here (they are always in "
                   "OUTPUT/_stats.json).")
@fit_options
@transform_options
@table_options
@output_format
@common
def run(input: str, output: str, stats_path: str | None, **kw: Any) -> None:
    """Fit on INPUT, then write its normalized copy to OUTPUT.

    OUTPUT mirrors INPUT's layout and gets _stats.json and _SUCCESS (a JSON
    manifest, written last).

    \b
    Example:
      zscore run data/train data/train_z --exclude label --workers 4
    """
    from .display import run_summary
    from .jobs import run as run_job

    console = _console(kw)
    opts = storage_options(kw["storage_option"])
    lineage = _lineage(kw)
    with _session(kw, console) as session:
        result = run_job(input, output, stats_path=stats_path, features=kw["features"],
                         exclude=kw["exclude"], ddof=kw["ddof"], inf=kw["inf"],
                         mode=kw["mode"], dtype=kw["dtype"], overwrite=kw["overwrite"],
                         report=kw["report"], filters=kw["filters"], cache=kw["cache"],
                         group_by=kw["group_by"], unseen=kw["unseen"], client=session,
                         storage_options=opts, table=table_options_of(kw), weight=kw["weight"],
                         finish=finish_of(kw), max_keys=kw["max_keys"])
    click.echo(run_summary(result, "run", table=not kw["quiet"], passes=console.passes))
    if lineage is not None:
        # result.output: what was published (an Iceberg OUTPUT names a table, not a place)
        _say(f"mlflow: logged {result.output} to run {lineage.log(result.output, opts)}")


@cli.command()
@click.argument("stats_path", type=PATH, metavar="STATS.json")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE")
def inspect(stats_path: str, storage_option: tuple[str, ...]) -> None:
    """Print a statistics artifact as a table.

    \b
    Example:
      zscore inspect stats.json
    """
    from .artifact import FittedStats
    from .display import keys_summary, stats_table

    stats = FittedStats.load(stats_path, storage_options(storage_option))
    src = stats.input
    _say(f"statistics {stats_path}: format {stats.format_version}, ddof {stats.ddof}, "
         f"inf {stats.inf}, created {stats.created or '?'} by zscore "
         f"{stats.tool_version or '?'}")
    if src:
        _say(f"input {src.get('path', '?')}: {src.get('files', '?')} files, "
             f"{src.get('rows', '?'):,} rows" if isinstance(src.get("rows"), int)
             else f"input {src.get('path', '?')}")
    click.echo(stats_table(stats) + ("\n" + keys_summary(stats) if stats.groups else ""))


@cli.command()
@click.argument("stats_paths", type=PATH, nargs=-1, required=True, metavar="STATS.json...")
@click.option("-o", "--output", type=PATH, required=True, metavar="OUT.json",
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

    opts = storage_options(storage_option)
    merged = merge_stats([FittedStats.load(p, opts) for p in stats_paths], names=stats_paths)
    _publish(merged, output, opts)
    _say(f"merged {len(stats_paths)} statistics ({merged.input.get('rows', 0):,} rows) "
         f"into {output}")
    if not quiet():
        click.echo(stats_table(merged))


@cli.command()
@click.argument("old_path", type=PATH, metavar="OLD.json")
@click.argument("new_path", type=PATH, metavar="NEW.json")
@click.option("--max-shift", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Flag a mean that moved by more than this many old sigmas.")
@click.option("--max-ratio", type=click.FloatRange(min=1), default=1.5, show_default=True,
              help="Flag a sigma that grew or shrank by more than this factor.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE")
def diff(old_path: str, new_path: str, max_shift: float, max_ratio: float, as_json: bool,
         storage_option: tuple[str, ...]) -> None:
    """Compare two fits; exit 3 when a feature (or, per key, a key) drifted past the limits.

    \b
    Example (a pipeline gate):
      zscore diff stats/2026-01-01.json stats/2026-01-02.json --max-shift 0.5 || exit $?
    """
    from .artifact import FittedStats
    from .compose_keys import diff_report

    opts = storage_options(storage_option)
    text, flagged = diff_report(FittedStats.load(old_path, opts),
                                FittedStats.load(new_path, opts), max_shift=max_shift,
                                max_ratio=max_ratio, as_json=as_json)
    click.echo(text)
    if flagged:
        raise click.exceptions.Exit(EXIT_DRIFT)


@cli.command()
@click.argument("output", type=PATH)
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE")
def report(output: str, storage_option: tuple[str, ...]) -> None:
    """Draw OUTPUT/_report/ again from a finished output (reads no data).

    \b
    Example:
      zscore report data/train_z && open data/train_z/_report/index.html
    """
    from .jobs import rerender_report

    index = rerender_report(output, storage_options(storage_option),
                            warn=Console(quiet=quiet()).warn)
    _say(f"report: {index}")


@cli.command()
@click.argument("directory", type=PATH)
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


cli.add_command(export)


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
        _error(exc.render(cli=True))
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

