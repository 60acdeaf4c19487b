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


# ------------------------------------------------------------- per-key statistics
SHOWN_KEYS = 10  # keys named in a summary (the smallest, the most drifted)


def _key_text(key: Sequence[Any]) -> str:
    return ", ".join("null" if v is None else str(v) for v in key)


def keys_summary(stats: FittedStats) -> str:
    """``inspect``'s per-key section: per feature the spread of key means and σs across
    keys (quantiles), and the keys with the fewest values."""
    import numpy as np

    from .artifact_keys import from_mapping

    assert stats.groups is not None
    table = from_mapping(stats.groups.keys, {n: f.dtype for n, f in stats.features.items()},
                         stats.ddof)
    lines = [f"per-key statistics: {len(table):,} keys of {', '.join(stats.groups.by)}"]
    head = ["feature", "keys", "", "min", "p1", "median", "p99", "max"]
    rows = [head]
    for name, (mean, std, _) in table.derived.items():
        has = table.columns[name].count > 0
        for label, values in (("key mean", mean[has]), ("key σ", std[has])):
            q = np.quantile(values, [0, 0.01, 0.5, 0.99, 1]) if values.size else [np.nan] * 5
            rows.append([name if label == "key mean" else "", f"{int(has.sum()):,}"
                         if label == "key mean" else "", label, *(f"{v:.6g}" for v in q)])
    table_text = columns(rows, left=3)  # its cells already printable
    counts = np.zeros(len(table), dtype=np.int64)
    for c in table.columns.values():
        counts = np.maximum(counts, c.count)
    fewest = np.argsort(counts, kind="stable")[:SHOWN_KEYS]
    lines.append("smallest keys by count: " + "; ".join(
        f"{_key_text(table.key_list[i])} ({int(counts[i]):,})" for i in fewest.tolist()))
    head_line, rest = printable(lines[0]), [printable(line) for line in lines[1:]]
    return "\n".join([head_line, table_text, *rest])


def keys_drift_table(kd: Any, max_shift: float, max_ratio: float) -> str:
    """``diff``'s per-key section: the most drifted keys, and keys on one side only."""
    keys = {d.key for d in kd.drifted}
    lines = [f"per-key ({', '.join(kd.by)}): {len(keys):,} of {kd.compared:,} keys compared "
             f"drifted (limits: shift {max_shift} σ, ratio {max_ratio}); "
             f"{len(kd.only_old):,} only in the old statistics, {len(kd.only_new):,} only in "
             "the new"]
    if kd.drifted:
        rows = [["key", "feature", "shift (old σ)", "σ ratio"]] + [
            [_key_text(d.key), d.feature, f"{d.shift:+.4g}", f"{d.ratio:.4g}"]
            for d in kd.drifted[:SHOWN_KEYS]]
        lines.append("\x00" + columns(rows, left=2))  # cells already printable
        if len(kd.drifted) > SHOWN_KEYS:
            lines.append(f"... and {len(kd.drifted) - SHOWN_KEYS:,} more (--json lists all)")
    for label, side in (("only in the old statistics", kd.only_old),
                        ("only in the new statistics", kd.only_new)):
        if side:
            more = f" and {len(side) - SHOWN_KEYS:,} more" if len(side) > SHOWN_KEYS else ""
            lines.append(f"keys {label}: " + "; ".join(_key_text(k) for k in
                                                      side[:SHOWN_KEYS]) + more)
    return "\n".join(line[1:] if line.startswith("\x00") else printable(line)
                     for line in lines)
