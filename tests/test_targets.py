"""Every destination is checked before compute: nothing lands in the input, nothing foreign is
deleted, and a refused run leaves no trace (real symlinks, bind mounts, permissions)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import snapshot
from procs import run_unprivileged, zscore


def refused(capsys, *args) -> str:
    """Run zscore, expect exit 2 before any compute, return the one error line."""
    code, _, err = zscore(capsys, *args)
    assert code == 2, err
    assert "features (" not in err, "the check came after the input was read"
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0].removeprefix("zscore: error: ")


@pytest.fixture()
def src(datasets, tmp_path):
    return datasets.copy(datasets.sample(), tmp_path / "in")


def tree(path) -> dict[str, str]:
    """Every entry under ``path`` (links not followed): what it is, to see nothing was added."""
    out = {}
    for dirpath, dirs, names in os.walk(path):
        for n in dirs + names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, path)] = "link" if os.path.islink(p) else \
                "dir" if os.path.isdir(p) else "file"
    return out


# ------------------------------------------------------------ the input is never written
def _parent_is_a_link_to_the_input(tmp, src):
    (tmp / "ln").symlink_to(src)
    return tmp / "ln" / "out", f"lies inside the input {src}"


def _output_is_a_link_into_the_input(tmp, src):
    (tmp / "ln").symlink_to(src / "day=2026-01-01")
    return tmp / "ln", f"lies inside the input {src}"


def _dotdot_after_a_link(tmp, src):
    # The kernel reads deep/ln/.. as ln's target's parent (the input), not as deep/.
    (tmp / "deep").mkdir()
    (tmp / "deep" / "ln").symlink_to(src / "day=2026-01-01")
    return f"{tmp}/deep/ln/../x", f"lies inside the input {src}"


def _inside_what_the_input_links_to(tmp, src):
    ext = tmp / "ext" / "day=2026-01-09"
    ext.mkdir(parents=True)
    (ext / "part-0.parquet").write_bytes((src / "day=2026-01-01" / "part-0.parquet").read_bytes())
    (src / "day=2026-01-09").symlink_to(ext)
    return ext / "out", (f"lies inside {ext}, which the input {src} links to "
                         "(from day=2026-01-09)")


@pytest.mark.parametrize("setup", [_parent_is_a_link_to_the_input,
                                   _output_is_a_link_into_the_input, _dotdot_after_a_link,
                                   _inside_what_the_input_links_to])
def test_output_reaching_the_input_through_links_is_refused(src, tmp_path, capsys, setup):
    output, how = setup(tmp_path, src)
    before, entries = snapshot(src), tree(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert refused(capsys, "run", src, output, *extra) == (
            f"output {output} {how}; choose an output outside the input")
    assert snapshot(src) == before  # bytes, hidden staging and lock files included
    assert tree(tmp_path) == entries


def test_output_on_a_bind_mount_of_the_input_is_refused(src, tmp_path, capsys):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root / CAP_SYS_ADMIN)")
    try:
        before = snapshot(src)
        assert refused(capsys, "run", src, mnt / "out") == (
            f"output {mnt / 'out'} lies inside the input {src}; choose an output outside the "
            "input")
        assert refused(capsys, "fit", src, "--stats", mnt / "s.json").startswith(
            f"statistics file {mnt / 's.json'} lies inside the input {src}")
        assert snapshot(src) == before
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_stats_and_cache_inside_the_input_are_refused(src, tmp_path, capsys):
    (tmp_path / "ln").symlink_to(src)
    (tmp_path / "statlink").symlink_to(src / "day=2026-01-01" / "part-0.parquet")
    before = snapshot(src)
    for cmd in (["run", src, tmp_path / "out"], ["fit", src]):
        assert refused(capsys, *cmd, "--stats", src / "s.json") == (
            f"statistics file {src / 's.json'} lies inside the input {src}; write it outside "
            "the input")
        assert refused(capsys, *cmd, "--stats", tmp_path / "statlink").startswith(
            f"statistics file {tmp_path / 'statlink'} lies inside the input {src}")
        assert refused(capsys, *cmd, "--stats", tmp_path / "s.json", "--cache",
                       tmp_path / "ln" / "cache") == (
            f"cache {tmp_path / 'ln' / 'cache'} would write {tmp_path / 'ln' / 'cache'}/footers,"
            f" which lies inside the input {src}; choose a cache outside the input")
    assert snapshot(src) == before and not (tmp_path / "out").exists()
    assert not (tmp_path / "s.json").exists()


def test_stats_hard_linked_to_an_input_file_leaves_the_input_alone(src, tmp_path, capsys):
    os.link(src / "day=2026-01-01" / "part-0.parquet", tmp_path / "hard.json")
    before = snapshot(src)
    code, _, err = zscore(capsys, "fit", src, "--stats", tmp_path / "hard.json", "-q")
    assert code == 0, err
    assert snapshot(src) == before  # replaced by rename, never written through
    assert json.loads((tmp_path / "hard.json").read_text())["format_version"] >= 1


def test_destinations_inside_the_output_or_each_other_are_refused(src, tmp_path, capsys):
    out = tmp_path / "out"
    assert refused(capsys, "run", src, out, "--stats", out / "s.json") == (
        f"statistics file {out / 's.json'} lies inside the output {out}, which publishing "
        f"replaces (the statistics are saved as {out}/_stats.json anyway); write it elsewhere")
    assert refused(capsys, "run", src, out, "--cache", out / "cache") == (
        f"cache {out / 'cache'} overlaps the output {out}, which publishing replaces; choose a "
        "cache outside it")
    assert refused(capsys, "fit", src, "--stats", tmp_path / "c", "--cache", tmp_path / "c") == (
        f"statistics file {tmp_path / 'c'} overlaps the cache's {tmp_path / 'c'}/footers; write "
        "it elsewhere")
    assert sorted(os.listdir(tmp_path)) == ["in"]


# --------------------------------------------------------------- OUTPUT through a link
def test_output_given_as_a_link_publishes_at_its_target(src, tmp_path, capsys):
    real, links = tmp_path / "disk" / "real", tmp_path / "links"
    real.parent.mkdir()
    links.mkdir()
    assert zscore(capsys, "run", src, real, "-q")[0] == 0
    old = json.loads((real / "_SUCCESS").read_text())["run_id"]
    (links / "out").symlink_to(real)
    code, _, err = zscore(capsys, "run", src, links / "out", "--overwrite", "--mode", "center",
                          "-q")
    assert code == 0, err
    assert (links / "out").is_symlink() and os.readlink(links / "out") == str(real)
    manifest = json.loads((real / "_SUCCESS").read_text())
    assert manifest["run_id"] != old and manifest["mode"] == "center"
    assert os.listdir(links) == ["out"] and os.listdir(real.parent) == ["real"]  # no staging
    # A link to nothing yet: the output is created at the target, the link stays.
    (links / "new").symlink_to(tmp_path / "fresh" / "out")
    code, _, err = zscore(capsys, "run", src, links / "new", "-q")
    assert code == 0, err
    assert (links / "new").is_symlink() and (tmp_path / "fresh" / "out" / "_SUCCESS").is_file()


# ----------------------------------------- every destination is checked before compute
def test_a_stats_path_that_cannot_be_written_fails_before_compute(src, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "blocker").write_text("a file")
    (tmp_path / "adir").mkdir()
    assert refused(capsys, "run", src, out, "--stats", tmp_path / "blocker" / "s.json") == (
        f"statistics file {tmp_path / 'blocker' / 's.json'} cannot be created: "
        f"{tmp_path / 'blocker'} is not a directory")
    assert refused(capsys, "fit", src, "--stats", tmp_path / "adir") == (
        f"statistics file {tmp_path / 'adir'} is a directory; give the path of a file")
    assert refused(capsys, "run", src, out, "--cache", tmp_path / "blocker") == (
        f"cache {tmp_path / 'blocker'} is a file; give a directory path")
    assert not out.exists()
    # The remedy: a path that can be written.
    code, _, err = zscore(capsys, "run", src, out, "--stats", tmp_path / "adir" / "s.json", "-q")
    assert code == 0, err
    assert (tmp_path / "adir" / "s.json").read_bytes() == (out / "_stats.json").read_bytes()


def test_a_stats_directory_without_write_permission_fails_before_compute(src, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    for cmd in (["run", src, tmp_path / "out"], ["fit", src]):
        r = run_unprivileged(*cmd, "--stats", locked / "s.json")
        assert r.returncode == 1, r.stderr
        assert r.stderr.splitlines()[-1] == (
            f"zscore: error: cannot write statistics file {locked / 's.json'}: {locked}: "
            "Permission denied")
        assert "features (" not in r.stderr  # refused before the input was read
    assert not (tmp_path / "out").exists() and os.listdir(locked) == []


def test_a_stats_directory_that_refuses_files_even_to_root_fails_before_compute(src, tmp_path,
                                                                                capsys):
    # /sys takes no new files, whoever asks; os.access would still say yes to root.
    code, _, err = zscore(capsys, "run", src, tmp_path / "out", "--stats", "/sys/zscore/s.json")
    assert code == 1, err
    last = err.splitlines()[-1]
    assert last.startswith("zscore: error: cannot write statistics file /sys/zscore/s.json: "
                           "/sys: ") and "features (" not in err
    assert not (tmp_path / "out").exists() and not os.path.exists("/sys/zscore")


# ------------------------------------------------------- --overwrite replaces only ours
def test_overwrite_refuses_a_directory_zscore_did_not_write(src, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name in ["a.csv", "b.csv", "c.csv", "d.csv", "e.csv", "f.csv"]:
        (out / name).write_text("precious")
    (out / "notes").mkdir()
    before = snapshot(out)
    for extra in ([], ["--overwrite"]):
        assert refused(capsys, "run", src, out, *extra) == (
            f"output {out} is not empty and is not a zscore output (7 entries: a.csv, b.csv, "
            "c.csv, d.csv, e.csv, ...); zscore replaces only an empty directory or its own "
            "output: empty it or choose another path")
    assert snapshot(out) == before and (out / "notes").is_dir()
    spark = tmp_path / "spark"
    spark.mkdir()
    (spark / "_SUCCESS").write_bytes(b"")
    (spark / "part-00000.parquet").write_bytes((src / "day=2026-01-01" / "part-0.parquet")
                                               .read_bytes())
    assert zscore(capsys, "fit", src, "--stats", tmp_path / "s.json", "-q")[0] == 0
    assert refused(capsys, "transform", src, spark, "--stats", tmp_path / "s.json",
                   "--overwrite") == (
        f"output {spark} is not empty and is not a zscore output (2 entries: _SUCCESS, "
        "part-00000.parquet); its _SUCCESS was not written by zscore; zscore replaces only an "
        "empty directory or its own output: empty it or choose another path")
    assert (spark / "_SUCCESS").read_bytes() == b""
    # The remedy works: emptied, the directory is used.
    for p in out.iterdir():
        p.rmdir() if p.is_dir() else p.unlink()
    code, _, err = zscore(capsys, "run", src, out, "-q")
    assert code == 0, err


def test_a_zscore_output_needs_overwrite_and_then_is_replaced(src, tmp_path, capsys):
    out = tmp_path / "out"
    assert zscore(capsys, "run", src, out, "-q")[0] == 0
    assert refused(capsys, "run", src, out) == (
        f"output {out} exists and holds a zscore output; pass --overwrite to replace it or "
        "choose another path")
    code, _, err = zscore(capsys, "run", src, out, "--overwrite", "-q")
    assert code == 0, err


# ---------------------------------------------------------------- a single input file
def test_a_single_input_file_and_a_link_to_one(src, tmp_path, capsys):
    part = src / "day=2026-01-01" / "part-0.parquet"
    (tmp_path / "latest.parquet").symlink_to(part)
    code, _, err = zscore(capsys, "run", tmp_path / "latest.parquet", tmp_path / "out", "-q")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("_")) \
        == ["latest.parquet"]  # named as given, like a link inside a directory
    assert refused(capsys, "run", part, part) == (
        f"output {part} is the input {part}; choose an output outside the input")
    assert refused(capsys, "fit", part, "--stats", part) == (
        f"statistics file {part} is the input {part}; write it outside the input")
    assert refused(capsys, "fit", part, "--stats", tmp_path / "s.json", "--filter",
                   "day >= 2026-01-01") == (
        f"--filter 'day >= 2026-01-01' needs a directory of hive partitions, but the input "
        f"{part} is one file")


def test_an_input_linking_into_the_old_output_is_not_overwritten(src, tmp_path, capsys):
    out = tmp_path / "out"
    assert zscore(capsys, "run", src, out, "-q")[0] == 0
    # The input now links to a file of the output: replacing the output would delete it.
    (src / "day=2026-01-01" / "part-9.parquet").symlink_to(out / "day=2026-01-01" /
                                                            "part-0.parquet")
    before = snapshot(out)
    assert refused(capsys, "run", src, out, "--overwrite") == (
        f"output {out} contains {out}/day=2026-01-01/part-0.parquet, which the input {src} "
        "links to (from day=2026-01-01/part-9.parquet); choose an output outside the input")
    assert snapshot(out) == before


def test_relative_paths_trailing_slashes_and_a_parent_that_is_a_file(src, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refused(capsys, "run", "in/", "./in/day=2026-01-01/../x/") == (
        "output ./in/day=2026-01-01/../x/ lies inside the input in/; choose an output outside "
        "the input")
    assert refused(capsys, "run", "in", f"{tmp_path}/in/") == (
        f"output {tmp_path}/in/ is the input in; choose an output outside the input")
    (tmp_path / "blocker").write_text("a file")
    assert refused(capsys, "run", "in", "blocker/out") == (
        f"output blocker/out cannot be created: {tmp_path / 'blocker'} is not a directory")
    assert sorted(os.listdir(tmp_path)) == ["blocker", "in"]


def test_transform_may_read_its_statistics_from_the_output_it_replaces(src, tmp_path, capsys):
    out = tmp_path / "out"
    assert zscore(capsys, "run", src, out, "-q")[0] == 0
    code, _, err = zscore(capsys, "transform", src, out, "--stats", out / "_stats.json",
                          "--overwrite", "-q")
    assert code == 0, err


def test_link_loops_as_destinations_are_refused(src, tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert refused(capsys, "run", src, tmp_path / "loop") == (
        f"output {tmp_path / 'loop'} is a symbolic link loop; remove it")
    assert refused(capsys, "fit", src, "--stats", tmp_path / "loop") == (
        f"statistics file {tmp_path / 'loop'} is a symbolic link loop; remove it")
    assert refused(capsys, "fit", src, "--stats", tmp_path / "s.json", "--cache",
                   tmp_path / "loop" / "c") == (
        f"cache {tmp_path / 'loop' / 'c'} cannot be created: {tmp_path / 'loop'} is a symbolic "
        "link loop")
    assert sorted(os.listdir(tmp_path)) == ["in", "loop"]


def test_stats_given_as_a_link_is_written_through_it(src, tmp_path, capsys):
    (tmp_path / "store").mkdir()
    (tmp_path / "s.json").symlink_to(tmp_path / "store" / "s.json")  # dangling until written
    for _ in range(2):  # created, then replaced: the link stays a link
        code, _, err = zscore(capsys, "fit", src, "--stats", tmp_path / "s.json", "-q")
        assert code == 0, err
        assert (tmp_path / "s.json").is_symlink()
        assert json.loads((tmp_path / "store" / "s.json").read_text())["features"]
    os.mkfifo(tmp_path / "pipe")
    assert refused(capsys, "fit", tmp_path / "pipe", "--stats", tmp_path / "t.json") == (
        f"input {tmp_path / 'pipe'} is a named pipe, not a directory or a Parquet file")


def test_a_mount_point_as_output_is_refused_before_compute(src, tmp_path, capsys):
    mnt = tmp_path / "volume"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        # Before, the run computed everything, then rename() said EBUSY: exit 1, every retry.
        assert refused(capsys, "run", src, mnt) == (
            f"output {mnt} is a mount point, which cannot be replaced by renaming a finished "
            "directory into its place (how zscore publishes); give a directory inside it, e.g. "
            f"{mnt}/out")
        code, _, err = zscore(capsys, "run", src, mnt / "out", "-q")  # the remedy
        assert code == 0, err
        assert sorted(os.listdir(mnt)) == ["out"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
