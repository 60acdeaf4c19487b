"""deploy/airflow's DAGs in real Apache Airflow, 2.10.5 and 3.3.2 (see airflow_env.py).

Settings reach the DAGs as Airflow does it: Variables through ``AIRFLOW_VAR_ZSCORE_*``,
params through the run's conf; the sensor waits 12 s at most, looking every second. In
each version, one process runs, in order (``dag.test``, on the embedded local cluster):

1. ``zscore_training_set`` for 2026-01-04, window 3 days: the set's data, each day
   normalized with the one fit of the window (checked against exact sums of the input),
   and ``training_set.json`` (artifact digest, days, rows, version) written last; an
   Asset/Dataset event names it.
2. The same set again: refused (it is published), no retry.
3. ``zscore_daily`` 2026-01-04 with that set: the day passes the gate and is normalized
   with the training artifact, not its own fit.
4. 2026-01-05, whose input marker appears 3 s after the run starts: waited for.
5. Drift (``max_shift`` 0): exit 3 fails the gate, no retry, nothing transformed.
6. 2026-01-06, never there: the sensor times out; the task fails, no retry.
7. A corrupt input file: exit 2, no retry.  8. An unwritable stats_dir: exit 1, retried.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow_env import VERSIONS, Airflow, run

ZSCORE = Path(sys.executable).parent / "zscore"  # the project's, beside this interpreter
WAIT_TIMEOUT = 12
FEATURE = "f_normal"

# The install (a minute or two per version) runs inside the first test's timeout.
pytestmark = pytest.mark.timeout(1200)

# Runs the DAGs once per entry of runs, in this process, and records after each run the
# states and tries of its tasks and the Asset (3.x) / Dataset (2.x) events it emitted.
DRIVER = r"""
import json, sys, threading
from datetime import datetime, timezone
from pathlib import Path

import airflow
try:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent as Event
except ImportError:  # Airflow 2
    from airflow.models.dagbag import DagBag
    from airflow.models.dataset import DatasetEvent as Event
    # dag_run_note refers to FAB's ab_user table; `airflow dags test` loads it, a script must.
    import airflow.providers.fab.auth_manager.models  # noqa: F401
from airflow.utils.session import create_session

spec = json.loads(Path(sys.argv[1]).read_text())
sys.path.insert(0, spec["dags"])  # as Airflow's own processes do, for the shared modules
results = []
for run in spec["runs"]:
    # Parsed again for each run, as a worker would: dag.test() keeps a run's conf in the
    # DAG object's params, where the next run would inherit it.
    bag = DagBag(dag_folder=spec["dags"])
    assert not bag.import_errors, bag.import_errors
    if run.get("late"):  # the input's marker appears while the sensor waits
        threading.Timer(3.0, Path(run["late"]).touch).start()
    day = datetime.fromisoformat(run["date"]).replace(tzinfo=timezone.utc)
    date_arg = "execution_date" if airflow.__version__.startswith("2.") else "logical_date"
    started = datetime.now(timezone.utc)
    dr = bag.get_dag(run["dag"]).test(**{date_arg: day}, run_conf=run["conf"])
    with create_session() as session:
        tasks = {ti.task_id: [ti.state and str(ti.state), ti.try_number]
                 for ti in dr.get_task_instances(session=session)}
        # Airflow 2 gives reruns of a date the same run_id: the time tells this run's own.
        events = [[e.uri, e.extra] for e in session.query(Event).filter(
            Event.source_dag_id == run["dag"], Event.source_run_id == dr.run_id,
            Event.timestamp >= started)]
    results.append({"state": str(dr.state), "tasks": tasks, "events": events})
    Path(spec["result"]).write_text(json.dumps(results))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zscore-root")
    for name, rows, files, seed in [("train", 20_000, 2, 1), ("validation", 5_000, 1, 2)]:
        proc = run([str(ZSCORE), "sample", str(root / name), "--rows", str(rows), "--days",
                    "5", "--files-per-day", str(files), "--seed", str(seed)], timeout=120)
        assert proc.returncode == 0, proc.stderr
        for day in (root / name).iterdir():
            (day / "_SUCCESS").touch()  # what the producer of the input writes when done
    (root / "validation" / "day=2026-01-05" / "_SUCCESS").unlink()  # arrives late (run 4)
    bad = root / "bad" / "day=2026-01-04"
    bad.mkdir(parents=True)
    (bad / "part-0.parquet").write_bytes(b"not parquet at all")
    (bad / "_SUCCESS").touch()
    return root


