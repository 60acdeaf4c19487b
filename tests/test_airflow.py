"""deploy/airflow/zscore_dag.py in a real Apache Airflow 3.3.2.

Airflow gets its own virtual environment, ``.airflow-venv/`` (git-ignored), never the
project's: the DAG runs zscore as a command and imports nothing of it. The environment is
installed on first use with the pins of ``deploy/airflow/constraints.txt`` and reused while
its stamp matches them; a failed install fails the tests (never skips). Every Airflow
process gets a temporary AIRFLOW_HOME (SQLite), no example DAGs, and none of the caller's
AIRFLOW_* or DASK_* variables. Settings reach the DAG as Airflow does it: Variables through
``AIRFLOW_VAR_ZSCORE_*``, params through the run's conf.

- The DAG folder has no import errors, as ``airflow dags list-import-errors`` reports them.
- A day's run on the embedded local cluster (``dag.test``, after ``airflow dags reserialize``):
  the fit covers the days before it, the gate is skipped (no previous fit), both outputs
  are published; a second run for the same day rewrites byte-identical data files and
  overwrites the day's artifact. The next day passes the gate.
- zscore's exit codes end to end, with ``retries=1``: drift (3) and a missing input (2)
  fail after one try; an unwritable stats_dir (1) is retried.
- ``run_zscore``'s mapping of every kind of exit, and the settings' precedence.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FILE = ROOT / "deploy" / "airflow" / "zscore_dag.py"
CONSTRAINTS = ROOT / "deploy" / "airflow" / "constraints.txt"
AIRFLOW = "apache-airflow==3.3.2"
VENV = ROOT / ".airflow-venv"
ZSCORE = Path(sys.executable).parent / "zscore"  # the project's, beside this interpreter
DAG_ID = "zscore_daily"

# The install (about a minute) runs inside the first test's timeout.
pytestmark = pytest.mark.timeout(900)


# ------------------------------------------------------------------ Airflow
def _run(cmd: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd[:4])} ... took over {timeout} s")


@pytest.fixture(scope="session")
def airflow_venv() -> Path:
    """``.airflow-venv`` with the pinned Airflow, (re)built unless its stamp matches."""
    stamp = VENV / ".installed-stamp"
    want = (f"{AIRFLOW} {hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()} "
            f"python {platform.python_version()}\n")
    python = VENV / "bin" / "python"
    # python is a symlink to the base interpreter, which may have gone since.
    if (stamp.is_file() and stamp.read_text() == want and python.resolve().is_file()
            and (VENV / "bin" / "airflow").is_file()):
        return VENV
    shutil.rmtree(VENV, ignore_errors=True)
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "-c", str(CONSTRAINTS), AIRFLOW]]
    for cmd in steps:
        proc = _run(cmd, timeout=600)
        if proc.returncode:
            pytest.fail(f"cannot install {AIRFLOW} into {VENV}: {' '.join(cmd[2:5])} exited "
                        f"{proc.returncode}: {' '.join(proc.stderr.split())[-800:]}")
    stamp.write_text(want)  # last: an interrupted install is redone next time
    return VENV


class Airflow:
    """An isolated Airflow installation: its own AIRFLOW_HOME, DAGs folder and variables."""

    def __init__(self, venv: Path, home: Path, variables: dict[str, str]):
        self.venv, self.home = venv, home
        self.dags = home / "dags"
        self.dags.mkdir(parents=True)
        shutil.copy(DAG_FILE, self.dags)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AIRFLOW", "DASK_", "ZSCORE_"))}
        self.env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "ZSCORE_AIRFLOW_RETRIES": "1",
            "ZSCORE_AIRFLOW_RETRY_DELAY": "0",
            **{f"AIRFLOW_VAR_ZSCORE_{k.upper()}": v for k, v in variables.items()},
        })

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = _run([str(self.venv / "bin" / "airflow"), *args], timeout=180, env=self.env,
                    cwd=self.home)
        if ok:
            assert proc.returncode == 0, f"airflow {' '.join(args)}: {proc.stdout[-2000:]}" \
                                         f"{proc.stderr[-2000:]}"
        return proc

    def python(self, code: str, *args: str, log: Path) -> None:
        with log.open("w") as out:
            try:
                proc = subprocess.run([str(self.venv / "bin" / "python"), "-c", code, *args],
                                      stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                      cwd=self.home, timeout=600)
            except subprocess.TimeoutExpired:
                pytest.fail(f"over 600 s: {log.read_text()[-4000:]}")
        assert proc.returncode == 0, log.read_text()[-4000:]


# Runs the DAG once per entry of runs, in this process, and records after each run the
# states and tries of its tasks and the sha256 and mtime of every file under data.
DRIVER = r"""
import hashlib, json, sys
from datetime import datetime, timezone
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag
from airflow.utils.session import create_session

