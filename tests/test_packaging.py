"""The distribution: wheel and sdist built as a user's pip would, installed into a clean venv.

Distributed as ``dask-zscore`` (``zscore`` on the package index is an unrelated
project); the command stays ``zscore`` and the import ``pipeline``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[:3]} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` (sdist, then the wheel from the sdist) on a copy of the sources."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "pipeline", src / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "build", "--outdir", str(tmp / "dist"), str(src)], tmp)
    return tmp / "dist"


def test_wheel_and_sdist_are_dask_zscore(dist: Path):
    wheel = dist / f"dask_zscore-{VERSION}-py3-none-any.whl"
    sdist = dist / f"dask_zscore-{VERSION}.tar.gz"
    assert sorted(p.name for p in dist.iterdir()) == sorted([wheel.name, sdist.name])
    with zipfile.ZipFile(wheel) as z:
        info = f"dask_zscore-{VERSION}.dist-info"
        meta = z.read(f"{info}/METADATA").decode()
        assert "\nName: dask-zscore\n" in meta and "\nProvides-Extra: onnx\n" in meta
        assert "zscore = pipeline.__main__:main" in z.read(f"{info}/entry_points.txt").decode()
        names = set(z.namelist())
    assert {"pipeline/py.typed", "pipeline/estimator.py", "pipeline/exports.py"} <= names
    assert not any(n.startswith("tests/") for n in names)
    with tarfile.open(sdist) as t:
        members = set(t.getnames())
    assert f"dask_zscore-{VERSION}/pipeline/kernel.py" in members
    assert f"dask_zscore-{VERSION}/README.md" in members


def test_wheel_installs_into_a_clean_venv_and_runs(dist: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    wheel = str(dist / f"dask_zscore-{VERSION}-py3-none-any.whl")
    uv = Path(sys.executable).parent / "uv"  # make install puts it there: much faster
    installer = [str(uv), "pip", "install", "--quiet", "--python", str(python)] if uv.exists() \
        else [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    _run([*installer, "-c", str(ROOT / "constraints.txt"), wheel], tmp_path)
    zscore = str(venv / "bin" / "zscore")
    assert _run([zscore, "--version"], tmp_path).stdout == f"zscore, version {VERSION}\n"
    code = ("import importlib.metadata as m, pipeline; "
            "print(m.version('dask-zscore'), pipeline.__version__, pipeline.__file__)")
    version, reported, where = _run([str(python), "-c", code], tmp_path).stdout.split()
    assert version == reported == VERSION and where.startswith(str(venv))
    _run([zscore, "sample", "data", "--rows", "2000", "--days", "1", "--files-per-day", "2"],
         tmp_path)
    out = _run([zscore, "run", "data", "data_z", "--exclude", "id,label", "-q"], tmp_path)
    assert "run: 2,000 rows in 2 files, 8 features" in out.stdout
    success = json.loads((tmp_path / "data_z" / "_SUCCESS").read_text())
    assert success and (tmp_path / "data_z" / "_stats.json").exists()
    assert len(list((tmp_path / "data_z" / "day=2026-01-01").glob("*.parquet"))) == 2
