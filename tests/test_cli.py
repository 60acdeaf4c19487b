"""The command line end to end on the embedded cluster: outputs, layout, exit codes, messages.

Start-up and cluster options are tried on real ``zscore`` processes: bad options must fail
at once in one line; SIGINT at several points of start-up, and signals to the whole process
group with worker processes, must give one line and the signal's exit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import snapshot
from procs import (
    descendants,
    error_line,
    handles,
    ignores,
    paused,
    run_zscore,
    start_zscore,
    wait_for,
    zscore,
    zscore_cmd,
)
from reference import exact_reference

import pipeline


def test_run_writes_a_normalized_mirror_of_the_input(datasets, tmp_path, capsys):
    src = datasets.sample()
    before = snapshot(src)
    code, out, err = zscore(capsys, "run", src, tmp_path / "out", "--exclude", "id,label",
                            "--workers", 2)
    assert code == 0, err
    assert snapshot(src) == before  # the input is never modified
    assert "features (8): f_normal, f_skewed" in err
    assert "run: 24,000 rows in 6 files, 8 features" in out
    out_dir = tmp_path / "out"
    in_files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.parquet"))
    out_files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.parquet"))
    assert out_files == in_files
    manifest = json.loads((out_dir / "_SUCCESS").read_text())
    assert manifest["rows"] == 24_000 and len(manifest["files"]) == 6
    stats = json.loads((out_dir / "_stats.json").read_text())
    for rel in in_files:
        a, b = pq.read_table(src / rel), pq.read_table(out_dir / rel)
        assert a.num_rows == b.num_rows
        assert a.column_names == b.column_names
        for name in ["id", "label", "city", "event_time"]:
            assert a.column(name).equals(b.column(name)), (rel, name)
        assert b.schema.field("f_float32_offset").type == pa.float32()
        assert b.schema.field("f_count").type == pa.float64()
        assert b.column("f_with_nan").null_count == a.column("f_with_nan").null_count
    z = pa.concat_tables(pq.read_table(out_dir / rel) for rel in in_files)
    for name, f in stats["features"].items():
        x = z.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        x = x[~np.isnan(x)]
        if f["constant"]:
            assert (x == 0.0).all()
        else:
            assert abs(x.mean()) < 1e-9 and abs(x.std() - 1) < 1e-9, name


def test_rerun_is_byte_identical_and_transform_equals_run(datasets, tmp_path, capsys):
    src = datasets.sample()
    assert zscore(capsys, "run", src, tmp_path / "a", "--exclude", "id,label")[0] == 0
    assert zscore(capsys, "run", src, tmp_path / "b", "--exclude", "id,label",
                  "--stats", tmp_path / "s.json")[0] == 0
    assert zscore(capsys, "transform", src, tmp_path / "c", "--stats", tmp_path / "s.json")[0] == 0
    data = [{k: v for k, v in snapshot(tmp_path / d).items() if not k.startswith("_")}
            for d in "abc"]
    assert data[0] == data[1] == data[2] and len(data[0]) == 6


def test_fit_then_inspect(datasets, tmp_path, capsys):
    src = datasets.sample()
    code, out, _ = zscore(capsys, "fit", src, "--stats", tmp_path / "s.json", "--features",
                          "f_normal,f_large*", "--ddof", 1)
    assert code == 0 and "fitted 2 features on 24,000 rows in 6 files" in out
    table = pq.read_table(src, columns=["f_large_offset"]).column(0).to_numpy()
    mean, std = exact_reference(table.tolist(), ddof=1)
    stats = json.loads((tmp_path / "s.json").read_text())
    assert abs(stats["features"]["f_large_offset"]["std"] - std) <= 1e-12 * std
    assert stats["ddof"] == 1
    code, out, _ = zscore(capsys, "inspect", tmp_path / "s.json")
    assert code == 0 and "f_large_offset" in out and "ddof 1" in out


@pytest.mark.parametrize("mode", ["scale", "center"])
def test_modes_and_dtype(datasets, tmp_path, capsys, mode):
    src = datasets.sample()
    code, _, err = zscore(capsys, "run", src, tmp_path / "o", "--features", "f_float32_offset",
                          "--mode", mode, "--dtype", "float64")
    assert code == 0, err
    stats = json.loads((tmp_path / "o" / "_stats.json").read_text())["features"]
    f = stats["f_float32_offset"]
    rel = "day=2026-01-01/part-0.parquet"
    x = pq.read_table(src / rel).column("f_float32_offset").to_numpy().astype(np.float64)
    z = pq.read_table(tmp_path / "o" / rel).column("f_float32_offset")
    assert z.type == pa.float64()
    if mode == "scale":
        np.testing.assert_array_equal(z.to_numpy(), x / f["std"])
    else:  # x - mean against the exact mean: within rounding of the result
        exact = Fraction(f["moments"]["shift"]) + Fraction(f["moments"]["offset"])
        expected = np.array([float(Fraction(v) - exact) for v in x])
        np.testing.assert_array_less(np.abs(z.to_numpy() - expected),
                                     np.spacing(np.abs(expected)) + 1e-300)


# ------------------------------------------------------------------ bad input
@pytest.fixture()
def bad_inputs(datasets):
    return datasets.write("bad", {
        "a.parquet": pa.table({"x": [1.0, 2.0, 3.0], "txt": ["a", "b", "c"],
                               "empty": pa.array([None] * 3, pa.float64()),
                               "inf": [1.0, float("inf"), 2.0]})})


@pytest.mark.parametrize("args, message", [
    (["--features", "nope"], "zscore: error: --features 'nope' matches no column; available "
                             "columns: x, txt, empty, inf"),
    (["--features", "txt"], "zscore: error: column 'txt' is string, not numeric; only "
                            "integer and floating columns can be normalized"),
    (["--features", "empty"], "zscore: error: column 'empty' has no values (all 3 are "
                              "missing); exclude it with --exclude empty"),
    (["--features", "inf"], "zscore: error: column 'inf' has 1 infinite value(s), e.g. in "
                            "a.parquet; fix the data, exclude the column, or pass --inf null "
                            "to treat them as missing"),
    (["--features", ""], "zscore: error: --features is empty; name the columns to normalize, "
                         "or leave --features out to normalize every numeric column"),
    (["--features", " , "], "zscore: error: --features is empty; name the columns to "
                            "normalize, or leave --features out to normalize every numeric "
                            "column"),
    (["--mode", "maxabs"], "zscore: error: Invalid value for '--mode': 'maxabs' is not one of "
                           "'standard', 'scale', 'center', 'minmax'. (see 'zscore run --help')"),
])
def test_bad_input_exits_2_naming_the_culprit(bad_inputs, tmp_path, capsys, args, message):
    code, _, err = zscore(capsys, "run", bad_inputs, tmp_path / "out", *args)
    assert code == 2
    assert error_line(err) == message
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_output_exists_or_overlaps_input(datasets, tmp_path, capsys):
    src = datasets.sample()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    code, _, err = zscore(capsys, "run", src, tmp_path / "out")
    assert code == 2 and error_line(err) == (
        f"zscore: error: output {tmp_path / 'out'} is not empty and is not a zscore output (1 "
        "entry: keep.txt); zscore replaces only an empty directory or its own output: empty it "
        "or choose another path")
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"
    for target, how in [(src, "is"), (src / "day=2026-01-01" / "z", "lies inside"),
                        (src.parent, "contains")]:
        code, _, err = zscore(capsys, "run", src, target, "--overwrite")
        assert code == 2 and error_line(err) == (
            f"zscore: error: output {target} {how} the input {src}; choose an output outside "
            "the input")


def test_overwrite_replaces_the_old_output(datasets, tmp_path, capsys):
    src = datasets.sample()
    assert zscore(capsys, "run", src, tmp_path / "out", "--no-report")[0] == 0
    (tmp_path / "out" / "old.parquet").write_text("old")  # a zscore output, plus a stray file
    code, _, err = zscore(capsys, "run", src, tmp_path / "out", "--overwrite")
    assert code == 0, err
    assert not (tmp_path / "out" / "old.parquet").exists()
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging or old copy left behind


def test_malformed_artifact_exits_2_naming_the_field(datasets, tmp_path, capsys):
    stats = tmp_path / "s.json"
    stats.write_text(json.dumps({"format_version": 1, "ddof": 0, "inf": "error", "features": {
        "f_normal": {"dtype": "float64", "count": 1, "missing": 0, "mean": 0.0,
                     "min": 0, "max": 1, "constant": False}}}))
    code, _, err = zscore(capsys, "transform", datasets.sample(), tmp_path / "o", "--stats", stats)
    assert code == 2 and error_line(err) == (
        f"zscore: error: statistics file {stats}: field 'features.f_normal.std' is missing")


def test_transform_with_statistics_naming_a_column_the_input_lacks(datasets, tmp_path, capsys):
    src = datasets.sample()
    other = datasets.write("other", {"a.parquet": pa.table({"zz": [1.0, 2.0]})})
    assert zscore(capsys, "fit", other, "--stats", tmp_path / "s.json")[0] == 0
    code, _, err = zscore(capsys, "transform", src, tmp_path / "o", "--stats", tmp_path / "s.json")
    assert code == 2
    assert error_line(err).startswith("zscore: error: column 'zz' of the statistics is not in "
                                      "the input; available columns: id, f_normal")
    code, _, err = zscore(capsys, "transform", other, tmp_path / "o", "--stats",
                          tmp_path / "s.json", "--features", "zz")
    assert code == 0, err
    assert zscore(capsys, "fit", src, "--stats", tmp_path / "t.json", "--features", "f_normal")[0] \
        == 0
    code, _, err = zscore(capsys, "transform", src, tmp_path / "o2", "--stats",
                          tmp_path / "t.json", "--features", "f_normal,f_skewed")
    assert code == 2 and "column 'f_skewed' is not in the statistics" in error_line(err)


def test_usage_errors_are_one_line_exit_2(capsys, tmp_path):
    code, _, err = zscore(capsys, "fit", tmp_path)
    assert code == 2 and error_line(err) == (
        "zscore: error: Missing option '--stats'. (see 'zscore fit --help')")
    code, _, err = zscore(capsys, "frobnicate")
    assert code == 2 and "No such command 'frobnicate'" in error_line(err)
    code, _, err = zscore(capsys, "fit", tmp_path / "nope", "--stats", tmp_path / "s.json")
    assert code == 2
    assert error_line(err) == f"zscore: error: input {tmp_path / 'nope'} does not exist"


def test_version_and_help(capsys):
    assert zscore(capsys, "--version")[0] == 0
    code, out, _ = zscore(capsys, "run", "--help")
    assert code == 0 and "Example:" in out


def test_log_lines_and_quiet(datasets, tmp_path, capsys):
    import re

    src = datasets.sample()
    code, out, err = zscore(capsys, "run", src, tmp_path / "a", "--exclude", "id,label")
    assert code == 0
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ zscore: "
    assert re.search(stamp + r"fit +6/6 files  24,000/24,000 rows  .* MB/s", err)
    assert re.search(stamp + r"transform +6/6 files  24,000/24,000 rows", err)
    assert "feature " in out  # the statistics table
    code, out, err = zscore(capsys, "run", src, tmp_path / "b", "--exclude", "id,label", "-q")
    assert code == 0
    assert err.splitlines() == [line for line in err.splitlines() if "warning:" in line]
    assert "feature " not in out and out.startswith("run: 24,000 rows in 6 files")


# ------------------------------------------------------------ cluster options
@pytest.mark.parametrize("args, env, message", [
    (["--workers", "0"], {},
     "Invalid value for '--workers': 0 is not in the range x>=1. (see 'zscore run --help')"),
    (["--memory-limit", "1KiB"], {},
     "Invalid value for '--memory-limit': 1KiB is less than the 512MiB a worker needs (it "
     "uses about 200 MB before reading any data) (see 'zscore run --help')"),
    (["--memory-limit", "lots"], {},
     "Invalid value for '--memory-limit': 'lots' is not a size such as 2GiB or 500MB (see "
     "'zscore run --help')"),
    (["--scheduler", "foo://bar"], {},
     "Invalid value for '--scheduler': unknown protocol foo:// in 'foo://bar' (known: tcp://, "
     "tls://, "),
    (["--scheduler", "tcp://host:port"], {},
     "Invalid value for '--scheduler': 'tcp://host:port' is not an address like "
     "tcp://host:8786 (see 'zscore run --help')"),
    ([], {"DASK_SCHEDULER_ADDRESS": "garbage"},
     "DASK_SCHEDULER_ADDRESS: 'garbage' is not an address like tcp://host:8786; fix or unset it"),
], ids=["workers-0", "memory-1KiB", "memory-lots", "unknown-protocol", "no-port", "env"])
def test_bad_cluster_options_exit_2_at_once(datasets, tmp_path, args, env, message):
    t0 = time.monotonic()
    r = run_zscore("run", datasets.sample(), tmp_path / "out", *args, env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    assert time.monotonic() - t0 < 15  # it used to hang (1KiB) or wait 40 s (foo://bar)
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    assert error_line(r.stderr).startswith("zscore: error: " + message)
    assert os.listdir(tmp_path) == []


def test_smallest_memory_limit_runs(datasets, tmp_path):
    """The minimum is enough to run: a limit just above it finishes (below it, it hung)."""
    r = run_zscore("run", datasets.sample(), tmp_path / "out", "--memory-limit", "512MiB",
                   timeout=120)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------- start-up
def test_the_command_line_starts_without_heavy_imports():
    """What makes signals during start-up get zscore's one line: nothing heavy before main."""
    code = ("import sys, pipeline.__main__, pipeline.cli; "
            "print(sorted(m for m in ('numpy', 'pyarrow', 'dask', 'pandas') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
    import pipeline

    assert callable(pipeline.transform) and callable(pipeline.fit) and callable(pipeline.run)


def mapped(pid: int, name: str) -> bool:
    """True once a shared object whose path contains ``name`` is loaded in process ``pid``."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return name in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("when", ["importing", 0.0, 0.1, 0.3, 0.6, 1.0, 1.5])
def test_sigint_during_start_up_is_one_line_and_130(datasets, tmp_path, when):
    src = datasets.sample()
    run = start_zscore("run", src, tmp_path / "out", env={
        "ZSCORE_TEST_PAUSE": "publish", "ZSCORE_TEST_RESUME": str(tmp_path / "resume")})
    if when == "importing":  # numpy's library is being loaded: Python is importing the heavy part
        wait_for(lambda: mapped(run.proc.pid, "numpy") or run.proc.poll() is not None, 30,
                 "numpy to load", interval=0.002)
    else:
        # zscore's handlers are installed (before that, only the interpreter is starting)
        wait_for(lambda: handles(run.proc.pid, signal.SIGTERM), 30, "zscore to start")
        time.sleep(when)  # not synchronisation: the signal lands at several points of start-up
    run.proc.send_signal(signal.SIGINT)
    code, _, err = run.wait()
    assert code == 130, err
    assert "Traceback" not in err
    assert error_line(err) == "zscore: error: stopped by SIGINT; nothing was published"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("when, sig", [("spawning", signal.SIGINT), ("fit", signal.SIGINT),
                                       ("fit", signal.SIGTERM)])
def test_signal_to_the_process_group_with_worker_processes(datasets, tmp_path, when, sig):
    """Ctrl-C (or Airflow's SIGTERM) reaches zscore and its worker processes alike."""
    run = start_zscore("run", datasets.sample(), tmp_path / "out", "--processes", "--workers", 2,
                       env={"ZSCORE_TEST_PAUSE": "fit",
                            "ZSCORE_TEST_RESUME": str(tmp_path / "resume")}, group=True)
    if when == "spawning":
        # Both workers run zscore's code, still importing and starting Dask.  (Before that,
        # in the first ~40 ms of each worker's interpreter, Python's own SIGINT handling
        # applies: the README says so; that window is not what this case tests.)
        def spawned() -> bool:
            workers = [p for p in descendants(run.proc.pid)
                       if "spawn_main" in " ".join(psutil.Process(p).cmdline())]
            return len(workers) == 2 and all(ignores(p, signal.SIGINT) for p in workers)

        wait_for(spawned, 60, "both worker processes", interval=0.002)
    else:
        paused(run, "fit")
    workers = descendants(run.proc.pid)
    os.killpg(run.proc.pid, sig)
    code, _, err = run.wait()
    assert code == 128 + sig, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert error_line(err) == (f"zscore: error: stopped by {signal.Signals(sig).name}; nothing "
                               "was published")
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                             for p in workers), 30, "the workers to exit")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("phase, code", [("fit", 143), ("published", 0)])
def test_fit_stopped_before_or_after_saving_says_which(datasets, tmp_path, phase, code):
    stats = tmp_path / "s.json"
    run = start_zscore("fit", datasets.sample(), "--stats", stats, env={
        "ZSCORE_TEST_PAUSE": phase, "ZSCORE_TEST_RESUME": str(tmp_path / "resume")})
    paused(run, phase)
    run.proc.send_signal(signal.SIGTERM)
    got, out, err = run.wait()
    assert got == code, err
    assert "Traceback" not in err
    if code:
        assert error_line(err) == "zscore: error: stopped by SIGTERM; nothing was published"
        assert os.listdir(tmp_path) == []
    else:
        assert f"zscore: warning: SIGTERM arrived after {stats} was published; the run " \
               "completed" in err
        assert out.startswith("fitted 10 features on 24,000 rows in 6 files")
        assert set(json.loads(stats.read_text())["features"]) >= {"f_normal", "f_skewed"}


