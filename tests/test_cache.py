"""The incremental-fit cache: bit-identical to a full fit, reads only what changed."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
from procs import start_zscore

from pipeline.cli import main
from pipeline.sample import make_table


def fit_json(capsys, src, tmp_path, *extra) -> tuple[dict, str]:
    stats = tmp_path / "s.json"
    assert main(["fit", str(src), "--stats", str(stats), *map(str, extra)]) == 0
    err = capsys.readouterr().err
    return json.loads(stats.read_text())["features"], err


@pytest.fixture()
def data(datasets, tmp_path):
    return datasets.copy(datasets.sample(), tmp_path / "data")


def test_cached_refit_is_bit_identical_through_changes(data, tmp_path, capsys):
    import numpy as np

    cache = tmp_path / "cache"
    full, _ = fit_json(capsys, data, tmp_path)
    cached, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    assert cached == full and "cache: 0 of 6 files' moments reused, 6 read" in err
    again, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    assert again == full and "cache: 6 of 6 files' moments reused, 0 read" in err

    rng = np.random.default_rng(11)
    changed = data / "day=2026-01-02" / "part-1.parquet"
    pq.write_table(make_table(3000, 10**6, rng), changed, use_dictionary=["city"])
    (data / "day=2026-01-01" / "part-0.parquet").unlink()
    (data / "day=2026-01-09").mkdir()
    pq.write_table(make_table(1234, 2 * 10**6, rng), data / "day=2026-01-09" / "part-0.parquet",
                   use_dictionary=["city"])
    cached, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    full, _ = fit_json(capsys, data, tmp_path)
    assert cached == full
    assert "cache: 4 of 6 files' moments reused, 2 read" in err


def test_unchanged_files_are_not_even_opened(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    before, _ = fit_json(capsys, data, tmp_path, "--cache", cache)
    victim = data / "day=2026-01-03" / "part-0.parquet"
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)  # same size ...
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and same mtime
    after, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    assert after == before and "6 of 6 files' moments reused" in err
    assert main(["fit", str(data), "--stats", str(tmp_path / "x.json")]) == 2  # really broken


def test_corrupt_foreign_and_old_entries_are_recomputed(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    full, _ = fit_json(capsys, data, tmp_path, "--cache", cache)
    entries = sorted((cache / "moments").iterdir())
    entries[0].write_text("{not json")
    entries[1].write_bytes(entries[2].read_bytes())  # another file's entry under this name
    entry = json.loads(entries[3].read_text())
    entry["format"] = 99
    entries[3].write_text(json.dumps(entry))
    entry = json.loads(entries[4].read_text())
    entry["payload"][next(iter(entry["payload"]))]["m2"] *= 2  # tampered, checksum kept
    entries[4].write_text(json.dumps(entry))
    again, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    assert again == full
    assert f"cache entry moments/{entries[0].name} is corrupt; recomputing it" in err
    assert f"cache entry moments/{entries[1].name} belongs to another file" in err
    assert f"cache entry moments/{entries[3].name} has format 99, not 5" in err
    assert f"cache entry moments/{entries[4].name} fails its checksum" in err
    assert "2 of 6 files' moments reused, 4 read" in err
    _, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    assert "warning: cache" not in err and "6 of 6 files' moments reused" in err  # repaired


def test_concurrent_fits_share_a_cache(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    runs = [start_zscore("fit", data, "--stats", tmp_path / f"c{i}.json", "--cache", cache)
            for i in range(2)]
    for r in runs:
        code, _, err = r.wait()
        assert code == 0, err
    a, b = (json.loads((tmp_path / f"c{i}.json").read_text())["features"] for i in range(2))
    full, _ = fit_json(capsys, data, tmp_path)
    assert a == b == full
    _, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    assert "warning: cache" not in err and "6 of 6 files' moments reused" in err


def test_an_unwritable_cache_is_a_warning_a_misplaced_one_an_error(data, tmp_path, capsys):
    # A cache the user may not write only costs speed: a warning, the fit goes on.
    from procs import run_unprivileged

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    r = run_unprivileged("fit", data, "--stats", tmp_path / "u.json", "--cache", locked / "c")
    assert r.returncode == 0, r.stderr
    full, _ = fit_json(capsys, data, tmp_path)
    assert json.loads((tmp_path / "u.json").read_text())["features"] == full
    assert f"cannot write to the cache {locked / 'c'}" in r.stderr
    # A cache path through a file is a mistake no retry fixes: exit 2 before compute.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["fit", str(data), "--stats", str(tmp_path / "s.json"), "--cache",
                 str(blocker / "cache")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"zscore: error: cache {blocker / 'cache'} cannot be created: {blocker} is not a "
        "directory")


def test_a_linked_file_is_identified_by_its_target(data, tmp_path, capsys):
    import numpy as np

    cache = tmp_path / "cache"
    store = tmp_path / "store"
    store.mkdir()
    linked = data / "day=2026-01-02" / "part-1.parquet"
    linked.rename(store / "v1.parquet")
    linked.symlink_to(store / "v1.parquet")
    full, _ = fit_json(capsys, data, tmp_path)
    cached, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    assert cached == full and "0 of 6 files' moments reused, 6 read" in err
    # Touching the link itself changes nothing; rewriting its target is a change.
    os.utime(linked, follow_symlinks=False)
    again, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    assert again == full and "6 of 6 files' moments reused, 0 read" in err
    pq.write_table(make_table(2500, 7 * 10**6, np.random.default_rng(5)), store / "v1.parquet",
                   use_dictionary=["city"])
    cached, err = fit_json(capsys, data, tmp_path, "--cache", cache)
    full, _ = fit_json(capsys, data, tmp_path)
    assert cached == full and "5 of 6 files' moments reused, 1 read" in err
