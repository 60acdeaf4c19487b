"""``zscore run/transform --mlflow`` against a real local MLflow tracking store (SQLite).

The command runs as a process, as a user runs it; what it logged is read back with
MLflow's own client and compared with the files of the published output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

ZSCORE = Path(sys.executable).parent / "zscore"

pytestmark = pytest.mark.timeout(600)


def zscore(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ZSCORE), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mlflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DASK_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    proc = zscore("sample", str(root / "train"), "--rows", "4000", "--days", "2",
                  "--files-per-day", "2", env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "env": env}


def _client(store: dict[str, Any]) -> Any:
    os.environ["MLFLOW_TRACKING_URI"] = store["env"]["MLFLOW_TRACKING_URI"]
    try:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=store["env"]["MLFLOW_TRACKING_URI"])
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]


def _logged(client: Any, run_id: str, prefix: str, dest: Path) -> dict[str, bytes]:
    local = Path(client.download_artifacts(run_id, prefix, str(dest)))
    return {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}


def _published(out: Path) -> dict[str, bytes]:
    files = {n: (out / n).read_bytes() for n in ("_stats.json", "_SUCCESS")}
    files.update({str(p.relative_to(out)): p.read_bytes()
                  for p in (out / "_report").rglob("*") if p.is_file()})
    return files


def test_run_logs_statistics_manifest_and_report_to_a_new_run(store, tmp_path) -> None:
    root, env = store["root"], store["env"]
    out = root / "train_z"
    proc = zscore("run", str(root / "train"), str(out), "--exclude", "id,label", "--mlflow",
                  env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    client = _client(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "zscore"
    logged = _logged(client, run_id, "zscore/train_z", tmp_path)
    published = _published(out)
    assert any(name.startswith("_report/") for name in published), "the run drew no report"
    assert logged == published
    rows = pq.ParquetDataset(root / "train").read().num_rows
    tags = run.data.tags
    assert tags["zscore.train_z.rows"] == str(rows)
    assert tags["zscore.train_z.output"] == str(out)
    assert tags["zscore.train_z.command"] == "run"


def test_transform_logs_into_an_existing_run_and_leaves_it_open(store, tmp_path) -> None:
    root, env = store["root"], store["env"]
    client = _client(store)
    # Its artifacts in the test's directory (the default is ./mlruns of this process).
    experiment = client.create_experiment("training",
                                          artifact_location=(root / "training").as_uri())
    run_id = client.create_run(experiment).info.run_id
    out = root / "day_z" / "day=2026-01-02"
    proc = zscore("transform", str(root / "train" / "day=2026-01-02"), str(out), "--stats",
                  str(root / "train_z" / "_stats.json"), "--mlflow-run-id", run_id,
                  env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"to run {run_id}")
    assert client.get_run(run_id).info.status == "RUNNING"  # the caller's run, not ended
    assert _logged(client, run_id, "zscore/day_2026-01-02", tmp_path) == _published(out)


def test_mlflow_without_a_store_is_refused_before_any_work(store) -> None:
    root = store["root"]
    env = {k: v for k, v in store["env"].items() if k != "MLFLOW_TRACKING_URI"}
    proc = zscore("run", str(root / "train"), str(root / "nowhere"), "--mlflow", env=env,
                  cwd=root)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "zscore: error: --mlflow needs a tracking store: set MLFLOW_TRACKING_URI (for example "
        "http://mlflow.internal:5000 or sqlite:///mlflow.db), or name a run with "
        "--mlflow-run-id")
    assert not (root / "nowhere").exists()


def test_an_unknown_run_is_refused_before_any_work(store) -> None:
    root = store["root"]
    proc = zscore("run", str(root / "train"), str(root / "nowhere"), "--mlflow-run-id",
                  "0123456789abcdef", env=store["env"], cwd=root)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("zscore: error: MLflow run '0123456789abcdef' cannot be read from "
                           "sqlite:///"), last
    assert last.endswith("give the id of an existing run")
    assert not (root / "nowhere").exists()