SET = "training_sets/ts"
# (DAG, logical date, the run's conf, a marker that appears late)
RUNS: list[tuple[str, str, dict[str, Any], str]] = [
    ("zscore_training_set", "2026-01-04", {"window_days": 3, "name": "ts"}, ""),
    ("zscore_training_set", "2026-01-04", {"window_days": 3, "name": "ts"}, ""),
    ("zscore_daily", "2026-01-04", {}, ""),
    ("zscore_daily", "2026-01-05", {}, "validation/day=2026-01-05/_SUCCESS"),
    ("zscore_daily", "2026-01-03", {"max_shift": 0}, ""),
    ("zscore_daily", "2026-01-06", {}, ""),
    ("zscore_daily", "2026-01-04", {"input": "{data}/bad"}, ""),
    # exit 1: /sys refuses new files even to root (a directory under a file would be exit 2)
    ("zscore_daily", "2026-01-03", {"stats_dir": "/sys/zscore-stats"}, ""),
]


@pytest.fixture(scope="module", params=sorted(VERSIONS))
def airflow(request: pytest.FixtureRequest, data: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Airflow:
    af = Airflow(request.param, tmp_path_factory.mktemp(f"airflow-{request.param}"), {
        "root": str(data), "executable": str(ZSCORE),
        # The sample's epoch-seconds column moves with the day by design; a deployment
        # leaves timestamps out of the features too.
        "exclude": "id,label,f_epoch_seconds",
        "training_set": str(data / SET / "training_set.json"),
    }, env={"ZSCORE_AIRFLOW_RETRIES": "1", "ZSCORE_AIRFLOW_RETRY_DELAY": "0",
            "ZSCORE_AIRFLOW_POKE_INTERVAL": "1", "ZSCORE_AIRFLOW_WAIT_TIMEOUT": str(WAIT_TIMEOUT),
            "KUBECONFIG": "/nonexistent"})
    af.migrate()
    return af


@pytest.fixture(scope="module")
def runs(airflow: Airflow, data: Path) -> tuple[list[dict[str, Any]], str, Path]:
    """The results of RUNS, in order, the log of the process that ran them, and the data."""
    # Each version starts from the same inputs: outputs of the other version's runs go.
    for name in ("training_sets", "validation_z", "daily_stats"):
        for p in sorted((data / name).rglob("*"), reverse=True) if (data / name).exists() else []:
            p.unlink() if p.is_file() else p.rmdir()
    late = data / RUNS[3][3]
    late.unlink(missing_ok=True)
    spec, result = airflow.home / "runs.json", airflow.home / "result.json"
    spec.write_text(json.dumps({"dags": str(airflow.dags), "result": str(result), "runs": [
        {"dag": dag, "date": d, "late": str(data / marker) if marker else "",
         "conf": {k: v.format(data=data) if isinstance(v, str) else v for k, v in conf.items()}}
        for dag, d, conf, marker in RUNS]}))
    log = airflow.home / "runs.log"
    airflow.python(DRIVER, str(spec), log=log)
    out = json.loads(result.read_text())
    assert len(out) == len(RUNS)
    return out, log.read_text(), data


def _tasks(run: dict[str, Any]) -> dict[str, str]:
    return {task: state for task, (state, _) in run["tasks"].items()}


def _exact(files: list[Path]) -> tuple[float, float]:
    """Mean and population std of FEATURE over ``files``, from exact sums (math.fsum)."""
    values = [v for f in files for v in pq.read_table(f, columns=[FEATURE]).column(0)
              .to_pylist() if v is not None and not math.isnan(v)]
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


def _check_normalized(src: Path, out: Path, mean: float, std: float) -> None:
    files = sorted(src.glob("*.parquet"))
    assert sorted(p.name for p in out.glob("*.parquet")) == [p.name for p in files]
    for f in files:
        x = pq.read_table(f, columns=[FEATURE]).column(0).to_pylist()
        z = pq.read_table(out / f.name, columns=[FEATURE]).column(0).to_pylist()
        for a, b in zip(x, z, strict=True):
            if a is None or math.isnan(a):
                continue
            ref = (a - mean) / std
            assert abs(b - ref) <= 1e-12 * max(1.0, abs(ref)), f"{out / f.name}: {b} != {ref}"


# ------------------------------------------------------------------ tests
def test_the_dag_folder_has_no_import_errors(airflow: Airflow) -> None:
    proc = airflow.cli("dags", "list-import-errors", "-o", "json", ok=False)
    # Airflow logs its warnings on stdout too; the JSON is the last line.
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[-1]) == [], \
        proc.stdout[-3000:]
    listed = json.loads(airflow.cli("dags", "list", "-o", "json").stdout.splitlines()[-1])
    assert sorted((d["dag_id"], Path(d["fileloc"]).name) for d in listed) == [
        ("zscore_daily", "zscore_dags.py"), ("zscore_daily_pods", "zscore_k8s.py"),
        ("zscore_training_set", "zscore_dags.py"),
        ("zscore_training_set_daskjob", "zscore_k8s.py")]


