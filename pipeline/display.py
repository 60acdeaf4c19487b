"""Plain-text tables and summaries for the command line (stdout).

Every cell and line goes through :func:`~pipeline.progress.printable`: names are
shown with their control characters escaped and URLs without credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .artifact import FittedStats
from .progress import human_bytes, printable, rate
from .storage import STATS_NAME, SUCCESS


def columns(rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Align ``rows`` (the first is the header): the first ``left`` columns left, the rest right."""
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i < left else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                     for r in rows)


def stats_table(stats: FittedStats) -> str:
    head = ["feature", "dtype", "count", "missing", "mean", "std", "min", "max", "constant"]
    rows = [[name, f.dtype, f"{f.count:,}", f"{f.missing:,}", f"{f.mean:.10g}",
             f"{f.std:.10g}", f"{f.min:.10g}", f"{f.max:.10g}", "yes" if f.constant else ""]
            for name, f in stats.features.items()]
    if stats.weight is not None:  # the total weight beside the count of a weighted fit
        head.insert(3, "weight")
        for row, f in zip(rows, stats.features.values(), strict=True):
            row.insert(3, f"{f.weight:.10g}")
    text = columns([head, *rows], left=2)
    if stats.weight is not None:
        text += "\n" + printable(f"weighted by column '{stats.weight}' (frequency weights: "
                                  "'weight' is each feature's total)")
    if stats.groups is not None:
        text += "\n" + printable(f"per-key statistics for {len(stats.groups.keys)} keys "
                                  f"of {', '.join(stats.groups.by)}")
    return text


def drift_table(drifts: Sequence[Any], max_shift: float, max_ratio: float) -> str:
    rows = [["feature", "shift (old σ)", "σ ratio", "drift"]] + [
        [d.feature, f"{d.shift:+.4g}", f"{d.ratio:.4g}",
         ("DRIFT " + d.note).strip() if d.flagged else ""] for d in drifts]
    flagged = sum(1 for d in drifts if d.flagged)
    return (columns(rows) + f"\n{flagged} of {len(drifts)} features drifted (limits: shift "
            f"{max_shift} σ, ratio {max_ratio})")


def run_summary(result: Any, command: str, table: bool = True,
                passes: Sequence[tuple[str, float, float]] = ()) -> str:
    """The result lines of ``transform``/``run``.

    ``passes``: :attr:`pipeline.progress.Console.passes`; each pass's throughput is
    printed as its last progress line printed it (the wall time also counts the
    cluster's start, listing and publishing, so it is no throughput).
    """
    out = result.output.rstrip("/")
    speeds = "".join(f", {label} {rate(nbytes, seconds)}" for label, nbytes, seconds in passes)
    lines = [f"{command}: {result.rows:,} rows in {result.files} files, "
             f"{len(result.features)} features, {result.seconds:.1f} s "
             f"({human_bytes(result.input_bytes)} read{speeds})",
             f"output: {out} (manifest {out}/{SUCCESS})",
             f"statistics: {result.stats_path or out + '/' + STATS_NAME}"]
    if result.report:
        lines.append(f"report: {result.report}")
    lines = [printable(line) for line in lines]
    if table:
        lines.append(stats_table(result.stats))
    return "\n".join(lines)
