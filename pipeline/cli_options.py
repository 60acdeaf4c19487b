"""The command line's options: declared once, shared by the commands of :mod:`pipeline.cli`.

Choices come from the library's own constants (``click.Choice(MODES)``, ...), so the
command line and the Python API cannot disagree about what a value may be.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from .choices import (
    DDOFS,
    DTYPES,
    EXPORT_FORMATS,
    INF_POLICIES,
    INPUT_FORMATS,
    MAX_KEYS,
    MODES,
    OUTPUT_FORMATS,
    SQL_DIALECTS,
    UNSEEN,
)


class Checked(click.ParamType):
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


class _Path(click.ParamType):
    """A path or URL; an empty one (an unset shell variable) is refused, never taken as '.'."""

    name = "path"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if not str(value).strip():
            self.fail("is empty; give a path or URL", param, ctx)
        return value


PATH = _Path()


QUIET = click.option("-q", "--quiet", is_flag=True,
                     help="No progress or notes on stderr (warnings and errors still), and "
                          "no statistics table on stdout: only the summary lines.")
VERBOSE = click.option("-v", "--verbose", is_flag=True,
                       help="Dask's own logs, and tracebacks for internal errors.")


class Group(click.Group):
    """The command group: every command accepts ``-q``/``-v``, also one added later.

    A command that does not declare them gets them here; its callback does not see
    them, it asks :func:`quiet` (a command with nothing to silence ignores it).
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any("--quiet" in p.opts for p in cmd.params) and cmd.callback is not None:
            cmd.params.extend(VERBOSE(QUIET(click.Command("x"))).params)
            inner = cmd.callback

            def callback(*args: Any, quiet: bool = False, verbose: bool = False,
                         **kw: Any) -> Any:
                click.get_current_context().meta["zscore.quiet"] = quiet
                return inner(*args, **kw)

            cmd.callback = callback
        super().add_command(cmd, name)