def test_a_training_set_is_one_fit_and_its_manifest_comes_last(runs) -> None:
    results, _, data = runs
    first = results[0]
    assert first["state"] == "success" and set(_tasks(first).values()) == {"success"}
    root = data / SET
    doc = json.loads((root / "training_set.json").read_text())
    assert doc["format"] == "zscore-training-set/1"
    assert doc["artifact"] == {"path": str(root / "stats.json"), "sha256": hashlib.sha256(
        (root / "stats.json").read_bytes()).hexdigest()}
    window = [f"2026-01-0{d}" for d in (1, 2, 3)]
    days = [{"day": d, "rows": pq.ParquetDataset(data / "train" / f"day={d}").read().num_rows,
             "files": 2} for d in window]
    assert doc["days"] == days and doc["days_without_data"] == []
    assert doc["rows"] == sum(d["rows"] for d in days)
    version = run([str(ZSCORE), "--version"], timeout=60).stdout
    assert doc["zscore_version"] in version
    assert not (root / "data" / "day=2026-01-04").exists()  # the window ends before ds
    # Published last: after the data's own manifest.
    assert (root / "training_set.json").stat().st_mtime_ns >= \
        (root / "data" / "_SUCCESS").stat().st_mtime_ns
    # Every day of the set normalized with the one fit of the whole window.
    mean, std = _exact([f for d in window
                        for f in (data / "train" / f"day={d}").glob("*.parquet")])
    for d in window:
        _check_normalized(data / "train" / f"day={d}", root / "data" / f"day={d}", mean, std)
    assert first["events"] == [["zscore://zscore_training_set/training_set", {
        "manifest": str(root / "training_set.json"), "artifact_sha256": doc["artifact"]["sha256"]}]]


def test_a_published_training_set_is_not_rebuilt(runs) -> None:
    results, log, _ = runs
    assert results[1]["state"] == "failed" and results[1]["tasks"]["plan"] == ["failed", 1]
    assert "training_set.json exists: that training set is published" in log


def test_a_day_is_normalized_with_the_production_artifact(runs) -> None:
    results, log, data = runs
    run3 = results[2]
    assert run3["state"] == "success" and set(_tasks(run3).values()) == {"success"}
    assert "0 of 7 features drifted" in log
    out = data / "validation_z" / "day=2026-01-04"
    artifact = data / SET / "stats.json"
    success = json.loads((out / "_SUCCESS").read_text())
    assert success["statistics_sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    window = [f for d in (1, 2, 3)
              for f in (data / "train" / f"day=2026-01-0{d}").glob("*.parquet")]
    _check_normalized(data / "validation" / "day=2026-01-04", out, *_exact(window))
    # The gate compared the day's own statistics, fitted on that day alone.
    own = json.loads((data / "daily_stats" / "2026-01-04.json").read_text())
    assert own["input"]["rows"] == pq.ParquetDataset(
        data / "validation" / "day=2026-01-04").read().num_rows
    assert run3["events"] == [["zscore://zscore_daily/output", {
        "path": str(out), "rows": success["rows"],
        "training_set": str(data / SET / "training_set.json")}]]


def test_late_input_is_waited_for(runs) -> None:
    results, log, data = runs
    assert results[3]["state"] == "success", results[3]
    assert f"waiting for {data}/validation/day=2026-01-05/_SUCCESS" in log
    assert (data / "validation_z" / "day=2026-01-05" / "_SUCCESS").is_file()


def test_drift_fails_the_gate_without_a_retry(runs) -> None:
    results, log, data = runs
    run5 = results[4]
    assert run5["state"] == "failed"
    assert run5["tasks"]["drift_gate"] == ["failed", 1]  # retries=1, yet one try
    assert _tasks(run5)["transform"] == "upstream_failed"
    assert "zscore diff exited 3 (drift past the limits; not retried)" in log
    assert not (data / "validation_z" / "day=2026-01-03").exists()


def test_input_that_never_arrives_times_out_without_a_retry(runs) -> None:
    results, log, _ = runs
    run6 = results[5]
    assert run6["state"] == "failed"
    assert run6["tasks"]["wait_for_input"][0] == "failed"
    assert _tasks(run6)["fit_day"] == "upstream_failed"
    assert re.search(r"Sensor has timed out; run duration of [0-9.]+ seconds exceeds the "
                     rf"specified timeout of {WAIT_TIMEOUT}", log)
    assert log.count("AirflowSensorTimeout") >= 1


def test_bad_input_fails_without_a_retry(runs) -> None:
    results, log, _ = runs
    assert results[6]["state"] == "failed"
    assert results[6]["tasks"]["fit_day"] == ["failed", 1]
    # zscore names the file relative to its input, the day's partition.
    assert ("zscore fit exited 2 (bad input or data; not retried): zscore: error: "
            "part-0.parquet is not a readable Parquet file") in log


def test_an_infrastructure_failure_is_retried(runs) -> None:
    results, log, _ = runs
    assert results[7]["state"] == "failed"
    assert results[7]["tasks"]["fit_day"] == ["failed", 2]  # the first try and its one retry
    assert "zscore fit exited 1 (infrastructure; retried while retries last)" in log
