"""The ``zscore export`` command: fitted statistics as SQL or ONNX that serve the transform.

Apart from :mod:`pipeline.cli` (which registers it) so that the command line stays
under the module size limit; it is as thin as the other commands: the export itself
is :mod:`pipeline.exports` and :mod:`pipeline.exports_onnx`.
"""

from __future__ import annotations

from typing import Any

import click

from .cli_options import PATH, export_options, storage_options
from .progress import printable


@click.command()
@click.argument("stats_path", type=PATH, metavar="STATS.json")
@export_options
def export(stats_path: str, fmt: str, output: str | None, storage_option: tuple[str, ...],
           **kw: Any) -> None:
    """Export fitted statistics for serving: SQL or ONNX that reproduce the transform.

    \b
    Examples:
      zscore export stats.json --format sql --dialect postgres --table features
      zscore export stats.json --format onnx -o zscore.onnx
      zscore export stats.json --format sql --clip 5 --fill-missing 0 --missing-indicator
    """
    from .artifact import FittedStats
    from .storage import write_bytes

    if fmt == "onnx" and output is None:
        raise click.UsageError("--format onnx writes a binary model: give -o FILE")
    opts = storage_options(storage_option)
    data, n = _export(FittedStats.load(stats_path, opts), fmt, **kw)
    if output is None:
        click.echo(data.decode(), nl=False)
    else:
        write_bytes(output, data, opts)
        click.echo(printable(f"wrote {fmt} ({kw['mode']}) of {n} features to {output}"))


def _export(stats: Any, fmt: str, *, dialect: str, mode: str, dtype: str, table: str,
            features: str | None, **finish: Any) -> tuple[bytes, int]:
    """The export in ``fmt`` as bytes, and how many features it holds."""
    from .schema import split_names

    names = split_names(features) if features is not None else None
    n = len(names) if names else len(stats.features)
    if fmt == "sql":
        from .exports import to_sql

        return to_sql(stats, dialect, mode=mode, dtype=dtype, table=table,
                      features=names, **finish).encode(), n
    from .exports_onnx import to_onnx

    return to_onnx(stats, mode=mode, dtype=dtype, features=names, **finish), n
