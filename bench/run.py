"""Benchmark ``zscore run`` against its peers, each a whole process, in the same run.

Modes (``--mode``):

compare (default)
    zscore and the peers (:mod:`peers`) on one size: median wall time over
    ``--repeat`` runs, peak RSS of the process tree, MB/s, ratio to zscore,
    and a correctness check of every tool's output (:mod:`check`).
scaling
    the same tools on two sizes (``--sizes M,L``): seconds per GB.
memory
    ``zscore run --processes --memory-limit 1GiB`` (default on L): the peak
    RSS of each worker process.
many-files
    10,000 files of 100 rows: seconds per file.
fixed
    zscore's fixed costs on a tiny input (XS), threads and processes, from the
    phase timings in its ``_SUCCESS`` manifest, next to bare import times.
cache
    the incremental fit (``bench/cache.py``): after one new file, a re-fit with
    ``--cache`` against a full fit, in one process and as whole processes.
external (``--scheduler ADDRESS``, or ``--scheduler spawn`` to start one)
    on one external Dask cluster: ``zscore run --scheduler ADDRESS`` and plain
    Dask, next to the embedded ``zscore run`` (see :mod:`external`).
all
    every mode above, one after the other.

Runs are interleaved (zscore, peer 1, peer 2, ..., then again) so that a
burst of other work on the machine spreads over every tool; the CPU time used
by other processes during each run is recorded as a sign of interference.
The input is read once before timing, so every run sees a warm page cache.
Results go to ``bench/results/<time>-<mode>.json``; a markdown table is
printed.

Examples::

    python bench/run.py --size S --repeat 1                 # a quick look
    python bench/run.py --size M --repeat 3                 # the table in docs/benchmarks.md
    python bench/run.py --mode scaling --only zscore,polars
    python bench/run.py --scheduler spawn --repeat 3        # external cluster vs embedded
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import generate
import report
from measure import run_measured
from runs import TOOLS, available, log, peer_command, run_one, warm, zscore_command

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
OUT = os.path.join(generate.DATA, "out")


# -------------------------------------------------------------------- modes
class Bench:
    """One invocation of this script: options, log folder and the JSON being built."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.logs = os.path.join(RESULTS, f"{self.stamp}-logs")
        os.makedirs(self.logs, exist_ok=True)
        self.doc: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:],
            "machine": report.machine(), "versions": report.versions(),
            "modes": {}}
        self.source = report.source_hash()
        self.markdown: list[str] = []

    def dataset(self, size: str) -> tuple[str, dict[str, Any]]:
        root, info = generate.ensure(size, log=log)
        log(f"warming the page cache with {size} ({info['bytes'] / 1e9:.2f} GB) ...")
        warm(root)
        return root, info

    def command(self, tool: str, root: str, info: dict[str, Any], out: str,
                extra: tuple[str, ...] = ()) -> list[str]:
        if tool in ("zscore", "zscore+report"):
            return zscore_command(root, out, extra, report=tool == "zscore+report")
        return peer_command(tool, root, out, info["features"])

    def series(self, tools: list[str], size: str, repeat: int,
               extra: tuple[str, ...] = (), commands: dict[str, list[str]] | None = None,
               cluster: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
        """``repeat`` interleaved rounds of ``tools`` on ``size``; the first output checked.

        ``commands``: the command of a tool, when it is not :meth:`command`'s; an
        output path ``{out}`` in it is replaced by the tool's output directory.
        ``cluster``: the pids of the external cluster a tool runs on.
        """
        root, info = self.dataset(size)
        commands = commands or {}
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
        checks: dict[str, Any] = {}
        for rep in range(repeat):
            for tool in tools:
                out = os.path.join(OUT, tool)
                check = self.args.check_all or tool not in checks
                command = [c.replace("{out}", out) for c in commands[tool]] \
                    if tool in commands else self.command(tool, root, info, out, extra)
                rec = run_one(tool, command, out, info if check else None, logs=self.logs,
                              label=f"{size}-{tool}-{rep + 1}", timeout=self.args.timeout,
                              keep=self.args.keep_output,
                              cluster_pids=(cluster or {}).get(tool, ()))
                runs[tool].append(rec)
                if "check" in rec and (tool not in checks or not rec["check"]["ok"]):
                    checks[tool] = rec["check"]
        summary = {t: report.tool_summary(rs) for t, rs in runs.items()}
        failures = {t: next((r.get("error", "") for r in rs if r["exit_code"]), "")
                    for t, rs in runs.items()}
        return {"size": size, "input": {k: info[k] for k in ("rows", "files", "bytes")},
                "input_path": root, "repeat": repeat, "runs": runs, "checks": checks,
                "summary": summary, "failures": failures,
                "commands": {t: _shell(rs[0]["command"]) for t, rs in runs.items() if rs}}

    def add(self, mode: str, result: dict[str, Any], text: str) -> None:
        source = report.source_hash()
        if source != self.source:
            # An editable install runs whatever the tree holds when each run starts.
            text += ("\n\n**warning**: zscore's source (pipeline/) changed during this mode, "
                     f"now {report.source_commit()}: its runs did not all use the same code")
            result["source_changed"] = True
        self.source = source
        self.doc["modes"][mode] = result
        self.markdown.append(text)
        print(text + "\n", flush=True)

    def save(self) -> str:
        self.doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        mode = self.args.mode
        path = os.path.join(RESULTS, f"{self.stamp}-{mode}.json")
        with open(path, "w") as fh:
            json.dump(self.doc, fh, indent=1, default=str)
        head = [f"command: `{' '.join(['python bench/run.py', *self.doc['argv']])}`",
                f"started: {self.doc['started']}",
                f"machine: {report.machine_line(self.doc['machine'])}",
                f"versions: {report.versions_line(self.doc['versions'])}"]
        with open(os.path.join(RESULTS, f"{self.stamp}-{mode}.md"), "w") as fh:
            fh.write("\n".join(head) + "\n\n" + "\n\n".join(self.markdown) + "\n")
        return path


def _shell(command: list[str]) -> str:
    import shlex

    short = [os.path.relpath(c, os.getcwd()) if os.path.isabs(c) else c for c in command]
    return " ".join(shlex.quote(c) for c in short)


def mode_compare(bench: Bench, tools: list[str], skipped: dict[str, str]) -> None:
    size = bench.args.size or "M"
    res = bench.series(tools, size, bench.args.repeat)
    res["skipped"] = skipped
    inp = res["input"]
    lines = [f"### compare: size {size} ({inp['rows']:,} rows, {inp['files']} files, "
             f"{inp['bytes'] / 1e9:.2f} GB), median of {bench.args.repeat}",
             "", report.compare_table(res)]
    lines += [f"\nskipped {t}: {why}" for t, why in skipped.items()]
    zruns = {f"{t} {size}": res["runs"][t] for t in ("zscore", "zscore+report")
             if t in res["runs"]}
    if zruns:
        lines += ["", "zscore phases (s, from its manifest):", "", report.phases_table(zruns)]
    others = [r["others_cpu_s"] for rs in res["runs"].values() for r in rs]
    lines += ["", f"CPU used by other processes during the runs: median "
              f"{report.median(others):.1f} s, max {max(others, default=0):.1f} s per run"]
    bench.add("compare", res, "\n".join(lines))


def mode_scaling(bench: Bench, tools: list[str]) -> None:
    sizes = bench.args.sizes.split(",")
    tools = tools if bench.args.only else ["zscore"]
    per_size = {size: bench.series(tools, size, bench.args.repeat) for size in sizes}
    rows = []
    for tool in tools:
        base = None
        for size, res in per_size.items():
            s, gb = res["summary"][tool], res["input"]["bytes"] / 1e9
            per_gb = s["median_s"] / gb
            base = base or per_gb
            rows.append([tool, size, f"{res['input']['files']}", f"{gb:.2f}",
                         f"{s['median_s']:.2f}", f"{per_gb:.2f}", f"{per_gb / base:.2f}×",
                         report.gib(s["peak_rss_bytes"]), f"{s['others_cpu_s']:.1f}",
                         report.verdict(res["checks"].get(tool))])
    text = "\n".join([f"### scaling: {' vs '.join(sizes)}, median of {bench.args.repeat}", "",
                      report.table(["tool", "size", "files", "GB", "median wall (s)", "s/GB",
                                    f"s/GB vs {sizes[0]}", "peak RSS (tree)",
                                    "others' CPU (s)", "output check"], rows, right=2)])
    bench.add("scaling", {"sizes": per_size}, text)


def mode_memory(bench: Bench) -> None:
    size = bench.args.size or "L"
    limit = bench.args.memory_limit
    extra = ("--processes", "--workers", "2", "--memory-limit", limit)
    res = bench.series(["zscore"], size, bench.args.repeat, extra)
    rows = []
    for rec in res["runs"]["zscore"]:
        workers = [p for p in rec["processes"] if p["role"] == "worker"]
        main = next((p["peak_rss_bytes"] for p in rec["processes"] if p["role"] == "main"), 0)
        rows.append([rec["label"], f"{rec['wall_s']:.2f}", report.gib(rec["peak_rss_bytes"]),
                     report.gib(main),
                     ", ".join(report.gib(p["peak_rss_bytes"]) for p in workers) or "–",
                     f"{rec['others_cpu_s']:.1f}",
                     "ok" if rec["exit_code"] == 0 else rec.get("error", "failed")])
    text = "\n".join([
        f"### memory: `zscore run {' '.join(extra)}` on {size} "
        f"({res['input']['bytes'] / 1e9:.2f} GB)", "",
        report.table(["run", "wall (s)", "peak RSS (tree)", "main process", "each worker",
                      "others' CPU (s)", "exit"], rows),
        "", f"output check: {report.verdict(res['checks'].get('zscore'))}"])
    bench.add("memory", res, text)


def mode_many(bench: Bench, tools: list[str]) -> None:
    res = bench.series(tools, "many", bench.args.repeat)
    files = res["input"]["files"]
    rows = [[t, f"{s['median_s']:.2f}", f"{1000 * s['median_s'] / files:.2f}",
             report.gib(s["peak_rss_bytes"]), f"{s['others_cpu_s']:.1f}",
             report.verdict(res["checks"].get(t))]
            if s["ok_runs"] else [t, "failed", "", "", "", res["failures"].get(t, "")]
            for t, s in res["summary"].items()]
    lines = [f"### many files: {files:,} files of {res['input']['rows'] // files} rows, "
             f"median of {bench.args.repeat}", "",
             report.table(["tool", "median wall (s)", "ms per file", "peak RSS (tree)",
                           "others' CPU (s)", "output check"], rows)]
    zruns = {f"{t} many": res["runs"][t] for t in ("zscore", "zscore+report")
             if t in res["runs"]}
    if zruns:
        lines += ["", report.phases_table(zruns)]
    bench.add("many-files", res, "\n".join(lines))


def mode_fixed(bench: Bench) -> None:
    size = bench.args.size or "XS"
    root, info = bench.dataset(size)
    runs: dict[str, list[dict[str, Any]]] = {}
    baselines = {"python -c pass": [sys.executable, "-c", "pass"],
                 "import pipeline.cli": [sys.executable, "-c", "import pipeline.cli"],
                 "import dask.dataframe, distributed":
                     [sys.executable, "-c", "import dask.dataframe, distributed"]}
    base_runs: dict[str, list[float]] = {k: [] for k in baselines}
    configs = {"--threads": ("--threads",), "--processes": ("--processes",)}
    for rep in range(bench.args.repeat):
        for name, cmd in baselines.items():
            base_runs[name].append(run_measured(cmd).wall)
        for name, extra in configs.items():
            out = os.path.join(OUT, "zscore")
            runs.setdefault(f"zscore {name}", []).append(run_one(
                "zscore", zscore_command(root, out, extra), out, info if rep == 0 else None,
                logs=bench.logs, label=f"{size}-zscore{name}-{rep + 1}",
                timeout=bench.args.timeout))
    rows = [[k, f"{report.median(v):.2f}"] for k, v in base_runs.items()]
    text = "\n".join([
        f"### fixed costs: zscore on {size} ({info['rows']:,} rows, {info['files']} files), "
        f"median of {bench.args.repeat}", "", report.phases_table(runs), "",
        report.table(["bare process", "wall (s)"], rows)])
    bench.add("fixed", {"size": size, "runs": runs, "baselines": base_runs}, text)


def mode_cache(bench: Bench) -> None:
    """The incremental fit (bench/cache.py): cached re-fit after one new file vs full fit."""
    import subprocess

    size = bench.args.size or "M"
    root, info = bench.dataset(size)
    out = subprocess.run([sys.executable, os.path.join(HERE, "cache.py"), root, "--repeat",
                          str(bench.args.repeat)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    rows = []
    for where, label in (("in_process", "the fit (one process, one cluster)"),
                         ("process", "whole `zscore fit` processes")):
        r = res[where]
        rows.append([label, f"{report.median(r['full_fit_s']):.2f}",
                     f"{report.median(r['cached_refit_s']):.2f}", f"{100 * r['ratio']:.1f} %"])
    text = "\n".join([
        f"### incremental fit: {size} ({res['files']} files), 1 new file "
        f"(`{res['new_file']}`), median of {bench.args.repeat}", "",
        report.table(["measured", "full fit (s)", "cached re-fit (s)", "re-fit / full"], rows),
        "", f"statistics of the cached re-fit bit-identical to the full fit: "
        f"{'yes' if res['bit_identical'] else '**NO**'}"])
    bench.add("cache", res, text)


def mode_external(bench: Bench) -> None:
    """zscore and plain Dask on one external cluster, and zscore embedded, interleaved."""
    import external

    size = bench.args.size or "M"
    root, info = bench.dataset(size)
    with external.cluster(bench.args.scheduler, log=log) as (address, pids):
        sched = ("--scheduler", address)
        commands = {"zscore": zscore_command(root, "{out}"),
                    "zscore --scheduler": zscore_command(root, "{out}", sched),
                    "dask --scheduler": [*peer_command("dask", root, "{out}", info["features"]),
                                         *sched]}
        res = bench.series(list(commands), size, bench.args.repeat, commands=commands,
                           cluster={t: tuple(pids) for t in commands if "--scheduler" in t})
    med = {t: s["median_s"] for t, s in res["summary"].items() if s["ok_runs"]}
    inp = res["input"]
    lines = [f"### external cluster {address}: size {size} ({inp['rows']:,} rows, "
             f"{inp['files']} files, {inp['bytes'] / 1e9:.2f} GB), median of "
             f"{bench.args.repeat}", "", report.compare_table(res), ""]
    if "zscore" in med and "zscore --scheduler" in med:
        lines.append(f"external / embedded: {med['zscore --scheduler'] / med['zscore']:.2f}×")
    if "dask --scheduler" in med and "zscore --scheduler" in med:
        lines.append(f"plain Dask / zscore on the same cluster: "
                     f"{med['dask --scheduler'] / med['zscore --scheduler']:.2f}×")
    zruns = {t: res["runs"][t] for t in ("zscore", "zscore --scheduler")}
    lines += ["", "zscore phases (s, from its manifest):", "", report.phases_table(zruns),
              "", f"cluster processes on this machine: {len(pids)} (their CPU time counts "
              "as the run's: cores used, not others' CPU)" if pids else
              "the cluster runs elsewhere: its CPU time is not measured"]
    res["address"] = address
    bench.add("external", res, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter,
        epilog="modes: compare, scaling, memory, many-files, fixed, cache, external, all "
               "(see bench/run.py)")
    parser.add_argument("--mode", default="compare",
                        choices=["compare", "scaling", "memory", "many-files", "fixed", "cache",
                                 "external", "all"])
    parser.add_argument("--scheduler", default="",
                        help="external mode: a Dask scheduler's address, or 'spawn' to start "
                             "a scheduler and 2 worker processes of 1 thread on loopback")
    parser.add_argument("--size", choices=sorted(generate.SIZES), default=None,
                        help="dataset (default: M; memory: L; fixed: XS)")
    parser.add_argument("--sizes", default="M,L", help="scaling: two sizes (default M,L)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool (default 3)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--memory-limit", default="1GiB", help="memory mode (default 1GiB)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--check-all", action="store_true",
                        help="check every run's output, not only each tool's first")
    parser.add_argument("--keep-output", action="store_true",
                        help="leave the last outputs in bench/data/out")
    args = parser.parse_args(argv)
    if args.scheduler and args.mode == "compare":
        args.mode = "external"
    if args.mode == "external" and not args.scheduler:
        parser.error("--mode external needs --scheduler ADDRESS (or --scheduler spawn)")
    wanted = [t.strip() for t in args.only.split(",") if t.strip()] or list(TOOLS)
    unknown = [t for t in wanted if t not in TOOLS]
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    tools, skipped = available(wanted)
    for tool, why in skipped.items():
        log(f"skipping {tool}: {why}")
    bench = Bench(args)
    modes = ["compare", "scaling", "memory", "many-files", "fixed", "cache"] \
        if args.mode == "all" \
        else [args.mode]
    for mode in modes:
        log(f"== {mode}")
        if mode == "compare":
            mode_compare(bench, tools, skipped)
        elif mode == "scaling":
            mode_scaling(bench, tools)
        elif mode == "memory":
            mode_memory(bench)
        elif mode == "many-files":
            mode_many(bench, tools)
        elif mode == "cache":
            mode_cache(bench)
        elif mode == "external":
            mode_external(bench)
        else:
            mode_fixed(bench)
    print(f"machine: {report.machine_line(bench.doc['machine'])}")
    print(f"versions: {report.versions_line(bench.doc['versions'])}")
    log(f"results: {bench.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
