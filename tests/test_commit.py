"""Publishing: never a partial output, whatever happens to the run.

Each fault is provoked for real on a real ``zscore`` process: SIGTERM/SIGINT/SIGHUP
at every phase (landed exactly with the ``ZSCORE_TEST_PAUSE`` hook, a real pause
of the real process), SIGKILL, two concurrent runs, stale, reused and garbage
locks, a run stalled by SIGSTOP until another breaks its lock, a full disk (a
small tmpfs), a directory the run may not write, a corrupt page in the middle of
an input file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_s3
from conftest import data_files, snapshot
from procs import handles, paused, run_zscore, start_zscore, wait_for, zscore_cmd


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
    # The first run holds its lock at the fit (the test hook), so the second surely meets it:
    # a timing guess ("--workers 1 is slower") lost the race once the transform got faster.
    first = start_zscore("run", medium, tmp_path / "out", env=pause_at(tmp_path, "fit"))
    paused(first, "fit")
    holder = json.loads((tmp_path / ".out.zscore.lock").read_text())
    second = run_zscore("run", medium, tmp_path / "out")
    (tmp_path / "resume").touch()
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
    first = start_zscore("run", medium, tmp_path / "link", env=pause_at(tmp_path, "fit"))
    lock = real.parent / ".out.zscore.lock"
    paused(first, "fit")  # holding the lock for certain, not by a timing guess
    assert lock.exists()
    second = run_zscore("run", medium, real)
    (tmp_path / "resume").touch()
    assert second.returncode == 1, second.stderr
    assert second.stderr.splitlines()[-1].startswith(f"zscore: error: output is locked by {lock}")
    code, _, err = first.wait()
    assert code == 0, err
    assert (tmp_path / "link").is_symlink() and data_files(real) == data_files(reference)
    # nothing left beside the link or its target ("resume" is the test hook's own file)
    assert sorted(os.listdir(tmp_path)) == ["disk", "link", "resume"]
    assert os.listdir(real.parent) == ["out"]


# ------------------------------------------------- signals at every phase (the test hook)
def pause_at(tmp_path, phase: str) -> dict[str, str]:
    """Environment for a real pause at ``phase`` (see pipeline.interrupt.checkpoint)."""
    return {"ZSCORE_TEST_PAUSE": phase, "ZSCORE_TEST_RESUME": str(tmp_path / "resume")}


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if "error" in line.lower()]


@pytest.fixture(scope="module")
def small_outputs(datasets, tmp_path_factory):
    """Two finished outputs of the small sample: standard (the reference) and center (old)."""
    src = datasets.sample()
    root = tmp_path_factory.mktemp("small")
    for mode in ("standard", "center"):
        r = run_zscore("run", src, root / mode, "--mode", mode)
        assert r.returncode == 0, r.stderr
    return src, root / "standard", root / "center"


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("phase, sig", [("locked", signal.SIGTERM), ("footers", signal.SIGINT),
                                        ("fit", signal.SIGHUP), ("transform", signal.SIGTERM),
                                        ("publish", signal.SIGINT)])
def test_signal_before_publication_publishes_nothing(small_outputs, tmp_path, phase, sig,
                                                     overwrite):
    src, _, old = small_outputs
    before = snapshot(src)
    out = tmp_path / "out"
    if overwrite:
        shutil.copytree(old, out)
    run = start_zscore("run", src, out, *(["--overwrite"] if overwrite else []),
                       env=pause_at(tmp_path, phase))
    paused(run, phase)
    run.proc.send_signal(sig)
    code, _, err = run.wait()
    name = signal.Signals(sig).name
    assert code == 128 + sig
    assert error_lines(err) == [f"zscore: error: stopped by {name}; nothing was published"]
    assert snapshot(out) == snapshot(old) if overwrite else not out.exists()
    assert staging(tmp_path) == []  # no staging, no old copy, no lock
    assert snapshot(src) == before


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_just_after_the_swap_finishes_the_published_run(small_outputs, tmp_path, sig,
                                                               overwrite):
    src, reference, old = small_outputs
    out = tmp_path / "out"
    if overwrite:
        shutil.copytree(old, out)
    run = start_zscore("run", src, out, "--stats", tmp_path / "s.json",
                       *(["--overwrite"] if overwrite else []), env=pause_at(tmp_path, "published"))
    paused(run, "published")
    assert data_files(out) == data_files(reference)  # the swap happened: this run is published
    run.proc.send_signal(sig)
    code, stdout, err = run.wait()
    assert code == 0, err
    assert error_lines(err) == []
    assert f"zscore: warning: {signal.Signals(sig).name} arrived after {out} was published; " \
           "the run completed" in err
    assert stdout.startswith("run: 24,000 rows in 6 files")
    assert staging(tmp_path) == []  # the old copy removed, the lock released
    assert data_files(out) == data_files(reference)
    assert json.loads((tmp_path / "s.json").read_text()) == \
        json.loads((out / "_stats.json").read_text())
    retry = run_zscore("run", src, out, "--overwrite")  # what an orchestrator's retry would do
    assert retry.returncode == 0, retry.stderr


def test_sigterm_twice_cleans_up_once(small_outputs, tmp_path):
    src, _, _ = small_outputs
    run = start_zscore("run", src, tmp_path / "out", env=pause_at(tmp_path, "transform"))
    paused(run, "transform")
    run.proc.send_signal(signal.SIGTERM)
    run.proc.send_signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 143
    assert error_lines(err) == ["zscore: error: stopped by SIGTERM; nothing was published"]
    assert not (tmp_path / "out").exists() and staging(tmp_path) == []


def test_a_signal_ignored_at_start_stays_ignored(small_outputs, tmp_path):
    """nohup: SIGHUP is ignored when zscore starts, so a closed terminal does not stop it."""
    src, reference, _ = small_outputs
    env = {**os.environ, **pause_at(tmp_path, "transform")}
    proc = subprocess.Popen(zscore_cmd("run", src, tmp_path / "out"), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    wait_for(lambda: handles(proc.pid, signal.SIGTERM), 30, "zscore's handlers")
    assert not handles(proc.pid, signal.SIGHUP)
    proc.send_signal(signal.SIGHUP)
    (tmp_path / "resume").touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert data_files(tmp_path / "out") == data_files(reference)


# ------------------------------------------------------------------------------- locks
def write_lock(path, content: bytes, age: float = 0.0) -> None:
    path.write_bytes(content)
    t = time.time() - age
    os.utime(path, (t, t))


def start_identity(pid: int) -> str:
    """Boot id and start time in clock ticks (proc(5): /proc/PID/stat field 22), read here."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{boot}:{fields[19]}"