def quiet() -> bool:
    """Whether the running command was given ``-q`` (for commands :class:`Group` gave it)."""
    return bool(click.get_current_context().meta.get("zscore.quiet"))


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--scheduler", type=Checked("address", "check_address"),
                     metavar="ADDRESS", default=None,
                     help="Existing Dask scheduler (tcp://host:8786, tls://...). "
                          "Default: $DASK_SCHEDULER_ADDRESS, else an embedded local cluster."),
        click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Workers of the embedded cluster (default: number of cores)."),
        click.option("--memory-limit", type=Checked("size", "parse_memory"), default=None,
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
        QUIET, VERBOSE,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def fit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--features", default=None, metavar="COLS",
                     help="Comma-separated names or globs (f*). Default: every integer and "
                          "floating column except hive partition keys."),
        click.option("--exclude", default="", metavar="COLS",
                     help="Names or globs to leave out (write a comma inside a name as \\,)."),
        click.option("--ddof", type=click.IntRange(min(DDOFS), max(DDOFS)), default=0,
                     show_default=True,
                     help="0: population std (scikit-learn); 1: sample std (Spark)."),
        click.option("--inf", "inf", type=click.Choice(INF_POLICIES), default="error",
                     show_default=True, help="Infinite values are an error, or missing."),
        click.option("--group-by", "group_by", default="", metavar="COLS",
                     help="Also fit per key of these columns (e.g. tool,chamber); transforms "
                          "then use each row's key."),
        click.option("--max-keys", "max_keys", type=click.IntRange(min=1), default=MAX_KEYS,
                     show_default=True, metavar="N",
                     help="With --group-by: refuse as soon as more distinct keys are found."),
        click.option("--cache", type=PATH, default=None, metavar="LOCATION",
                     help="Directory or URL keeping per-file moments: a re-fit reads only new "
                          "or changed files (same statistics, bit for bit)."),
        click.option("--weight", default=None, metavar="COLUMN",
                     help="Weighted mean and std: each row counts COLUMN times (non-negative "
                          "numbers, as scikit-learn's sample_weight); passed through."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def transform_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--mode", type=click.Choice(MODES),
                     default="standard", show_default=True,
                     help="standard: (x-mean)/std; scale: x/std; center: x-mean."),
        click.option("--dtype", type=click.Choice(DTYPES),
                     default="preserve", show_default=True,
                     help="preserve: floats keep their (widest stored) type, integers become "
                          "float64."),
        click.option("--overwrite", is_flag=True,
                     help="Replace an existing zscore OUTPUT (atomically, once the new one "
                          "is complete); other non-empty directories are never replaced."),
        click.option("--unseen", type=click.Choice(UNSEEN),
                     default="global", show_default=True,
                     help="With per-key statistics: what a key not seen at fit time gets."),
        click.option("--mlflow", "mlflow", is_flag=True,
                     help="Log the statistics, manifest and report to an MLflow run "
                          "(MLFLOW_TRACKING_URI; see pipeline/lineage.py)."),
        click.option("--mlflow-run-id", default=None, metavar="RUN_ID",
                     help="Log into this existing MLflow run (implies --mlflow)."),
        click.option("--report/--no-report", default=True, show_default=True,
                     help="Write OUTPUT/_report/index.html: the written data, per feature."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return training_options(fn)


def training_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Training-ready output, after scaling (see :mod:`pipeline.finish`).

    Their values are checked together before the command starts a cluster.
    """

    command = fn

    @functools.wraps(command)
    def checked(*args: Any, **kw: Any) -> Any:
        finish_of(kw)
        return command(*args, **kw)

    fn = checked
    options = [
        click.option("--fill-missing", type=float, default=None, metavar="VALUE",
                     help="Missing values (null, NaN) become VALUE after scaling, in output "
                          "units (0: the mean under standard)."),
        click.option("--missing-indicator", is_flag=True,
                     help="Add a boolean <feature>__missing column after each filled feature."),
        click.option("--clip", type=float, default=None, metavar="K",
                     help="Clamp scaled values to [-K, K] (K > 0); counts in _SUCCESS."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def finish_of(kw: dict[str, Any]) -> Any:
    """The library's :class:`~pipeline.finish.FinishOptions` from a command's options."""
    from .finish import FinishOptions

    return FinishOptions(fill_missing=kw["fill_missing"],
                         missing_indicator=kw["missing_indicator"], clip=kw["clip"])


def export_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), required=True,
                     help="sql: a SELECT for --dialect; onnx: a float64 (or float32) ONNX "
                          "graph."),
        click.option("--dialect", type=click.Choice(SQL_DIALECTS), default="duckdb",
                     show_default=True, help="SQL engine (--format sql)."),
        click.option("--mode", type=click.Choice(MODES), default="standard", show_default=True,
                     help="As for zscore transform; recorded in the export."),
        click.option("--dtype", type=click.Choice(DTYPES), default="preserve",
                     show_default=True,
                     help="Output float type (sql); tensor type of X and Z (onnx)."),
        click.option("--table", default="input_table", show_default=True, metavar="T",
                     help="The SQL FROM item, as written (e.g. "
                          "read_parquet('data/*.parquet'))."),
        click.option("--features", default=None, metavar="COLS",
                     help="Only these features, in this order (comma-separated)."),
        click.option("-o", "--output", type=PATH, default=None, metavar="FILE",
                     help="Write here (path or URL); default stdout (sql only)."),
        click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
                     help="fsspec option for s3:// etc., repeatable."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return training_options(fn)


def table_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options of a Delta or Iceberg table input (see :mod:`pipeline.tables`)."""
    options = [
        click.option("--input-format", type=click.Choice(INPUT_FORMATS), default="auto",
                     show_default=True,
                     help="auto: a directory with _delta_log/ is a Delta table, one with "
                          "metadata/ and data/ an Iceberg table; parquet: loose files always."),
        click.option("--version", "table_version", type=click.IntRange(min=0), default=None,
                     metavar="N", help="Delta: read version N (default: the current one)."),
        click.option("--as-of", default=None, metavar="TIMESTAMP",
                     help="Delta: read the version current at this ISO time (UTC if no "
                          "offset), e.g. 2026-01-31T12:00:00Z."),
        click.option("--snapshot-id", type=int, default=None, metavar="ID",
                     help="Iceberg: read this snapshot (default: the current one)."),
        click.option("--catalog", default=None, metavar="NAME",
                     help="Iceberg: INPUT is a table name (ns.table) in this pyiceberg "
                          "catalog (.pyiceberg.yaml or PYICEBERG_CATALOG__NAME__*)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def output_format(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--output-format", type=click.Choice(OUTPUT_FORMATS), default="auto",
        show_default=True,
        help="auto: a Delta table for a Delta input, else Parquet; iceberg: a new table "
             "OUTPUT (ns.table) in the input's catalog.")(fn)


def storage_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    from .errors import InputError
    from .redaction import remember_options

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


def fit_options_of(kw: dict[str, Any], opts: dict[str, Any]) -> Any:
    """The library's :class:`~pipeline.fitting.FitOptions` from a command's parsed options."""
    from .fitting import FitOptions

    return FitOptions(features=kw["features"], exclude=kw["exclude"], ddof=kw["ddof"],
                      inf=kw["inf"], filters=kw["filters"], cache=kw["cache"],
                      group_by=kw["group_by"], storage_options=opts,
                      table=table_options_of(kw), weight=kw["weight"], max_keys=kw["max_keys"])


def table_options_of(kw: dict[str, Any]) -> Any:
    """The library's :class:`~pipeline.lakehouse.TableOptions` from a command's options."""
    from .lakehouse import TableOptions

    return TableOptions(input_format=kw["input_format"], version=kw["table_version"],
                        as_of=kw["as_of"], snapshot_id=kw["snapshot_id"],
                        catalog=kw["catalog"], output_format=kw.get("output_format", "auto"))
