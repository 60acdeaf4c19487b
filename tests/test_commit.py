"""Publishing: never a partial output, whatever happens to the run.

Each fault is provoked for real on a real ``zscore`` process: SIGTERM/SIGINT,
SIGKILL, two concurrent runs, a full disk (a small tmpfs), a directory the run
may not write, a corrupt page in the middle of an input file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import data_files, snapshot
from procs import run_zscore, start_zscore, wait_for


@pytest.fixture(scope="module")
def medium(datasets):
    return datasets.sample("medium", rows=1_500_000, days=4, files_per_day=10)


@pytest.fixture(scope="module")
def reference(medium, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    r = run_zscore("run", medium, out)
    assert r.returncode == 0, r.stderr
    return out


def staging(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if ".zscore" in p.name)


def transform_started(tmp_path):
    return lambda: any(d.name.startswith(".out.zscore-staging") and any(d.rglob("*.parquet"))
                       for d in tmp_path.iterdir())


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"),
                                             (signal.SIGINT, 130, "SIGINT")])
def test_signal_stops_the_run_and_publishes_nothing(medium, tmp_path, sig, code, name):
    before = snapshot(medium)
    run = start_zscore("run", medium, tmp_path / "out")
    wait_for(transform_started(tmp_path), 60, "the transform to start")
    run.proc.send_signal(sig)
    got, _, err = run.wait()
    assert got == code
    assert err.splitlines()[-1] == f"zscore: error: stopped by {name}; nothing was published"
    assert not (tmp_path / "out").exists() and staging(tmp_path) == []
    assert snapshot(medium) == before


def test_killed_run_leaves_nothing_published_and_the_next_run_cleans_up(medium, reference,
                                                                        tmp_path):
    run = start_zscore("run", medium, tmp_path / "out")
    wait_for(transform_started(tmp_path), 60, "the transform to start")
    run.proc.kill()
    run.wait()
    assert not (tmp_path / "out").exists()
    left = staging(tmp_path)
    assert ".out.zscore.lock" in left and any("staging" in n for n in left)
    r = run_zscore("run", medium, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "breaking stale lock" in r.stderr and "left in" in r.stderr
    assert staging(tmp_path) == []
    assert data_files(tmp_path / "out") == data_files(reference)


def test_two_runs_at_once_exactly_one_publishes(medium, reference, tmp_path):
    first = start_zscore("run", medium, tmp_path / "out", "--workers", 1)  # slower: overlap
    wait_for(lambda: (tmp_path / ".out.zscore.lock").exists(), 60, "the lock")
    holder = json.loads((tmp_path / ".out.zscore.lock").read_text())
    second = run_zscore("run", medium, tmp_path / "out")
    assert second.returncode == 1
    assert second.stderr.splitlines()[-1] == (
        f"zscore: error: output is locked by {tmp_path / '.out.zscore.lock'}, held by run "
        f"{holder['run_id']} (pid {first.proc.pid} on {holder['host']}); another zscore is "
        "writing it: wait for it, or delete the lock if that run is dead")
    code, _, err = first.wait()
    assert code == 0, err
    assert data_files(tmp_path / "out") == data_files(reference)


def test_overwrite_readers_see_old_or_new_never_a_mix(medium, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    old = json.loads((out / "_SUCCESS").read_text())["run_id"]
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                manifest = json.loads((out / "_SUCCESS").read_text())
                names = {str(p.relative_to(out)) for p in out.rglob("*.parquet")}
                complete = names == {f["path"] for f in manifest["files"]}
                seen.append((manifest["run_id"], complete))
            except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
                seen.append(("absent", True))

    t = threading.Thread(target=reader)
    t.start()
    try:
        r = run_zscore("run", medium, out, "--overwrite", "--mode", "center")
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    new = json.loads((out / "_SUCCESS").read_text())["run_id"]
    assert all(complete for _, complete in seen), "a reader saw a partial output"
    assert {rid for rid, _ in seen} <= {old, new, "absent"}
    assert seen[0][0] == old and seen[-1][0] == new and len(seen) > 10
    assert staging(tmp_path) == []


def test_corrupt_page_in_the_middle_is_named(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    table = pa.table({"x": [float(i) for i in range(200_000)], "y": [1.0, 2.0] * 100_000})
    pq.write_table(table, src / "a.parquet")
    pq.write_table(table, src / "b.parquet", row_group_size=50_000)
    data = bytearray((src / "b.parquet").read_bytes())
    footer_len = int.from_bytes(data[-8:-4], "little")
    middle = (len(data) - footer_len) // 2
    data[middle:middle + 4096] = os.urandom(4096)
    (src / "b.parquet").write_bytes(bytes(data))
    r = run_zscore("run", src, tmp_path / "out")
    assert r.returncode == 2, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("zscore: error: cannot read b.parquet: ")
    assert last.endswith("the file is corrupt: replace or remove it")
    assert not (tmp_path / "out").exists() and staging(tmp_path) == []


def test_truncated_and_drifted_files_are_all_listed(tmp_path):
    src = tmp_path / "in"
    (src / "day=1").mkdir(parents=True)
    good = pa.table({"x": [1.0, 2.0], "s": ["a", "b"]})
    pq.write_table(good, src / "day=1" / "a.parquet")
    pq.write_table(pa.table({"x": ["1", "2"], "s": ["a", "b"]}), src / "day=1" / "b.parquet")
    raw = (src / "day=1" / "a.parquet").read_bytes()
    (src / "day=1" / "c.parquet").write_bytes(raw[:-20])
    r = run_zscore("run", src, tmp_path / "out")
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == (
        "zscore: error: 2 problem(s) in the input: day=1/c.parquet is not a readable Parquet "
        "file (Parquet magic bytes not found in footer. Either the file is corrupted or this "
        "is not a parquet file.); column 'x' is string in day=1/b.parquet but double in 1 "
        "other file(s); exclude it with --exclude x or fix the file")


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def test_disk_full_exits_1_naming_the_path(medium, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip("cannot mount a small tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        r = run_zscore("run", medium, disk / "out")
        assert r.returncode == 1, r.stderr
        last = r.stderr.splitlines()[-1]
        assert last.startswith(f"zscore: error: cannot write {disk}/.out.zscore-staging-")
        assert last.endswith(": No space left on device")
        assert os.listdir(disk) == []  # staging and lock removed, nothing published
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_permission_denied_exits_1_naming_the_path(medium, tmp_path):
    """EACCES for real, wherever the checkout lives (even under a 0700 directory).

    As root, the run keeps its identity (so it reaches the virtual environment and
    the input, which are root's, whatever the modes of their parents) but loses
    the capabilities that bypass permission checks; a directory owned by another
    user is then closed to it as to anyone.  Any other user gets a read-only
    directory of its own.
    """
    shared = tmp_path / "shared"
    shared.mkdir()
    zscore = [os.path.join(os.path.dirname(os.sys.executable), "zscore"), "run", str(medium),
              str(shared / "out")]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.fail("running as root needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        os.chown(shared, 65534, 65534)  # nobody's, mode 0755: not writable by others
        os.chmod(shared, 0o755)
        zscore = ["setpriv", "--inh-caps=-all",
                  "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *zscore]
    else:
        os.chmod(shared, 0o555)
    try:
        r = subprocess.run(zscore, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(shared, 0o755)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines()[-1] == (
        f"zscore: error: cannot create lock {shared / '.out.zscore.lock'}: Permission denied")
    assert os.listdir(shared) == []


def test_statistics_that_cannot_be_saved_publish_nothing_and_the_retry_works(medium, tmp_path):
    # Checked before compute, the --stats directory breaks only while the run transforms:
    # the statistics are saved before OUTPUT is published, so the failure publishes nothing.
    sdir = tmp_path / "stats"
    sdir.mkdir()
    run = start_zscore("run", medium, tmp_path / "out", "--stats", sdir / "s.json")
    wait_for(transform_started(tmp_path), 60, "the transform to start")
    sdir.rmdir()
    sdir.write_text("a file now")
    code, _, err = run.wait()
    assert code == 1, err
    assert err.splitlines()[-1] == f"zscore: error: cannot write {sdir / 's.json'}: File exists"
    assert not (tmp_path / "out").exists() and staging(tmp_path) == []
    sdir.unlink()
    sdir.mkdir()
    r = run_zscore("run", medium, tmp_path / "out", "--stats", sdir / "s.json")
    assert r.returncode == 0, r.stderr
    assert (sdir / "s.json").read_bytes() == (tmp_path / "out" / "_stats.json").read_bytes()


def test_a_run_through_a_link_and_one_through_the_real_path_share_one_lock(medium, reference,
                                                                          tmp_path):
    real = tmp_path / "disk" / "out"
    real.parent.mkdir()
    (tmp_path / "link").symlink_to(real)
    first = start_zscore("run", medium, tmp_path / "link", "--workers", 1)  # slower: overlap
    lock = real.parent / ".out.zscore.lock"
    wait_for(lock.exists, 60, "the lock beside the link's target")
    second = run_zscore("run", medium, real)
    assert second.returncode == 1, second.stderr
    assert second.stderr.splitlines()[-1].startswith(f"zscore: error: output is locked by {lock}")
    code, _, err = first.wait()
    assert code == 0, err
    assert (tmp_path / "link").is_symlink() and data_files(real) == data_files(reference)
    assert sorted(os.listdir(tmp_path)) == ["disk", "link"] and os.listdir(real.parent) == ["out"]
