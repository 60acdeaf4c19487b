"""Object stores, against a real S3-compatible server (moto) on 127.0.0.1.

The server is a separate process (``moto_server``); the library, the CLI and
the tests talk to it through s3fs exactly as they would to AWS.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import snapshot
from procs import run_zscore, wait_for

CANARY = "canary-SECRET-9f8e7d6c5b4a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server; yields the environment that points AWS clients at it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": CANARY,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        wait_for(up, 30, "moto_server")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("zsb")
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def fs(s3):
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture(scope="module")
def local_reference(datasets, tmp_path_factory):
    src = datasets.sample()
    out = tmp_path_factory.mktemp("s3ref") / "out"
    r = run_zscore("run", src, out, "--exclude", "id,label", "--no-report")
    assert r.returncode == 0, r.stderr
    return src, out


def _upload(fs, local: Path, prefix: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{prefix}/{p.relative_to(local).as_posix()}")


def _objects(fs, prefix: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {p[len(prefix) + 1:]: fs.cat_file(p) for p in fs.find(prefix)}


def test_s3_in_s3_out_matches_local_bytes(s3, fs, local_reference):
    src, ref = local_reference
    _upload(fs, src, "zsb/in")
    r = run_zscore("run", "s3://zsb/in", "s3://zsb/out", "--exclude", "id,label", "--no-report",
                   "--stats", "s3://zsb/stats.json", env=s3)
    assert r.returncode == 0, r.stderr
    got = _objects(fs, "zsb/out")
    want = snapshot(ref)
    assert {k: v for k, v in got.items() if not k.startswith("_")} == \
        {k: v for k, v in want.items() if not k.startswith("_")}
    manifest = json.loads(got["_SUCCESS"])
    assert manifest["input"]["path"] == "s3://zsb/in" and len(manifest["files"]) == 6
    stats = json.loads(fs.cat_file("zsb/stats.json"))
    assert stats["features"] == json.loads(want["_stats.json"])["features"]
    # the secret is nowhere: not in logs, the manifest, the artifact or the report
    blob = r.stdout + r.stderr + json.dumps(manifest) + json.dumps(stats)
    assert CANARY not in blob


def test_storage_option_endpoint_without_environment(s3, fs, local_reference):
    src, _ = local_reference
    _upload(fs, src, "zsb/in2")
    env = {k: v for k, v in s3.items() if k != "AWS_ENDPOINT_URL"}
    full = {**os.environ, **env}
    full.pop("AWS_ENDPOINT_URL", None)
    r = subprocess.run([str(Path(sys.executable).parent / "zscore"), "fit", "s3://zsb/in2",
                        "--stats", "s3://zsb/s2.json", "--storage-option",
                        f"endpoint_url={s3['AWS_ENDPOINT_URL']}", "--storage-option",
                        f"secret={CANARY}", "--storage-option", "key=testing"],
                       capture_output=True, text=True, env=full, timeout=120)
    assert r.returncode == 0, r.stderr
    assert CANARY not in r.stdout + r.stderr
    bad = subprocess.run([str(Path(sys.executable).parent / "zscore"), "fit", "s3://zsb/nope",
                          "--stats", "s3://zsb/s3.json", "--storage-option",
                          f"endpoint_url={s3['AWS_ENDPOINT_URL']}", "--storage-option",
                          f"secret={CANARY}"], capture_output=True, text=True, env=full,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.splitlines()[-1] == (
        "zscore: error: cannot list input s3://zsb/nope: bad credentials (Partial credentials "
        "found in explicit, missing: aws_access_key_id); check the AWS_* environment "
        "variables, profiles, or --storage-option")
    assert CANARY not in bad.stdout + bad.stderr


def test_failed_rewrite_leaves_no_success_and_stale_files_go(s3, fs, local_reference, tmp_path):
    src, _ = local_reference
    _upload(fs, src, "zsb/in3")
    assert run_zscore("run", "s3://zsb/in3", "s3://zsb/out3", "--no-report", env=s3).returncode == 0
    assert "_SUCCESS" in _objects(fs, "zsb/out3")
    # Corrupt one input in the middle of its pages: the rewrite fails part-way.
    rel = "day=2026-01-02/part-1.parquet"
    data = bytearray(fs.cat_file(f"zsb/in3/{rel}"))
    footer = int.from_bytes(data[-8:-4], "little")
    mid = (len(data) - footer) // 2
    data[mid:mid + 2048] = os.urandom(2048)
    fs.pipe_file(f"zsb/in3/{rel}", bytes(data))
    r = run_zscore("run", "s3://zsb/in3", "s3://zsb/out3", "--no-report", "--overwrite", env=s3)
    assert r.returncode == 2 and f"cannot read {rel}" in r.stderr.splitlines()[-1]
    assert "_SUCCESS" not in _objects(fs, "zsb/out3")  # readers gating on _SUCCESS see nothing
    # A later good run over fewer partitions deletes what is not in its manifest.
    fs.rm(f"zsb/in3/{rel}")
    r = run_zscore("run", "s3://zsb/in3", "s3://zsb/out3", "--no-report", "--overwrite",
                   "--filter", "day == 2026-01-01", env=s3)
    assert r.returncode == 0, r.stderr
    left = _objects(fs, "zsb/out3")
    manifest = json.loads(left["_SUCCESS"])
    assert sorted(k for k in left if not k.startswith("_")) == sorted(
        f["path"] for f in manifest["files"]) == ["day=2026-01-01/part-0.parquet",
                                                  "day=2026-01-01/part-1.parquet"]


def test_a_live_lock_on_s3_fails_fast(s3, fs, local_reference):
    src, _ = local_reference
    _upload(fs, src, "zsb/in4")
    import time

    fs.pipe_file("zsb/.out4.zscore.lock", json.dumps(
        {"host": "elsewhere", "pid": 1, "run_id": "other-run", "started": time.time()}).encode())
    r = run_zscore("run", "s3://zsb/in4", "s3://zsb/out4", "--no-report", env=s3)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        "zscore: error: output is locked by s3://zsb/.out4.zscore.lock, held by run other-run "
        "(pid 1 on elsewhere); another zscore is writing it: wait for it, or delete the lock "
        "if that run is dead")
    assert not fs.exists("zsb/out4")
    fs.rm("zsb/.out4.zscore.lock")
    assert run_zscore("run", "s3://zsb/in4", "s3://zsb/out4", "--no-report", env=s3).returncode == 0
    assert not fs.exists("zsb/.out4.zscore.lock")  # released


def test_python_api_on_s3(s3, fs, local_reference):
    import pipeline

    src, ref = local_reference
    _upload(fs, src, "zsb/in5")
    stats = pipeline.fit("s3://zsb/in5", exclude="id,label")
    stats.save("s3://zsb/api.json")
    assert pipeline.FittedStats.load("s3://zsb/api.json") == stats
    local = json.loads((ref / "_stats.json").read_text())["features"]
    assert json.loads(stats.to_json())["features"] == local


URL_CANARY = "url-canary-SECRET-1a2b3c4d"  # not in the environment: only the URL carries it


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text and URL_CANARY not in text, text


def test_credentials_in_a_url_are_refused_unprinted_and_the_remedy_works(s3, fs,
                                                                         local_reference):
    src, _ = local_reference
    _upload(fs, src, "zsb/in6")
    r = run_zscore("run", f"s3://testing:{URL_CANARY}@zsb/in6", "s3://zsb/out6", env=s3)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines()[-1] == (
        "zscore: error: cannot open s3://***@zsb/in6: s3:// URLs cannot carry credentials; "
        "pass them as storage options (for S3: --storage-option key=ID --storage-option "
        "secret=SECRET) or through the store's standard environment variables")
    _no_secret(r.stdout, r.stderr)
    # The remedy, with the report on and Dask's own logs too (-v): nothing shows the secret.
    r = run_zscore("run", "s3://zsb/in6", "s3://zsb/out6", "--storage-option", "key=testing",
                   "--storage-option", f"secret={URL_CANARY}", "-v", env=s3)
    assert r.returncode == 0, r.stderr
    published = _objects(fs, "zsb/out6")
    assert {"_SUCCESS", "_stats.json", "_report/index.html", "_report/summary.json"} <= \
        set(published)
    _no_secret(r.stdout, r.stderr, *(v.decode("utf-8", "replace") for v in published.values()))


@pytest.mark.parametrize("option", [URL_CANARY, f"={URL_CANARY}"])
def test_a_malformed_storage_option_is_never_echoed(s3, option):
    r = run_zscore("fit", "s3://zsb/in", "--stats", "s3://zsb/x.json", "--storage-option",
                   "anon=false", "--storage-option", option, env=s3)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "zscore: error: --storage-option #2 is not KEY=VALUE (for example "
        "endpoint_url=http://127.0.0.1:9000); its text is not shown, as it may hold a secret"]
    _no_secret(r.stderr)


def test_secrets_in_endpoint_urls_and_query_strings_are_scrubbed_from_errors(s3, fs,
                                                                             local_reference):
    src, _ = local_reference
    _upload(fs, src, "zsb/in7")
    # botocore's own message quotes the endpoint URL, token included: a bad setting, exit 2.
    r = run_zscore("fit", "s3://zsb/in7", "--stats", "s3://zsb/s7.json", "--storage-option",
                   f"endpoint_url=http://127.0.0.1:1/?X-Amz-Security-Token={URL_CANARY}",
                   env=s3)
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == (
        "zscore: error: cannot list input s3://zsb/in7: EndpointResolutionError: Custom "
        "endpoint `http://127.0.0.1:1/?X-Amz-Security-Token=*** was not a valid URI; check "
        "the URL and the storage options")
    _no_secret(r.stdout, r.stderr)
    # A presigned-style URL: the signature is a secret, the rest is shown.
    url = f"{s3['AWS_ENDPOINT_URL']}/zsb/in7?X-Amz-Signature={URL_CANARY}&X-Amz-Expires=60"
    r = run_zscore("fit", url, "--stats", "s3://zsb/s7.json", env=s3)
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == (
        f"zscore: error: input {s3['AWS_ENDPOINT_URL']}/zsb/in7?X-Amz-Signature=***&"
        "X-Amz-Expires=60 does not exist")
    _no_secret(r.stdout, r.stderr)
    # user:password@ over HTTP is a working credential: used, and stored redacted.
    one = "day=2026-01-01/part-0.parquet"
    host = s3["AWS_ENDPOINT_URL"].split("://")[1]
    r = run_zscore("fit", f"http://testing:{URL_CANARY}@{host}/zsb/in7/{one}", "--stats",
                   "s3://zsb/s7.json", env=s3)
    assert r.returncode == 0, r.stderr
    stats = fs.cat_file("zsb/s7.json").decode()
    assert json.loads(stats)["input"]["path"] == f"http://***@{host}/zsb/in7/{one}"
    _no_secret(r.stdout, r.stderr, stats)


def _corrupt_middle(fs, key: str) -> bytes:
    """Overwrite 2 KiB in the middle of an object's pages; return the original bytes."""
    good = fs.cat_file(key)
    data = bytearray(good)
    footer = int.from_bytes(data[-8:-4], "little")
    mid = (len(data) - footer) // 2
    data[mid:mid + 2048] = os.urandom(2048)
    fs.pipe_file(key, bytes(data))
    return good


