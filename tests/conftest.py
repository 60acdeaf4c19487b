"""The shared fixtures: a session-scoped factory of small Parquet datasets, and one cluster.

``cluster`` is a real threads-only ``LocalCluster`` (two workers of one thread) started once
per session; tests that do not need a cluster of their own (a kill, a worker count, a
shutdown) take it and pass ``client=cluster``, instead of starting one each (about 1 s).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.sample import make_dataset

# A suite started in the background by a shell without job control (`nohup make test &`, some
# CI runners) inherits SIGINT ignored, and every process it starts would too: zscore, like any
# well-behaved program, then keeps ignoring Ctrl-C, and the tests that press it would wait for
# their timeouts.  A terminal user's zscore has SIGINT at its default; so do the tests' children
# (a handler, unlike "ignored", is not inherited across exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class Datasets:
    """Writes each named dataset once per session; tests that modify one take a copy."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, name: str, files: Mapping[str, pa.Table | pd.DataFrame],
              **write_kwargs) -> Path:
        """``files`` maps relative paths (``day=1/part-0.parquet``) to tables."""
        path = self.root / name
        if not path.exists():
            for rel, table in files.items():
                if isinstance(table, pd.DataFrame):
                    table = pa.Table.from_pandas(table, preserve_index=False)
                dest = path / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, dest, **write_kwargs)
        return path

    def sample(self, name: str = "sample", **kwargs) -> Path:
        """The demo dataset (pipeline.sample), small by default."""
        path = self.root / name
        if not path.exists():
            make_dataset(path, **{"rows": 24_000, "days": 3, "files_per_day": 2, **kwargs})
        return path

    def copy(self, src: Path, dest: Path) -> Path:
        shutil.copytree(src, dest)
        return dest


@pytest.fixture(scope="session")
def cluster():
    """A real LocalCluster shared by the session; the yielded value is its Client."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as lc, Client(lc, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="session")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Datasets:
    return Datasets(tmp_path_factory.mktemp("datasets"))


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative path -> bytes), hidden ones included."""
    out = {}
    for dirpath, _, names in os.walk(path):
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(path))] = p.read_bytes()
    return out


def data_files(path: Path) -> dict[str, bytes]:
    """The data files of an output (what must be byte-identical between runs)."""
    return {k: v for k, v in snapshot(path).items() if not k.startswith("_")}
