"""Against a real cluster of processes: ``dask scheduler`` + two ``dask worker`` processes.

Faults are provoked for real: SIGKILL of a worker process found by pid (as the
scheduler reports it), SIGKILL of the scheduler, an input that kills its worker,
a scheduler without workers, a port where nothing listens, a TCP server that
never answers and an HTTP server.  The embedded cluster's sockets are read from
``ss`` while a real run is paused in its transform pass.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import data_files
from procs import (
    BIN,
    dask_cluster,
    descendants,
    listeners,
    paused,
    run_zscore,
    start_zscore,
    wait_for,
)

from pipeline.cli import main


@pytest.fixture(scope="module")
def big(datasets):
    return datasets.sample("big", rows=2_000_000, days=5, files_per_day=8)


@pytest.fixture(scope="module")
def clean_output(big, tmp_path_factory):
    """The reference: a clean run on the embedded cluster."""
    out = tmp_path_factory.mktemp("clean") / "out"
    assert main(["run", str(big), str(out), "--exclude", "id,label", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with dask_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def test_external_cluster_gives_byte_identical_output(big, clean_output, cluster, tmp_path):
    r = run_zscore("run", big, tmp_path / "out", "--exclude", "id,label", "--scheduler",
                   cluster.address)
    assert r.returncode == 0, r.stderr
    assert f"scheduler {cluster.address}" in r.stderr
    assert data_files(tmp_path / "out") == data_files(clean_output)
    assert (tmp_path / "out" / "_stats.json").read_text().split('"features"')[1] == \
        (clean_output / "_stats.json").read_text().split('"features"')[1]


def test_scheduler_address_from_the_environment(big, clean_output, cluster, tmp_path):
    r = run_zscore("run", big, tmp_path / "out", "--exclude", "id,label",
                   env={"DASK_SCHEDULER_ADDRESS": cluster.address})
    assert r.returncode == 0, r.stderr
    assert f"scheduler {cluster.address}" in r.stderr


def _staged_parquet(tmp_path) -> int:
    return sum(1 for d in tmp_path.iterdir() if d.name.startswith(".out.zscore-staging")
               for _ in d.rglob("*.parquet"))


@pytest.mark.parametrize("phase", ["fit", "transform"])
def test_worker_killed_mid_run(big, clean_output, cluster, tmp_path, phase):
    victim = cluster.worker_pids()[0]
    run = start_zscore("run", big, tmp_path / "out", "--exclude", "id,label", "--scheduler",
                       cluster.address)
    if phase == "fit":
        wait_for(lambda: run.saw("features ("), 60, "the fit to start")
        assert _staged_parquet(tmp_path) == 0  # still fitting
    else:
        wait_for(lambda: _staged_parquet(tmp_path) >= 2, 60, "the transform to start")
    assert run.proc.poll() is None  # the kill lands mid-run
    os.kill(victim, signal.SIGKILL)
    code, _, err = run.wait()
    assert code == 0, err
    assert victim not in cluster.worker_pids()  # the nanny replaced it
    assert data_files(tmp_path / "out") == data_files(clean_output)


def test_poison_input_is_named(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):  # innocent files that share the dying workers' queues
        pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]}),
                       src / f"ok{i}.parquet")
    # 300 MB of one string that compresses to a few kB: decoding it kills a 250 MB worker.
    bomb = pa.table({"x": [1.0, 2.0], "s": ["a" * (300 << 20), "b"]})
    pq.write_table(bomb, src / "bomb.parquet", compression="zstd")
    del bomb
    with dask_cluster(tmp_path, memory_limit="250MB") as c:
        t0 = time.monotonic()
        r = run_zscore("run", src, tmp_path / "out", "--scheduler", c.address, timeout=180)
        elapsed = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines()[-1] == (
        "zscore: error: the task reading bomb.parquet killed its worker repeatedly (crash or "
        "out of memory on that input); check the file or give workers more memory with "
        "--memory-limit")
    assert elapsed < 120
    assert not (tmp_path / "out").exists()


def test_scheduler_killed(big, clean_output, tmp_path):
    with dask_cluster(tmp_path) as c:
        run = start_zscore("run", big, tmp_path / "out", "--exclude", "id,label",
                           "--scheduler", c.address)
        wait_for(lambda: run.saw("features ("), 60, "the fit to start")
        c.scheduler.kill()
        t0 = time.monotonic()
        code, _, err = run.wait(timeout=90)
        assert time.monotonic() - t0 < 60
    assert code == 1
    assert err.splitlines()[-1] == (
        f"zscore: error: lost the connection to the Dask scheduler {c.address}; nothing was "
        "published; rerun when the cluster is back")
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []
    (tmp_path / "again").mkdir()
    with dask_cluster(tmp_path / "again") as c2:
        r = run_zscore("run", big, tmp_path / "out", "--exclude", "id,label", "--scheduler",
                       c2.address)
    assert r.returncode == 0, r.stderr
    assert data_files(tmp_path / "out") == data_files(clean_output)


def test_batches_follow_the_work_and_stay_bounded():
    from pipeline.cluster import MAX_TASKS, plan_batches

    def covers(batches, n):  # contiguous, in order, nothing empty, nothing left out
        flat = [i for lo, hi in batches for i in range(lo, hi)]
        return flat == list(range(n)) and all(hi > lo for lo, hi in batches)

    mb = 1 << 20
    big = plan_batches([50 * mb] * 40, nthreads=2)  # each file is worth a task of its own
    assert covers(big, 40) and len(big) == 40
    small = plan_batches([30_000] * 1000, nthreads=2)  # 30 MB in all: not 1000 tasks ...
    sizes = [hi - lo for lo, hi in small]
    assert covers(small, 1000) and len(small) == 8 * 2  # ... but 8 per thread, for balance
    assert max(sizes) - min(sizes) <= 1  # equal weights, equal shares
    many = plan_batches(None, nthreads=100, n=100_000)
    assert covers(many, 100_000) and len(many) == MAX_TASKS
    weights = [1] * 50 + [100] * 10  # cuts follow the weights, not the count
    cut = plan_batches(weights, nthreads=1)
    sums = [sum(weights[lo:hi]) for lo, hi in cut]
    assert covers(cut, 60) and len(cut) == 8 and max(sums) <= 2 * min(sums)


# ----------------------------------------------------------------- loopback only
@pytest.mark.parametrize("mode", ["--threads", "--processes"])
def test_embedded_cluster_listens_on_loopback_only(datasets, tmp_path, mode):
    """Every socket the run listens on, its workers' included, is on 127.0.0.1 or ::1."""
    src = datasets.sample()
    run = start_zscore("run", src, tmp_path / "out", mode, "--workers", 2,
                       env={"ZSCORE_TEST_PAUSE": "transform",
                            "ZSCORE_TEST_RESUME": str(tmp_path / "resume")})
    paused(run, "transform")  # the cluster is up and working
    pids = [run.proc.pid, *descendants(run.proc.pid)]
    found, in_workers = listeners(pids), listeners(pids[1:])
    (tmp_path / "resume").touch()
    code, _, err = run.wait()
    assert code == 0, err
    # Threads: the dashboard and each worker's HTTP server (/health, /metrics; the scheduler
    # and workers talk in-process).  Processes: also the comm ports of the scheduler, the
    # nannies and the workers.
    assert len(found) >= (3 if mode == "--threads" else 8), found
    assert [a for a in found if not a.startswith(("127.0.0.1:", "[::1]:"))] == [], found
    if mode == "--processes":
        assert len(in_workers) >= 4, in_workers  # the worker processes' own sockets too