def test_overwrite_keeps_foreign_prefixes_and_a_failed_first_run_is_retried(s3, fs,
                                                                           local_reference):
    src, ref = local_reference
    _upload(fs, src, "zsb/in8")
    # Not ours: a Spark-style output with its empty _SUCCESS is never deleted.
    fs.pipe_file("zsb/foreign/_SUCCESS", b"")
    fs.pipe_file("zsb/foreign/part-00000.csv", b"precious")
    r = run_zscore("run", "s3://zsb/in8", "s3://zsb/foreign", "--overwrite", "--no-report",
                   env=s3)
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == (
        "zscore: error: output s3://zsb/foreign is not empty and is not a zscore output (2 "
        "entries: _SUCCESS, part-00000.csv); its _SUCCESS was not written by zscore; zscore "
        "replaces only an empty directory or its own output: empty it or choose another path")
    assert _objects(fs, "zsb/foreign") == {"_SUCCESS": b"", "part-00000.csv": b"precious"}
    # A first run that fails part-way leaves files and no _SUCCESS; the same command, retried
    # once the input is fixed, replaces them (nothing had been published).
    rel = "day=2026-01-02/part-1.parquet"
    good = _corrupt_middle(fs, f"zsb/in8/{rel}")
    args = ("run", "s3://zsb/in8", "s3://zsb/out8", "--exclude", "id,label", "--no-report")
    r = run_zscore(*args, env=s3)
    assert r.returncode == 2 and f"cannot read {rel}" in r.stderr.splitlines()[-1]
    left = _objects(fs, "zsb/out8")
    assert "_SUCCESS" not in left and "_zscore_output.json" in left
    fs.pipe_file(f"zsb/in8/{rel}", good)
    r = run_zscore(*args, env=s3)
    assert r.returncode == 0, r.stderr
    got = _objects(fs, "zsb/out8")
    assert {k: v for k, v in got.items() if not k.startswith("_")} == \
        {k: v for k, v in snapshot(ref).items() if not k.startswith("_")}
    # A published output is replaced only with --overwrite; a failed rewrite can be retried.
    r = run_zscore(*args, env=s3)
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == (
        "zscore: error: output s3://zsb/out8 exists and holds a zscore output; pass "
        "--overwrite to replace it or choose another path")
    _corrupt_middle(fs, f"zsb/in8/{rel}")
    assert run_zscore(*args, "--overwrite", env=s3).returncode == 2
    assert "_SUCCESS" not in _objects(fs, "zsb/out8")
    fs.pipe_file(f"zsb/in8/{rel}", good)
    r = run_zscore(*args, "--overwrite", env=s3)
    assert r.returncode == 0, r.stderr


