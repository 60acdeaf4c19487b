"""One measured run of one tool: its command line, the run, its output checked.

Used by :mod:`run`, which interleaves these runs into modes and tables.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import generate
import report
from check import check_output
from measure import run_measured

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = ("zscore", "zscore+report", "pyarrow", "dask", "dask-ml", "duckdb", "duckdb-careful",
         "polars", "polars-careful")
NEEDS = {"pyarrow": "pyarrow", "dask": "distributed", "dask-ml": "dask_ml", "duckdb": "duckdb",
         "duckdb-careful": "duckdb", "polars": "polars", "polars-careful": "polars"}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------- commands
def zscore_exe() -> str:
    return os.path.join(os.path.dirname(sys.executable), "zscore")


@functools.cache
def has_report_flag() -> bool:
    text = subprocess.run([zscore_exe(), "run", "--help"], capture_output=True, text=True,
                          check=False).stdout
    return "--no-report" in text


def zscore_command(inp: str, out: str, extra: tuple[str, ...] = (), report: bool = False
                   ) -> list[str]:
    """``zscore run``; without its report (the peers draw none) unless ``report``."""
    flags = ("--report" if report else "--no-report",) if has_report_flag() else ()
    return [zscore_exe(), "run", inp, out, "--exclude", "id,label", "-q", *flags, *extra]


def peer_command(tool: str, inp: str, out: str, features: list[str]) -> list[str]:
    return [sys.executable, os.path.join(HERE, "peers.py"), tool, inp, out,
            "--features", ",".join(features), "--threads", "2"]


def available(tools: list[str]) -> tuple[list[str], dict[str, str]]:
    """The tools whose package is installed, and why the others were skipped."""
    ok, skipped = [], {}
    for tool in tools:
        need = NEEDS.get(tool)
        if tool == "zscore+report" and not has_report_flag():
            skipped[tool] = "this zscore has no --report/--no-report: 'zscore' is the same run"
        elif need and importlib.util.find_spec(need) is None:
            skipped[tool] = f"not installed (pip install -e '.[bench]' for {need})"
        else:
            ok.append(tool)
    return ok, skipped


# --------------------------------------------------------------------- runs
def warm(root: str) -> None:
    """Read every file once, so that no tool pays for a cold page cache."""
    for rel in generate.data_files(root):
        with open(os.path.join(root, rel), "rb") as fh:
            while fh.read(1 << 24):
                pass


@functools.cache
def age_from_psutil() -> bool:
    """Does zscore take its process age (``before_job``) from psutil's ``create_time``?"""
    spec = importlib.util.find_spec("pipeline.timings")
    try:
        with open(spec.origin if spec and spec.origin else "") as fh:
            source = fh.read()
        # Since 8b9d048 zscore reads its age from /proc (psutil only as a fallback).
        return "create_time" in source and "/proc/self/stat" not in source
    except OSError:
        return False


def fixed_costs(timings: dict[str, float], wall: float, create_offset: float
                ) -> dict[str, float | None]:
    """Process start -> first task, and last task -> process exit, from phase timings.

    ``before_job + startup`` is imports, argument parsing and the cluster
    start; what the wall time holds beyond all the phases listed (footers,
    fit, transform, report, publish, ...: any zscore records) is the cluster
    shutdown and the interpreter's exit.

    psutil derives a process's creation time from the boot time, which Linux
    gives in whole seconds, so an age computed from it is off by up to a
    second (0.5 s on the machine of docs/benchmarks.md).  While zscore measures
    ``before_job`` that way, the ``create_offset`` this runner measured for the
    same process (psutil's creation time minus the clock just before starting
    it) is added back; once zscore measures its age another way, nothing is.
    """
    if not timings:
        return {"to_first_task_s": None, "after_last_task_s": None}
    before = timings.get("before_job")
    if before is not None and age_from_psutil():
        before += create_offset
    first = (before or 0.0) + timings.get("startup", 0.0)
    work = first + sum(v for k, v in timings.items() if k not in ("before_job", "startup"))
    return {"before_job_s": None if before is None else round(before, 3),
            "to_first_task_s": round(first, 3) if before is not None else None,
            "after_last_task_s": round(wall - work, 3) if before is not None else None}


def run_one(tool: str, command: list[str], out: str, ref: dict[str, Any] | None, *,
            logs: str, label: str, timeout: float, keep: bool = False) -> dict[str, Any]:
    """One measured run; the output is checked against ``ref`` (if given) and removed."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    log_path = os.path.join(logs, f"{label}.log")
    load = os.getloadavg()[0]
    try:
        m = run_measured(command, log_path=log_path, timeout=timeout)
        rec = m.as_json()
    except subprocess.TimeoutExpired:
        rec = {"command": command, "exit_code": -1, "wall_s": timeout, "peak_rss_bytes": 0,
               "cpu_s": 0.0, "others_cpu_s": 0.0, "processes": [], "timed_out": True,
               "create_offset_s": 0.0}
    rec.update(tool=tool, label=label, loadavg_before=round(load, 2), log=log_path)
    if rec.get("timed_out"):
        rec["error"] = f"timed out after {timeout:.0f} s (--timeout)"
    elif rec["exit_code"] != 0:
        rec["error"] = _last_line(log_path) or f"exit code {rec['exit_code']}"
    rec["timings"] = _manifest_timings(out)
    rec["fixed"] = fixed_costs(rec["timings"], rec["wall_s"], rec.get("create_offset_s", 0.0))
    if ref is not None and rec["exit_code"] == 0:
        t0 = time.perf_counter()
        rec["check"] = check_output(out, ref)
        rec["check_s"] = round(time.perf_counter() - t0, 1)
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    status = "ok" if rec["exit_code"] == 0 else f"FAILED: {rec.get('error')}"
    if rec.get("check") is not None and not rec["check"]["ok"]:
        status = "WRONG: " + "; ".join(rec["check"]["problems"][:3])
    log(f"  {label}: {rec['wall_s']:.2f} s, peak RSS {report.gib(rec['peak_rss_bytes'])}, "
        f"others' CPU {rec['others_cpu_s']:.1f} s, {status}")
    return rec


def _manifest_timings(out: str) -> dict[str, float]:
    try:
        with open(os.path.join(out, "_SUCCESS")) as fh:
            timings = json.load(fh).get("timings") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: float(v) for k, v in timings.items() if isinstance(v, int | float)}


def _last_line(path: str) -> str:
    """The last line of a log that mentions an error, else its last line."""
    try:
        with open(path, errors="replace") as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "error" in ln.lower() or "exception" in ln.lower()]
    return (errors or lines or [""])[-1][:300]
