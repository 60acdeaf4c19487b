"""Real Apache Airflow installations for the DAG tests, one virtual environment per version.

Airflow never shares the project's ``.venv``: the DAGs run zscore as a command and import
nothing of it. Each version gets ``.airflow-<version>-venv/`` (git-ignored), installed on
first use with the pins of ``deploy/airflow/constraints-<version>.txt`` and reused while its
stamp matches them; a failed install fails the tests (never skips). Every Airflow process
gets its own AIRFLOW_HOME (SQLite), no example DAGs, and none of the caller's AIRFLOW_*,
DASK_*, ZSCORE_* or KUBECONFIG variables.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "deploy" / "airflow"
DAG_FILES = ("zscore_airflow.py", "zscore_patterns.py", "zscore_dags.py", "zscore_k8s.py")
PROVIDER = "apache-airflow-providers-cncf-kubernetes"  # KubernetesPodOperator, zscore_k8s.py
# version -> the pinned Airflow; both are tested, 2.10 for managed services still on 2.x.
VERSIONS = {"2.10": "apache-airflow==2.10.5", "3.3": "apache-airflow==3.3.2"}


def run(cmd: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd[:4])} ... took over {timeout} s")


def venv(version: str) -> Path:
    """``.airflow-<version>-venv`` with the pinned Airflow, (re)built unless its stamp matches."""
    path = ROOT / f".airflow-{version}-venv"
    constraints = DAGS / f"constraints-{version}.txt"
    stamp = path / ".installed-stamp"
    want = (f"{VERSIONS[version]} {PROVIDER} "
            f"{hashlib.sha256(constraints.read_bytes()).hexdigest()} "
            f"python {platform.python_version()}\n")
    python = path / "bin" / "python"
    # python is a symlink to the base interpreter, which may have gone since.
    if (stamp.is_file() and stamp.read_text() == want and python.resolve().is_file()
            and (path / "bin" / "airflow").is_file()):
        return path
    shutil.rmtree(path, ignore_errors=True)
    steps = [[sys.executable, "-m", "venv", str(path)],
             [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "-c", str(constraints), VERSIONS[version], PROVIDER]]
    for cmd in steps:
        proc = run(cmd, timeout=900)
        if proc.returncode:
            pytest.fail(f"cannot install {VERSIONS[version]} into {path}: {' '.join(cmd[2:5])} "
                        f"exited {proc.returncode}: {' '.join(proc.stderr.split())[-800:]}")
    stamp.write_text(want)  # last: an interrupted install is redone next time
    return path


class Airflow:
    """An isolated Airflow installation: its own AIRFLOW_HOME, DAGs folder and variables."""

    def __init__(self, version: str, home: Path, variables: dict[str, str],
                 env: dict[str, str] | None = None):
        self.version, self.venv, self.home = version, venv(version), home
        self.dags = home / "dags"
        self.dags.mkdir(parents=True)
        for name in DAG_FILES:
            shutil.copy(DAGS / name, self.dags)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AIRFLOW", "DASK_", "ZSCORE_", "KUBECONFIG"))}
        self.env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            **{f"AIRFLOW_VAR_ZSCORE_{k.upper()}": v for k, v in variables.items()},
            **(env or {}),
        })

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = run([str(self.venv / "bin" / "airflow"), *args], timeout=300, env=self.env,
                   cwd=self.home)
        if ok:
            assert proc.returncode == 0, f"airflow {' '.join(args)}: {proc.stdout[-2000:]}" \
                                         f"{proc.stderr[-2000:]}"
        return proc

    def migrate(self) -> None:
        self.cli("db", "migrate")
        # Airflow 3's dag.test() wants the DAGs serialized in the metadata database; in
        # Airflow 2 this registers their Datasets, without which no event is recorded.
        self.cli("dags", "reserialize")

    def python(self, code: str, *args: str, log: Path, timeout: float = 900) -> None:
        with log.open("w") as out:
            try:
                proc = subprocess.run([str(self.venv / "bin" / "python"), "-c", code, *args],
                                      stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                      cwd=self.home, timeout=timeout)
            except subprocess.TimeoutExpired:
                pytest.fail(f"over {timeout} s: {log.read_text()[-4000:]}")
        assert proc.returncode == 0, log.read_text()[-4000:]