spec = json.loads(Path(sys.argv[1]).read_text())
data, results = Path(spec["data"]), []
for run in spec["runs"]:
    # Parsed again for each run, as a worker would: dag.test() keeps a run's conf in the
    # DAG object's params, where the next run would inherit it.
    bag = DagBag(dag_folder=spec["dags"])
    assert not bag.import_errors, bag.import_errors
    day = datetime.fromisoformat(run["date"]).replace(tzinfo=timezone.utc)
    dr = bag.get_dag(spec["dag_id"]).test(logical_date=day, run_conf=run["conf"])
    with create_session() as session:
        tasks = {ti.task_id: [ti.state and str(ti.state), ti.try_number]
                 for ti in dr.get_task_instances(session=session)}
    files = {str(p.relative_to(data)): [hashlib.sha256(p.read_bytes()).hexdigest(),
                                        p.stat().st_mtime_ns]
             for p in sorted(data.rglob("*")) if p.is_file()}
    results.append({"state": str(dr.state), "tasks": tasks, "files": files})
    Path(spec["result"]).write_text(json.dumps(results))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zscore-root")
    for name, rows, files, seed in [("train", 20_000, 2, 1), ("validation", 5_000, 1, 2)]:
        proc = _run([str(ZSCORE), "sample", str(root / name), "--rows", str(rows), "--days",
                     "5", "--files-per-day", str(files), "--seed", str(seed)], timeout=120)
        assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="module")
def airflow(airflow_venv: Path, data: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Airflow:
    af = Airflow(airflow_venv, tmp_path_factory.mktemp("airflow-home"), {
        "root": str(data),
        "executable": str(ZSCORE),
        # The sample's epoch-seconds column moves with the day by design; a deployment
        # leaves timestamps out of the features too.
        "exclude": "id,label,f_epoch_seconds",
    })
    af.cli("db", "migrate")
    # Airflow 3's dag.test() wants the DAG serialized in the metadata database first.
    af.cli("dags", "reserialize")
    return af


# (logical date, the run's conf)
RUNS: list[tuple[str, dict[str, Any]]] = [
    ("2026-01-03", {}),
    ("2026-01-03", {}),                                   # a rerun of the same day
    ("2026-01-04", {}),                                   # the gate compares with 01-03
    ("2026-01-05", {"max_shift": 0}),                     # every shift is drift: exit 3
    ("2026-01-05", {"train_input": "/nonexistent/train"}),         # exit 2
    # exit 1: /sys refuses new files even to root (a directory under a file would be exit 2)
    ("2026-01-05", {"stats_dir": "/sys/zscore-stats"}),
]


@pytest.fixture(scope="module")
def runs(airflow: Airflow, data: Path) -> tuple[list[dict[str, Any]], str]:
    """The results of RUNS, in order, and the log of the process that ran them."""
    spec = airflow.home / "runs.json"
    result = airflow.home / "result.json"
    spec.write_text(json.dumps({
        "dags": str(airflow.dags), "dag_id": DAG_ID, "data": str(data),
        "result": str(result),
        "runs": [{"date": d, "conf": {k: v.format(data=data) if isinstance(v, str) else v
                                      for k, v in conf.items()}} for d, conf in RUNS],
    }))
    log = airflow.home / "runs.log"
    airflow.python(DRIVER, str(spec), log=log)
    out = json.loads(result.read_text())
    assert len(out) == len(RUNS)
    return out, log.read_text()


def _data_files(files: dict[str, Any], under: str) -> dict[str, Any]:
    """The data files of one output: no part of their path starts with ``_``."""
    return {k: v for k, v in files.items() if k.startswith(under + "/")
            and not any(part.startswith("_") for part in Path(k).parts)}


def _tasks(run: dict[str, Any]) -> dict[str, str]:
    return {task: state for task, (state, _) in run["tasks"].items()}


# ------------------------------------------------------------------ tests
def test_the_dag_folder_has_no_import_errors(airflow: Airflow) -> None:
    proc = airflow.cli("dags", "list-import-errors", "-o", "json", ok=False)
    # Airflow logs its warnings on stdout too; the JSON is the last line.
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[-1]) == [], \
        proc.stdout[-3000:]
    listed = json.loads(airflow.cli("dags", "list", "-o", "json").stdout.splitlines()[-1])
    assert [(d["dag_id"], Path(d["fileloc"]).name) for d in listed] == [
        (DAG_ID, DAG_FILE.name)]