def test_on_a_terminal_the_error_gets_its_own_line(datasets, tmp_path):
    """Stopped mid-pass, the progress bar's line is ended before the error is printed."""
    import pty
    import select

    src = datasets.sample("medium", rows=1_500_000, days=4, files_per_day=10)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(zscore_cmd("run", src, tmp_path / "out"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen, sent = b"", False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not select.select([leader], [], [], 0.1)[0]:
            continue
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: zscore exited
            break
        seen += chunk
        if not sent and b"transform  [" in seen:
            proc.send_signal(signal.SIGINT)  # while the bar is drawn mid-pass
            sent = True
    os.close(leader)
    assert proc.wait(timeout=60) == 130
    text = seen.decode()
    bar, error = text.rsplit("zscore: error: ", 1)
    assert error.strip() == "stopped by SIGINT; nothing was published"
    assert bar.endswith("\n") and "ETA" in bar.rsplit("\r", 2)[-2], repr(text[-300:])


@pytest.mark.parametrize("args, name", [
    (["run", "", "OUT"], "INPUT"),
    (["run", "IN", ""], "OUTPUT"),
    (["run", "IN", "OUT", "--cache", " "], "--cache"),
    (["fit", "IN", "--stats", ""], "--stats"),
    (["transform", "IN", "OUT", "--stats", ""], "--stats"),
    (["diff", "", "x.json"], "OLD.json"),
])
def test_an_empty_path_is_refused_never_taken_for_the_current_directory(datasets, tmp_path,
                                                                        capsys, args, name):
    # An unset shell variable ("$OUT") must not make the current directory the output,
    # the input, or silently switch the cache off.
    real = {"IN": str(datasets.sample()), "OUT": str(tmp_path / "out")}
    code, out, err = zscore(capsys, *[real.get(a, a) for a in args])
    assert code == 2, err
    assert error_line(err).startswith(f"zscore: error: Invalid value for '{name}': is empty; "
                                      "give a path or URL")
    assert not (tmp_path / "out").exists()


def test_the_python_api_refuses_an_empty_path(datasets):
    with pytest.raises(pipeline.InputError, match="a path is empty"):
        pipeline.fit("")