# --------------------------------------------------------- schedulers that fail
def silent_server(answer: bytes | None):
    """A TCP server on 127.0.0.1 that accepts and then says nothing (or ``answer``)."""
    server = socket.create_server(("127.0.0.1", 0))
    conns = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            if answer is not None:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return server, conns


FAST = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"}
NO_WORKERS = {"DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT": "3s"}


@pytest.mark.parametrize("answer, message", [
    (None, "tcp://127.0.0.1:{port} accepted the connection but did not answer as a Dask "
           "scheduler within 3 s; check the address and port"),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4,
     "tcp://127.0.0.1:{port} answered, but not as a Dask scheduler ({kind}); check the "
     "address and port"),
], ids=["silent", "http"])
def test_a_server_that_is_not_a_scheduler_fails_within_the_timeout(datasets, tmp_path, answer,
                                                                   message):
    server, _ = silent_server(answer)
    port = server.getsockname()[1]
    try:
        t0 = time.monotonic()
        r = run_zscore("run", datasets.sample(), tmp_path / "out", "--scheduler",
                       f"tcp://127.0.0.1:{port}", env=FAST, timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    [line] = [x for x in r.stderr.splitlines() if "error" in x.lower()]
    kind = line.rsplit("(", 1)[-1].split(")")[0]
    assert line == "zscore: error: " + message.format(port=port, kind=kind)
    assert elapsed < 20
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler_fails_within_the_timeout(datasets, tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()  # nothing listens there now: connections are refused
    t0 = time.monotonic()
    r = run_zscore("run", datasets.sample(), tmp_path / "out", env={
        **FAST, "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{port}"}, timeout=60)
    assert r.returncode == 1 and time.monotonic() - t0 < 20
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    assert r.stderr.splitlines()[-1] == (
        f"zscore: error: cannot connect to the Dask scheduler at tcp://127.0.0.1:{port}: Timed "
        f"out trying to connect to tcp://127.0.0.1:{port} after 3 s; check the address and "
        "that the scheduler is running")


def test_scheduler_without_workers_fails_within_the_timeout(datasets, tmp_path):
    sched_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", sched_file],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sched_file.exists() and sched_file.stat().st_size, 30, "scheduler")
        address = json.loads(sched_file.read_text())["address"]
        t0 = time.monotonic()
        r = run_zscore("run", datasets.sample(), tmp_path / "out", "--scheduler", address,
                       env=NO_WORKERS, timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)
    assert r.returncode == 1 and elapsed < 20
    assert r.stderr.splitlines()[-1] == (
        f"zscore: error: the Dask scheduler {address} has had no workers for 3 s; nothing was "
        "published; rerun when it has workers (distributed.scheduler.no-workers-timeout sets "
        "how long to wait)")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_all_workers_lost_mid_run_fails_within_the_timeout(big, tmp_path):
    """Dask waits for ever for new workers; zscore gives up after no-workers-timeout."""
    with dask_cluster(tmp_path) as c:
        run = start_zscore("run", big, tmp_path / "out", "--scheduler", c.address,
                           env=NO_WORKERS)
        wait_for(lambda: run.saw("features ("), 60, "the fit to start")
        for worker in c.workers:  # each `dask worker` (nanny) and the process it runs tasks in
            for child in descendants(worker.pid):
                os.kill(child, signal.SIGKILL)
            worker.kill()
        t0 = time.monotonic()
        code, _, err = run.wait(timeout=90)
        assert time.monotonic() - t0 < 30
        assert c.scheduler.poll() is None  # the scheduler itself is fine
    assert code == 1, err
    assert err.splitlines()[-1] == (
        f"zscore: error: the Dask scheduler {c.address} has had no workers for 3 s; nothing "
        "was published; rerun when it has workers (distributed.scheduler.no-workers-timeout "
        "sets how long to wait)")
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []


@pytest.mark.parametrize("processes", [False, True])
def test_embedded_workers_run_no_statistical_profiler(processes):
    """Dask's profiler samples the task threads every 10 ms holding the GIL; the embedded
    cluster's workers, threads or processes, run without it, and the caller's Dask config
    is as it was."""
    import dask
    import distributed  # noqa: F401  (loads Dask's distributed config)

    from pipeline.cluster import connect

    assert dask.config.get("distributed.worker.profile.enabled") is True  # Dask's default
    with connect(workers=1, processes=processes) as session:
        running = session.client.run(
            lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    assert list(running.values()) == [False]
    assert dask.config.get("distributed.worker.profile.enabled") is True