@pytest.fixture()
def stranger():
    """A live process that is not zscore: the pid a crashed run's lock may now point to."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def lock_of(pid: int, **extra) -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": pid, "run_id": "0ld0ld0ld0ld",
                       "started": time.time() - 7200, **extra}).encode()


def test_lock_of_a_live_unrelated_pid_is_broken_when_its_heartbeat_is_stale(
        small_outputs, tmp_path, stranger):
    src, reference, _ = small_outputs
    lock = tmp_path / ".out.zscore.lock"
    write_lock(lock, lock_of(stranger.pid), age=3600)  # a lock without a start time (0.1)
    r = run_zscore("run", src, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert re.search(re.escape(f"zscore: warning: breaking stale lock {lock}, held by run "
                               f"0ld0ld0ld0ld (pid {stranger.pid} on {socket.gethostname()}): "
                               "its heartbeat is ") + r"36\d\d s old \(stale after 120 s\)",
                     r.stderr), r.stderr
    assert data_files(tmp_path / "out") == data_files(reference) and staging(tmp_path) == []


def test_lock_whose_pid_now_belongs_to_another_process_is_broken_at_once(
        small_outputs, tmp_path, stranger):
    src, _, _ = small_outputs
    lock = tmp_path / ".out.zscore.lock"
    # The holder's pid is alive and its heartbeat fresh, but the process is not the holder:
    # it started at another time (pid reuse after a crash, a restarted container).
    write_lock(lock, lock_of(stranger.pid, start="some-other-boot:12345"))
    r = run_zscore("run", src, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert f"(pid {stranger.pid} on {socket.gethostname()}): pid {stranger.pid} is another " \
           "process now" in r.stderr
    # The control: the same lock naming the process as it really is blocks, fresh as it is.
    lock = tmp_path / ".again.zscore.lock"
    write_lock(lock, lock_of(stranger.pid, start=start_identity(stranger.pid)))
    r = run_zscore("run", src, tmp_path / "again")
    assert r.returncode == 1
    assert error_lines(r.stderr) == [
        f"zscore: error: output is locked by {lock}, held by run 0ld0ld0ld0ld (pid "
        f"{stranger.pid} on {socket.gethostname()}); another zscore is writing it: wait for "
        "it, or delete the lock if that run is dead"]
    assert not (tmp_path / "again").exists() and lock.exists()


@pytest.mark.parametrize("content", [b"", b"\x00garbage{", b"[1, 2]"], ids=["empty", "garbage",
                                                                          "not-an-object"])
def test_unreadable_lock_blocks_while_fresh_and_is_broken_once_stale(small_outputs, tmp_path,
                                                                    content):
    src, reference, _ = small_outputs
    lock = tmp_path / ".out.zscore.lock"
    write_lock(lock, content, age=5)
    r = run_zscore("run", src, tmp_path / "out")
    assert r.returncode == 1
    assert re.fullmatch(re.escape(f"zscore: error: output is locked by {lock}, which cannot be "
                                  "read (written ") + r"\d+" + re.escape(
        " s ago; broken once older than 120 s): another zscore may be creating it; wait, or "
        "delete the lock if no zscore is writing this output"), *error_lines(r.stderr))
    assert lock.read_bytes() == content and not (tmp_path / "out").exists()
    write_lock(lock, content, age=600)
    r = run_zscore("run", src, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert re.search(re.escape(f"zscore: warning: breaking stale lock {lock}, which cannot be "
                               "read: its heartbeat is ") + r"6\d\d s old", r.stderr), r.stderr
    assert data_files(tmp_path / "out") == data_files(reference) and staging(tmp_path) == []


@pytest.mark.parametrize("value", ["abc", "-5", "0", "nan", "inf"])
def test_bad_lock_stale_setting_is_exit_2_in_one_line(small_outputs, tmp_path, value):
    src, _, _ = small_outputs
    r = run_zscore("run", src, tmp_path / "out", env={"ZSCORE_LOCK_STALE_SECONDS": value})
    assert r.returncode == 2
    assert error_lines(r.stderr) == [
        f"zscore: error: ZSCORE_LOCK_STALE_SECONDS={value!r} is not a positive number of "
        "seconds; fix or unset it (default 120)"]
    assert not (tmp_path / "out").exists() and staging(tmp_path) == []


@pytest.mark.parametrize("phase", ["transform", "publish"])
def test_run_whose_lock_was_broken_while_it_stalled_publishes_nothing(small_outputs, tmp_path,
                                                                      phase):
    """A stalls (SIGSTOP: every thread, its heartbeat too) until B breaks its lock and publishes."""
    src, reference, old = small_outputs
    out, lock = tmp_path / "out", tmp_path / ".out.zscore.lock"
    a = start_zscore("run", src, out, "--mode", "center", env=pause_at(tmp_path, phase))
    paused(a, phase)
    a_id = json.loads(lock.read_text())["run_id"]
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: time.time() - lock.stat().st_mtime > 2, 30, "A's heartbeat to age")
        b = run_zscore("run", src, out, env={"ZSCORE_LOCK_STALE_SECONDS": "2"})
        assert b.returncode == 0, b.stderr
        assert f"breaking stale lock {lock}, held by run {a_id} (pid {a.proc.pid} " in b.stderr
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    (tmp_path / "resume").touch()
    code, _, err = a.wait()
    assert code == 1
    assert error_lines(err) == [
        f"zscore: error: this run lost its lock {lock} (it was removed): another run broke it "
        "while this one stalled for more than 120 s; nothing was published"]
    assert data_files(out) == data_files(reference)  # B's output, untouched by A
    assert staging(tmp_path) == []


s3, fs = test_s3.s3, test_s3.fs  # the moto server's fixtures


def test_heartbeat_on_s3_never_takes_back_a_broken_lock(s3, fs, small_outputs, tmp_path):
    """On an object store the heartbeat rewrites the lock: never once another run holds it."""
    src, _, _ = small_outputs
    test_s3._upload(fs, src, "zsb/hb")
    lock = "zsb/.hbout.zscore.lock"
    a = start_zscore("run", "s3://zsb/hb", "s3://zsb/hbout", "--no-report", env={
        **s3, "ZSCORE_LOCK_STALE_SECONDS": "4", **pause_at(tmp_path, "transform")})
    paused(a, "transform")  # its heartbeat runs every second (a quarter of the stale age)
    assert json.loads(fs.cat_file(lock))["pid"] == a.proc.pid
    theirs = json.dumps({"host": "elsewhere", "pid": 7, "run_id": "theirs",
                         "started": time.time()}).encode()
    fs.pipe_file(lock, theirs)  # another run broke A's lock and took it
    time.sleep(2.5)  # an observation window: two of A's heartbeats, which must not touch it
    assert fs.cat_file(lock) == theirs
    (tmp_path / "resume").touch()
    code, _, err = a.wait()
    assert code == 1
    assert error_lines(err) == [
        "zscore: error: this run lost its lock s3://zsb/.hbout.zscore.lock (it is now held by "
        "run theirs (pid 7 on elsewhere)): another run broke it while this one stalled for "
        "more than 4 s; nothing was published"]
    fs.invalidate_cache()
    assert fs.cat_file(lock) == theirs and not fs.exists("zsb/hbout/_SUCCESS")
