"""What a task does besides its work: memory, in real ``dask worker`` processes, and
running out of it.

Dask's nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (distributed's
``distributed.nanny.pre-spawn-environ``), which makes every large ``malloc`` a fresh
mapping: had the kernels taken their arrays from numpy's allocator, every page of
every column transformed would be faulted in and zeroed anew, several times per page
written (3.7 faults per page of output with the code before this test).  They take them
from Arrow's pool (:func:`pipeline.columns.empty`), and zscore leaves that pool as
the worker had it: a pool the user chose is kept.
"""

from __future__ import annotations

import resource
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import data_files
from procs import dask_cluster, run_zscore, zscore_cmd

# Lambdas of built-ins: a function of this module would not unpickle on the workers.
_state = lambda: (  # noqa: E731
    __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_"),
    __import__("pyarrow").default_memory_pool().backend_name,
    __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_minflt)


def _run(data, out, address, report):
    r = run_zscore("run", data, out, "--exclude", "id,label", "-q",
                   "--report" if report else "--no-report", "--scheduler", address)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("env, pool, report, limit", [
    ({}, None, False, 2.5),  # Arrow's stock pool, as the worker started with it
    ({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}, "jemalloc", False, 2.5),  # the user's choice
    ({}, None, True, 1.7),  # the report's tallies too (the default run)
])
def test_worker_processes_reuse_memory_and_keep_their_pool(datasets, tmp_path, env, pool,
                                                           report, limit):
    import pyarrow as pa

    pool = pool or pa.default_memory_pool().backend_name  # this process: no one changed it
    # Row groups of 100,000 rows: each transformed column is 800 KB, far above glibc's
    # mmap threshold.
    data = datasets.sample("memory", rows=400_000, days=2, files_per_day=2)
    with dask_cluster(tmp_path, n_workers=1, env=env) as cluster:
        from distributed import Client

        with Client(cluster.address, timeout=30) as c:
            _run(data, tmp_path / "warm", cluster.address, report)  # imports, first allocations
            ((trim, before, f0),) = c.run(_state).values()
            _run(data, tmp_path / "out", cluster.address, report)
            ((_, after, f1),) = c.run(_state).values()
    assert trim == "65536"  # the nanny's environment, as on any Dask cluster
    assert before == after == pool
    pages = sum(f.stat().st_size for f in (tmp_path / "out").rglob("*.parquet")) / 4096
    # Measured: 1.3 with Arrow's stock pool (mimalloc), 1.8 with jemalloc; 3.7 with numpy's
    # own arrays (the code before this test), whichever pool.  With the report: 1.2, and
    # 2.3 when np.bincount was given int32 bucket indices (it widened them into a fresh
    # 256 KB array on every call).
    assert (f1 - f0) / pages < limit
    embedded = tmp_path / "embedded"
    assert run_zscore("run", data, embedded, "--exclude", "id,label", "-q",
                      "--no-report").returncode == 0
    assert data_files(tmp_path / "out") == data_files(embedded)


def test_running_out_of_memory_is_not_a_corrupt_file(tmp_path):
    """A read that runs out of memory (here: under an address-space limit) fails as the
    infrastructure's error, exit 1, naming the file and the remedy; not as a corrupt
    file (exit 2, "replace or remove it", as it did).  With the memory, the same
    command succeeds."""
    data = tmp_path / "wide"
    data.mkdir()
    column = pa.repeat(pa.scalar(1.5), 1_000_000)  # one value: 0.8 MB on disk, 1.6 GB read
    pq.write_table(pa.table({f"c{i:03d}": column for i in range(200)}), data / "part-0.parquet",
                   row_group_size=1_000_000)
    cmd = zscore_cmd("fit", data, "--stats", tmp_path / "stats.json", "-q")

    def limit() -> None:  # a zscore fit of a small file peaks at 1.9 GB of address space
        resource.setrlimit(resource.RLIMIT_AS, (2600 << 20, 2600 << 20))

    r = subprocess.run(cmd, preexec_fn=limit, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("zscore: error: out of memory while reading part-0.parquet ("), last
    assert last.endswith("): give the workers more memory, or run fewer of them at once "
                         "(--workers)"), last
    assert not (tmp_path / "stats.json").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
