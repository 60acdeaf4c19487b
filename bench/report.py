"""The machine, the versions, and the markdown tables of a benchmark run."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import psutil

PACKAGES = ("zscore", "dask", "distributed", "pyarrow", "pandas", "numpy", "polars", "duckdb",
            "dask-ml", "scikit-learn", "psutil")


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model (from /proc/cpuinfo), OS and Python."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count(),
            "ram_bytes": psutil.virtual_memory().total,
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def versions() -> dict[str, str | None]:
    """Installed versions; zscore's also names the commit (an editable install runs the tree)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    commit = source_commit()
    if out.get("zscore") and commit:
        out["zscore"] = f"{out['zscore']} ({commit})"
    return out


def source_commit() -> str | None:
    """``abc1234``, or ``abc1234+modified`` when pipeline/ has uncommitted changes."""
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "pipeline"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+modified" if dirty else "")


def source_hash() -> str:
    """A digest of every file under pipeline/: changes whenever the code that runs does."""
    import hashlib

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipeline")
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as fh:
                    digest.update(name.encode() + fh.read())
    return digest.hexdigest()[:12]


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def table(head: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A markdown table; columns from ``right`` on are right-aligned."""
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if i >= right else "---" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def verdict(check: dict[str, Any] | None, limit: int = 2) -> str:
    """``ok``, or ``WRONG: first problems (+n more)``."""
    if check is None:
        return "not checked"
    if check.get("ok"):
        return "ok"
    problems = check.get("problems", [])
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    text = "**WRONG**: " + "; ".join(problems[:limit]) + more
    return text.replace("|", "\\|")  # |z| would end the table cell


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['cpu_model']}, {m['cores']} cores, {gib(m['ram_bytes'])} RAM, {m['os']}, "
            f"Python {m['python']}")


def versions_line(v: dict[str, str | None]) -> str:
    return ", ".join(f"{k} {val}" for k, val in v.items() if val)


def tool_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, spread and peaks over the successful runs of one tool."""
    good = [r for r in runs if r["exit_code"] == 0]
    walls = [r["wall_s"] for r in good]
    return {"runs": len(runs), "ok_runs": len(good), "median_s": median(walls),
            "min_s": min(walls, default=float("nan")), "max_s": max(walls, default=float("nan")),
            "peak_rss_bytes": max((r["peak_rss_bytes"] for r in good), default=0),
            "cpu_s": median([r["cpu_s"] for r in good]),
            "others_cpu_s": median([r["others_cpu_s"] for r in good])}


def compare_table(results: dict[str, Any]) -> str:
    """The main table: one row per tool, ratios to zscore."""
    in_bytes = results["input"]["bytes"]
    base = results["summary"].get("zscore", {}).get("median_s")
    rows = []
    for tool, s in results["summary"].items():
        if not s["ok_runs"]:
            rows.append([tool, "failed", "", "", "", "", "", "", "",
                         results["failures"].get(tool, "")])
            continue
        ratio = f"{s['median_s'] / base:.2f}×" if base and tool != "zscore" else "1.00×"
        if not base:
            ratio = "–"
        rows.append([
            tool, f"{s['median_s']:.2f}", f"{s['min_s']:.2f}–{s['max_s']:.2f}",
            gib(s["peak_rss_bytes"]), f"{in_bytes / s['median_s'] / 1e6:.0f}", ratio,
            f"{s['cpu_s'] / s['median_s']:.2f}", f"{s['others_cpu_s']:.1f}",
            worst_error(results["checks"].get(tool)), verdict(results["checks"].get(tool))])
    return table(["tool", "median wall (s)", "min–max (s)", "peak RSS (tree)", "MB/s",
                  "time vs zscore", "cores used", "others' CPU (s)", "worst error (σ)",
                  "output check"], rows)


def worst_error(check: dict[str, Any] | None) -> str:
    """The largest |mean| or |std - 1| over the features whose missing values were kept."""
    if not check or "max_abs_mean" not in check:
        return ""
    return f"{max(check['max_abs_mean'], check['max_abs_std_minus_1']):.1e}"


def phases_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """zscore's own phase timings (from the manifest), medians per configuration.

    ``before_job`` is the corrected one (see ``run.fixed_costs``); a phase the
    manifest does not have is shown as ``–``.
    """
    keys = ["before_job", "startup", "footers", "fit", "transform"]
    for rs in runs.values():
        for r in rs:
            keys += [k for k in r.get("timings", {}) if k not in keys]
    rows = []

    def med(values: list[float | None]) -> str:
        vals = [v for v in values if v is not None]
        return f"{median(vals):.2f}" if vals else "–"

    for label, rs in runs.items():
        rs = [r for r in rs if r.get("timings")]
        if not rs:
            continue
        cells = [med([r["fixed"].get("before_job_s") for r in rs])]
        cells += [med([r["timings"].get(k) for r in rs]) for k in keys[1:]]
        cells += [med([r["fixed"][k] for r in rs])
                  for k in ("to_first_task_s", "after_last_task_s", "wall_s")
                  if k != "wall_s"] + [med([r["wall_s"] for r in rs])]
        rows.append([label, *cells])
    if not rows:
        return "(no phase timings: the manifest has no \"timings\" object)"
    return table(["run", *keys, "start → first task", "after last phase", "wall"], rows)