def test_a_day_fits_on_the_days_before_it_and_publishes_both_splits(runs, data) -> None:
    first = runs[0][0]
    assert first["state"] == "success"
    # No fit for 2026-01-02 exists: the gate is skipped, and the transforms still run.
    assert _tasks(first) == {"plan": "success", "fit": "success", "drift_gate": "skipped",
                             "transform_train": "success", "transform_validation": "success"}
    stats = json.loads((data / "stats" / "2026-01-03.json").read_text())
    assert stats["input"]["filters"] == ["day >= 2025-12-04", "day < 2026-01-03"]
    before = [data / "train" / f"day=2026-01-0{d}" for d in (1, 2)]
    assert stats["input"]["rows"] == sum(pq.ParquetDataset(p).read().num_rows for p in before)
    assert "f_epoch_seconds" not in stats["features"]  # the Variable zscore_exclude
    for split in ("train", "validation"):
        out = data / f"{split}_z" / "day=2026-01-03"
        assert (out / "_SUCCESS").is_file()
        names = sorted(p.name for p in (data / split / "day=2026-01-03").glob("*.parquet"))
        assert sorted(p.name for p in out.glob("*.parquet")) == names
        assert _data_files(first["files"], f"{split}_z/day=2026-01-03")
    # zscore's stderr streams into the task log.
    assert re.search(r"zscore: fit +4/4 files", runs[1])


def test_a_rerun_of_the_day_replaces_it_with_identical_data(runs) -> None:
    first, second = runs[0][:2]
    assert second["state"] == "success" and _tasks(second) == _tasks(first)
    for out in ("train_z/day=2026-01-03", "validation_z/day=2026-01-03"):
        a, b = _data_files(first["files"], out), _data_files(second["files"], out)
        assert a.keys() == b.keys()
        for name in a:
            assert b[name][0] == a[name][0], f"{name} differs after the rerun"
            assert b[name][1] != a[name][1], f"{name} was not rewritten by the rerun"
        assert (second["files"][f"{out}/_SUCCESS"][1] != first["files"][f"{out}/_SUCCESS"][1])
    artifact = "stats/2026-01-03.json"
    assert second["files"][artifact][1] != first["files"][artifact][1]


def test_the_next_day_passes_the_drift_gate(runs, data) -> None:
    run = runs[0][2]
    assert run["state"] == "success"
    assert _tasks(run)["drift_gate"] == "success"  # ran: the fit of 2026-01-03 exists
    assert _tasks(run)["transform_train"] == "success"
    assert "zscore diff" in runs[1] and "0 of 7 features drifted" in runs[1]
    assert (data / "train_z" / "day=2026-01-04" / "_SUCCESS").is_file()


def test_drift_fails_the_gate_without_a_retry(runs) -> None:
    run = runs[0][3]
    assert run["state"] == "failed"
    assert run["tasks"]["drift_gate"] == ["failed", 1]  # retries=1, yet one try
    assert _tasks(run)["transform_train"] == "upstream_failed"
    assert _tasks(run)["transform_validation"] == "upstream_failed"
    assert "zscore diff exited 3 (drift past the limits; not retried)" in runs[1]


def test_bad_input_fails_without_a_retry(runs) -> None:
    run = runs[0][4]
    assert run["state"] == "failed"
    assert run["tasks"]["fit"] == ["failed", 1]
    assert ("zscore fit exited 2 (bad input or data; not retried): zscore: error: input "
            "/nonexistent/train does not exist") in runs[1]


def test_an_infrastructure_failure_is_retried(runs) -> None:
    run = runs[0][5]
    assert run["state"] == "failed"
    assert run["tasks"]["fit"] == ["failed", 2]  # the first try and its one retry
    assert "zscore fit exited 1 (infrastructure; retried while retries last)" in runs[1]


