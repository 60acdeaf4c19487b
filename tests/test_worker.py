"""What a task does besides its work: the Arrow memory pool of worker processes.

Against real ``dask scheduler`` / ``dask worker`` processes: during zscore's tasks
Arrow allocates from jemalloc, and between them the worker's pool is the one it
had (a shared cluster's other users are left as they were); a pool the user
chose is kept.  Overlapping tasks in one process are checked with real threads.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import data_files
from procs import dask_cluster, run_zscore

pa = pytest.importorskip("pyarrow")
try:
    pa.jemalloc_memory_pool()
except NotImplementedError:  # pragma: no cover - a pyarrow built without jemalloc
    pytest.skip("this pyarrow has no jemalloc", allow_module_level=True)


# A lambda of built-ins: a function of this module would not unpickle on the workers.
_pools = lambda: (__import__("pyarrow").default_memory_pool().backend_name,  # noqa: E731
                  __import__("pyarrow").jemalloc_memory_pool().max_memory())


@pytest.mark.parametrize("env, default, jemalloc_used", [
    ({}, "mimalloc", True),  # Arrow's stock pool: jemalloc during zscore's tasks only
    ({"ARROW_DEFAULT_MEMORY_POOL": "system"}, "system", False),  # the user's choice is kept
])
def test_worker_processes_allocate_from_jemalloc_during_tasks_only(datasets, tmp_path, env,
                                                                  default, jemalloc_used):
    from distributed import Client

    data = datasets.sample("pool", rows=40_000, days=2, files_per_day=2)
    with dask_cluster(tmp_path, n_workers=1, env=env) as cluster:
        with Client(cluster.address, timeout=30) as c:
            (before,) = c.run(_pools).values()
        r = run_zscore("run", data, tmp_path / "out", "--exclude", "id,label", "-q",
                       "--no-report", "--scheduler", cluster.address)
        assert r.returncode == 0, r.stderr
        with Client(cluster.address, timeout=30) as c:
            (after,) = c.run(_pools).values()
    assert before == (default, 0)
    assert after[0] == default
    assert (after[1] > 0) is jemalloc_used
    embedded = tmp_path / "embedded"
    assert run_zscore("run", data, embedded, "--exclude", "id,label", "-q",
                      "--no-report").returncode == 0
    assert data_files(tmp_path / "out") == data_files(embedded)


@pytest.mark.fast
def test_overlapping_tasks_restore_the_pool_when_the_last_one_ends():
    # Two real threads in a fresh process (this one may have switched its pool already):
    # the second task starts while the first runs and ends after it.
    code = """
import threading, pyarrow as pa
from pipeline.worker import run_task
first_in, first_out = threading.Event(), threading.Event()
seen = {}
def first(_):
    seen['first'] = pa.default_memory_pool().backend_name
    first_in.set(); first_out.wait(30)
def second(_):
    first_in.wait(30); first_out.set()
    t.join(30)
    seen['second, after the first ended'] = pa.default_memory_pool().backend_name
t = threading.Thread(target=run_task, args=(first, None))
u = threading.Thread(target=run_task, args=(second, None))
t.start(); u.start(); u.join(30)
print(seen['first'], seen['second, after the first ended'], pa.default_memory_pool().backend_name)
"""
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout.split()
    assert out == ["jemalloc", "jemalloc", "mimalloc"]