def test_object_store_destinations_are_checked_before_compute(s3, fs, local_reference):
    src, _ = local_reference
    _upload(fs, src, "zsb/in9")
    fs.mkdir("zsb-empty")
    cases = [
        (["run", "s3://zsb/in9", "s3://zsb-empty"], "output s3://zsb-empty is a whole bucket; "
         "give a prefix inside it, e.g. s3://zsb-empty/out (its lock goes beside it)"),
        (["run", "s3://zsb/in9", "s3://zsb/in9/z"], "output s3://zsb/in9/z lies inside the "
         "input s3://zsb/in9; choose an output outside the input"),
        (["run", "s3://zsb/in9", "s3://zsb/o9", "--stats", "s3://zsb/o9/s.json"],
         "statistics file s3://zsb/o9/s.json lies inside the output s3://zsb/o9, which "
         "publishing replaces (the statistics are saved as s3://zsb/o9/_stats.json anyway); "
         "write it elsewhere"),
        (["fit", "s3://zsb/in9", "--stats", "s3://no-such-bucket/s.json"],
         "statistics file s3://no-such-bucket/s.json: bucket 'no-such-bucket' does not exist "
         "or is not visible with these credentials; create it or fix the URL"),
        (["fit", "s3://zsb/in9", "--stats", "s3://zsb/s9.json", "--cache", "s3://zsb/in9/c"],
         "cache s3://zsb/in9/c would write s3://zsb/in9/c/footers, which lies inside the input "
         "s3://zsb/in9; choose a cache outside the input"),
    ]
    before = _objects(fs, "zsb/in9")
    for args, message in cases:
        r = run_zscore(*args, "--no-report" if args[0] == "run" else "-q", env=s3)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines()[-1] == f"zscore: error: {message}"
        assert "features (" not in r.stderr
    assert _objects(fs, "zsb/in9") == before
    assert not fs.exists("zsb/o9") and not fs.exists("zsb/s9.json")


def test_small_files_transformed_together_are_each_uploaded_whole(s3, fs, datasets, tmp_path):
    """20 files of 100 rows, --workers 1 (so a task has 2 or 3 of them, transformed as one
    table): each is uploaded as its own object, the same bytes as the local run writes."""
    src = datasets.sample("s3-small", rows=2000, days=2, files_per_day=10)
    args = ("--exclude", "id,label", "--no-report", "--workers", "1")
    local = tmp_path / "out"
    assert run_zscore("run", src, local, *args).returncode == 0
    _upload(fs, src, "zsb/small/in")
    r = run_zscore("run", "s3://zsb/small/in", "s3://zsb/small/out", *args, env=s3)
    assert r.returncode == 0, r.stderr
    got = {k: v for k, v in _objects(fs, "zsb/small/out").items() if not k.startswith("_")}
    want = {k: v for k, v in snapshot(local).items() if not k.startswith("_")}
    assert len(want) == 20 and got == want