# ------------------------------------------------------------------ units, in Airflow's venv
UNITS = r"""
import doctest, importlib.util, json, os, signal, sys

spec = importlib.util.spec_from_file_location("zscore_dag", sys.argv[1])
dag = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dag)
out = {"doctest": doctest.testmod(dag).failed}

def outcome(cmd):
    try:
        dag.run_zscore(cmd, grace=5)
        return "ok"
    except Exception as exc:
        return [type(exc).__name__, str(exc)]

for code in (0, 1, 2, 3, 130, 143):
    out[str(code)] = outcome([sys.executable, "-c", "import sys; print('working', "
                              f"file=sys.stderr); print('zscore: error: boom', file="
                              f"sys.stderr); print('last line'); sys.exit({code})"])
out["signal"] = outcome([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
out["missing"] = outcome(["/nonexistent/zscore", "fit"])

variables = {"root": "s3://bucket/z/", "window_days": "7", "drift_gate": "off",
             "exclude": "", "max_shift": "9"}
s = dag.resolve_settings({"max_shift": 0.25, "scheduler": "tcp://10.0.0.1:8786"},
                         variables.get)
out["settings"] = s
out["plan"] = dag.plan_commands("2026-03-01", s)
out["default_plan"] = dag.plan_commands("2026-01-31", dag.resolve_settings({"workers": 2},
                                                                          lambda name: None))
# An interrupted task (execution_timeout raises in the task) stops the zscore it runs.
class Interrupted(BaseException):
    pass

def interrupt(signum, frame):
    raise Interrupted

signal.signal(signal.SIGALRM, interrupt)
pidfile = sys.argv[2]
signal.setitimer(signal.ITIMER_REAL, 1.0)
try:
    dag.run_zscore([sys.executable, "-c", "import os, time; open(%r, 'w').write(str("
                    "os.getpid())); time.sleep(120)" % pidfile], grace=5)
except Interrupted:
    try:
        os.kill(int(open(pidfile).read()), 0)
        out["interrupted"] = "zscore still runs"
    except ProcessLookupError:
        out["interrupted"] = "zscore stopped"

try:
    dag.resolve_settings({}, {"window_days": "a week"}.get)
except Exception as exc:
    out["bad_variable"] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def test_exit_codes_and_settings_in_airflows_venv(airflow: Airflow, tmp_path) -> None:
    log = tmp_path / "units.log"
    airflow.python(UNITS, str(airflow.dags / DAG_FILE.name), str(tmp_path / "pid"), log=log)
    out = json.loads(log.read_text().splitlines()[-1])
    assert out["doctest"] == 0
    assert out["0"] == "ok"
    fail, retry = "AirflowFailException", "AirflowException"
    # The error line of zscore, not its last line, names the cause.
    assert out["2"][0] == fail
    assert out["2"][1].endswith(" -c exited 2 (bad input or data; not retried): "
                                "zscore: error: boom")
    assert out["3"][0] == fail and "(drift past the limits; not retried)" in out["3"][1]
    assert out["1"][0] == retry and "(infrastructure; retried while" in out["1"][1]
    for killed in ("130", "143", "signal"):
        assert out[killed][0] == retry and "(killed; retried while" in out[killed][1]
    assert out["signal"][1].split(" (")[0].endswith("exited -9")
    assert out["missing"][0] == fail and "zscore_executable" in out["missing"][1]
    assert out["interrupted"] == "zscore stopped"

    s = out["settings"]
    assert (s["train_input"], s["stats_dir"]) == ("s3://bucket/z/train", "s3://bucket/z/stats")
    assert (s["window_days"], s["drift_gate"], s["max_shift"]) == (7, False, 0.25)
    assert s["executable"] == "zscore" and s["partition_key"] == "day"  # the defaults
    p = out["plan"]
    assert p["diff"] is None
    assert p["fit"] == ["zscore", "fit", "s3://bucket/z/train", "--stats",
                        "s3://bucket/z/stats/2026-03-01.json",
                        "--scheduler", "tcp://10.0.0.1:8786",
                        "--filter", "day >= 2026-02-22", "--filter", "day < 2026-03-01"]
    assert p["transform_validation"][2:4] == ["s3://bucket/z/validation/day=2026-03-01",
                                              "s3://bucket/z/validation_z/day=2026-03-01"]
    # Every command line the DAG can build is one that zscore's command line accepts.
    from pipeline.cli import cli

    for plan in (p, out["default_plan"]):
        for step in ("fit", "diff", "transform_train", "transform_validation"):
            if plan[step] is not None:
                cli.commands[plan[step][1]].make_context(plan[step][1], plan[step][2:])
    assert "--workers" in out["default_plan"]["transform_train"]
    assert out["default_plan"]["diff"][-4:] == ["--max-shift", "0.5", "--max-ratio", "1.5"]
    assert out["bad_variable"] == [fail, "Variable zscore_window_days is 'a week', expected "
                                   "integer: fit on this many days before the logical date"]
