"""Listing, hive partitions, footer validation and feature selection."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.dataset import fingerprint, list_files, load_dataset
from pipeline.errors import DataError, InputError
from pipeline.schema import Schema, select_features
from pipeline.session import Session
from pipeline.storage import resolve


def _df(n=10, **cols):
    base = {"id": range(n), "x": [float(i) for i in range(n)], "s": ["a"] * n}
    base.update(cols)
    return pd.DataFrame(base)


@pytest.fixture
def load(cluster):
    """``load(path, features, exclude)``: the real ``load_dataset`` on the session's cluster."""
    def run(path, features=None, exclude=()):
        dataset, chosen = load_dataset(resolve(path), Session(cluster).mapper, features, exclude)
        return dataset.files, (dataset.schema, chosen)

    return run


def test_hidden_and_underscore_files_are_ignored(tmp_path):
    for rel in ["day=1/part-0.parquet", "day=2/part-0.parquet"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(_df()), tmp_path / rel)
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "day=1" / ".part-0.parquet.crc").write_text("x")
    (tmp_path / "_tmp").mkdir()
    (tmp_path / "_tmp" / "junk.parquet").write_text("x")
    files = list_files(resolve(tmp_path))
    assert [f.rel for f in files] == ["day=1/part-0.parquet", "day=2/part-0.parquet"]
    assert files[0].partition == (("day", "1"),)


def test_fingerprint_changes_with_content(tmp_path):
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "a.parquet")
    before = fingerprint(list_files(resolve(tmp_path)))
    pq.write_table(pa.Table.from_pandas(_df(11)), tmp_path / "a.parquet")
    assert fingerprint(list_files(resolve(tmp_path))) != before


def test_every_problem_is_listed_with_its_file(load, tmp_path):
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df(x=["1"] * 10)), tmp_path / "b.parquet")
    pq.write_table(pa.Table.from_pandas(_df().drop(columns="s")), tmp_path / "c.parquet")
    (tmp_path / "d.parquet").write_bytes(b"")
    good = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "e.parquet").write_bytes(good[: len(good) // 2])
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "f.parquet")
    pq.write_table(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["x", "x"]),
                   tmp_path / "g.parquet")
    with pytest.raises(DataError) as info:
        load(tmp_path)
    msg = str(info.value)
    assert "d.parquet is empty (0 bytes)" in msg
    assert "e.parquet is not a readable Parquet file" in msg
    assert "g.parquet has column 'x' twice; rewrite the file with distinct column names" in msg
    assert "column 'x' is large_string in b.parquet but double in 3 other file(s)" in msg
    assert "'s'" not in msg  # a pass-through column may be missing from a file
    assert msg.startswith("4 problem(s) in the input")


def test_selected_feature_missing_from_a_file(load, tmp_path):
    pq.write_table(pa.Table.from_pandas(_df(y=[1.0] * 10)), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "b.parquet")
    with pytest.raises(DataError, match="selected feature 'y' is missing from b.parquet"):
        load(tmp_path)


def test_numeric_width_may_differ_for_a_feature(load, tmp_path):
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df(x=list(range(10)))), tmp_path / "b.parquet")
    _, (schema, chosen) = load(tmp_path)
    assert "x" in chosen and schema.field("x").type == pa.float64() and schema.notes == ()
    _, (schema, chosen) = load(tmp_path, exclude="x")  # passed through file by file
    assert "x" not in chosen and schema.varying == ("x",)
    assert schema.notes == ("pass-through column 'x' is int64 in b.parquet but double in 1 "
                            "other file(s); each output file keeps the type of its input file",)


def test_pass_through_drift_is_a_warning_naming_the_column(load, tmp_path):
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df(s=[1.5] * 10)), tmp_path / "b.parquet")
    pq.write_table(pa.Table.from_pandas(_df().drop(columns="s")), tmp_path / "c.parquet")
    _, (schema, chosen) = load(tmp_path)
    assert chosen == ["id", "x"] and schema.varying == ("s",)
    assert schema.notes == (
        "pass-through column 's' is missing from c.parquet but present in 2 other file(s); "
        "each output file keeps the columns of its input file",
        "pass-through column 's' is double in b.parquet but large_string in 1 other file(s); "
        "each output file keeps the type of its input file")


def test_a_selected_feature_must_be_numeric_and_present_everywhere(load, tmp_path):
    pq.write_table(pa.Table.from_pandas(_df(y=[1.0] * 10)), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df(x=["1"] * 10)), tmp_path / "b.parquet")
    pq.write_table(pa.Table.from_pandas(_df(y=[2.0] * 10)), tmp_path / "c.parquet")
    with pytest.raises(DataError) as info:
        load(tmp_path, features="x,y")
    assert info.value.render(cli=True) == (
        "2 problem(s) in the input: column 'x' is large_string in b.parquet but double in 2 "
        "other file(s); exclude it with --exclude x or fix the file; selected feature 'y' is "
        "missing from b.parquet but present in 2 other file(s); exclude it with --exclude y or "
        "fix the files")
    assert "exclude it with exclude='x' or fix the file" in str(info.value)


def test_partition_keys_are_not_features(load, tmp_path):
    (tmp_path / "k=1").mkdir()
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "k=1" / "a.parquet")
    _, (schema, chosen) = load(tmp_path)
    assert schema.partition_keys == ("k",) and chosen == ["id", "x"]


def _schema(**types):
    return Schema(fields=tuple(pa.field(k, v) for k, v in types.items()), partition_keys=())


def test_select_features_globs_and_order():
    s = _schema(b2=pa.float32(), a1=pa.int64(), txt=pa.string(), b1=pa.float64())
    assert select_features(s) == ["b2", "a1", "b1"]
    assert select_features(s, "b*") == ["b2", "b1"]
    assert select_features(s, "b1,a1") == ["a1", "b1"]
    assert select_features(s, None, "a*") == ["b2", "b1"]


@pytest.mark.parametrize("features, exclude, message", [
    ("nope", "", "--features 'nope' matches no column"),
    ("txt", "", "column 'txt' is string, not numeric"),
    (None, "zz", "--exclude 'zz' matches no column"),
    ("a1", "a1", "no numeric feature column selected"),
    ([], "", "--features is empty"),
])
def test_select_features_errors(features, exclude, message):
    s = _schema(a1=pa.int64(), txt=pa.string())
    with pytest.raises(InputError) as info:
        select_features(s, features, exclude)
    assert message in info.value.render(cli=True)
    assert "--" not in str(info.value)  # a Python caller reads keywords, not flags


def test_missing_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_files(resolve(tmp_path / "nope"))
    (tmp_path / "_only").write_text("")
    with pytest.raises(InputError, match="holds no data files"):
        list_files(resolve(tmp_path))


# ------------------------------------------------- through the command line
def _zscore(capsys, *args) -> tuple[int, str, str]:
    from pipeline.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_duplicate_column_is_named_as_such(tmp_path, capsys):
    src = tmp_path / "in"
    (src / "day=1").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [1, 2]}), src / "day=1" / "good.parquet")
    pq.write_table(pa.Table.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0]),
                                         pa.array([1, 2])], names=["a", "a", "b"]),
                   src / "day=1" / "dup.parquet")
    code, out, err = _zscore(capsys, "run", src, tmp_path / "out", "--no-report")
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == ("zscore: error: day=1/dup.parquet has column 'a' twice; "
                                    "rewrite the file with distinct column names")
    assert [line for line in err.splitlines() if "error" in line] == [err.splitlines()[-1]]
    assert not (tmp_path / "out").exists()


def test_a_stored_column_named_like_a_hive_key_passes_through(tmp_path, capsys):
    """Decision: accepted, never a feature (its name is the key's), copied unchanged, warned."""
    src = tmp_path / "in"
    for day, values in (("1", [5, 6]), ("2", [7, 8])):
        (src / f"day={day}").mkdir(parents=True)
        pq.write_table(pa.table({"x": [1.0, float(day) * 3], "day": values}),
                       src / f"day={day}" / "a.parquet")
    code, out, err = _zscore(capsys, "run", src, tmp_path / "out", "--no-report", "-q")
    assert code == 0, err
    assert err.splitlines() == [
        next(line for line in err.splitlines() if "warning:" in line)]
    assert err.splitlines()[0].endswith(
        "zscore: warning: column 'day' is stored in the files and is also a hive partition "
        "key; the stored column is passed through unchanged, never normalized")
    for day, values in (("1", [5, 6]), ("2", [7, 8])):
        table = pq.read_table(tmp_path / "out" / f"day={day}" / "a.parquet")
        assert table.column("day").to_pylist() == values
        assert table.schema.field("day").type == pa.int64()
    assert "day" not in json.loads((tmp_path / "out" / "_stats.json").read_text())["features"]
    code, _, err = _zscore(capsys, "run", src, tmp_path / "o2", "--features", "day")
    assert code == 2 and err.splitlines()[-1] == (
        "zscore: error: --features 'day' is a hive partition key; partition keys (and stored "
        "columns of the same name) are passed through, never normalized")


@pytest.mark.parametrize("files, message", [
    ({"a.parquet": pa.table({"x": [1.0]}), "b.parquet": pa.table({})},
     "b.parquet has no columns; remove it or write it with the dataset's columns"),
    ({"a.parquet": pa.table({"x": pa.array([], pa.float64())})},
     "the input has no rows: every file is empty; there is nothing to fit"),
    ({"a.parquet": pa.table({"s": ["a"], "b": [True], "d": pa.array([1], pa.decimal128(5, 0))})},
     "no integer or floating column to normalize; the columns are s (string), b (bool), "
     "d (decimal128(5, 0))"),
])
def test_degenerate_inputs_are_one_line_exit_2(tmp_path, capsys, files, message):
    src = tmp_path / "in"
    src.mkdir()
    for name, table in files.items():
        pq.write_table(table, src / name)
    code, out, err = _zscore(capsys, "run", src, tmp_path / "out")
    assert code == 2 and out == ""
    assert [line for line in err.splitlines() if "error" in line] == [f"zscore: error: {message}"]
    assert not (tmp_path / "out").exists()


def test_a_zero_row_file_is_mirrored_and_a_directory_named_x_parquet_is_a_directory(tmp_path,
                                                                                    capsys):
    src = tmp_path / "in"
    (src / "x.parquet").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1.0, 3.0]}), src / "a.parquet")
    pq.write_table(pa.table({"x": pa.array([], pa.float64())}), src / "b.parquet")
    pq.write_table(pa.table({"x": [5.0]}), src / "x.parquet" / "part-0.parquet")
    code, out, err = _zscore(capsys, "run", src, tmp_path / "out", "-q", "--no-report")
    assert code == 0, err
    assert out.startswith("run: 3 rows in 3 files")
    assert pq.read_table(tmp_path / "out" / "b.parquet").num_rows == 0
    assert pq.read_table(tmp_path / "out" / "x.parquet" / "part-0.parquet").column(
        "x").to_pylist() == [pytest.approx(2 / (8 / 3) ** 0.5, rel=1e-15)]  # (5 - 3) / σ


# ------------------------------------------------------------ links: nothing skipped
def _linked_input(tmp_path):
    """in/: a.parquet (a file), b.parquet -> a file outside, c.parquet -> a.parquet,
    sub -> a directory outside holding d.parquet."""
    src, ext = tmp_path / "in", tmp_path / "elsewhere"
    (ext / "dir").mkdir(parents=True)
    src.mkdir()
    pq.write_table(pa.Table.from_pandas(_df(10)), src / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df(20)), ext / "b.parquet")
    pq.write_table(pa.Table.from_pandas(_df(30)), ext / "dir" / "d.parquet")
    (src / "b.parquet").symlink_to(ext / "b.parquet")
    (src / "c.parquet").symlink_to("a.parquet")
    (src / "sub").symlink_to(ext / "dir")
    return src, ext


def test_linked_files_and_directories_are_listed_as_what_they_point_to(tmp_path):
    import os

    from pipeline.dataset import scan

    src, ext = _linked_input(tmp_path)
    listing = scan(resolve(src))
    assert [f.rel for f in listing.files] == ["a.parquet", "b.parquet", "c.parquet",
                                              "sub/d.parquet"]
    by_rel = {f.rel: f for f in listing.files}
    target = os.stat(ext / "b.parquet")
    assert by_rel["b.parquet"].size == target.st_size  # the target's identity, not the link's
    assert by_rel["b.parquet"].version == repr(target.st_mtime)
    assert sorted(listing.links) == [("b.parquet", str(ext / "b.parquet")),
                                     ("c.parquet", str(src / "a.parquet")),
                                     ("sub", str(ext / "dir"))]
    # The input itself given as a link: the same files.
    (tmp_path / "inlink").symlink_to(src)
    assert [f.rel for f in list_files(resolve(tmp_path / "inlink"))] == list(by_rel)


def test_linked_files_are_mirrored_as_regular_files(tmp_path, capsys):
    import shutil

    from conftest import snapshot

    from pipeline.cli import main

    src, _ = _linked_input(tmp_path)
    plain = tmp_path / "plain"
    shutil.copytree(src, plain, symlinks=False)  # the same data, links dereferenced
    before = snapshot(src)
    assert main(["run", str(src), str(tmp_path / "out"), "-q"]) == 0
    assert "70 rows in 4 files" in capsys.readouterr().out
    assert main(["run", str(plain), str(tmp_path / "ref"), "-q"]) == 0
    got, want = snapshot(tmp_path / "out"), snapshot(tmp_path / "ref")
    data = sorted(k for k in got if not k.startswith("_"))
    assert data == ["a.parquet", "b.parquet", "c.parquet", "sub/d.parquet"]
    assert all(got[k] == want[k] for k in data)
    assert not any((tmp_path / "out" / k).is_symlink() for k in data)
    assert not (tmp_path / "out" / "sub").is_symlink()
    assert snapshot(src) == before


def _broken(src, tmp):
    (src / "x.parquet").symlink_to(tmp / "gone.parquet")
    return f"{src}/x.parquet is a broken symbolic link (to {tmp / 'gone.parquet'}); restore " \
           "its target or remove it"


def _loop_to_an_ancestor(src, tmp):
    (src / "day=1" / "up").symlink_to(tmp)
    return f"{src}/day=1/up is a symbolic link to {tmp}, which contains the link itself: a " \
           "loop; remove it"


def _link_cycle(src, tmp):
    (src / "day=1" / "p.parquet").symlink_to(src / "day=1" / "q.parquet")
    (src / "day=1" / "q.parquet").symlink_to(src / "day=1" / "p.parquet")
    return f"{src}/day=1/p.parquet is a symbolic link loop; remove it"


def _named_pipe(src, tmp):
    import os

    os.mkfifo(src / "day=1" / "stream.parquet")
    return f"{src}/day=1/stream.parquet is a named pipe, not a Parquet file; remove it or " \
           "rename it to start with '_' or '.'"


@pytest.mark.parametrize("make", [_broken, _loop_to_an_ancestor, _link_cycle, _named_pipe])
def test_broken_links_loops_and_special_files_are_errors_naming_them(tmp_path, capsys, make):
    from pipeline.cli import main

    src = tmp_path / "in"
    (src / "day=1").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(_df()), src / "day=1" / "a.parquet")
    (src / "day=1" / ".#a.parquet").symlink_to("nowhere")  # hidden (an editor's lock): ignored
    message = make(src, tmp_path)
    with pytest.raises(DataError) as info:
        list_files(resolve(src))
    assert str(info.value) == message
    assert main(["fit", str(src), "--stats", str(tmp_path / "s.json")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"zscore: error: {message}"


def test_an_unreadable_directory_is_exit_1_naming_it(tmp_path):
    import os

    from procs import run_unprivileged

    src = tmp_path / "in"
    for day in (1, 2):
        (src / f"day={day}").mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(_df()), src / f"day={day}" / "a.parquet")
    os.chmod(src / "day=2", 0)
    try:
        r = run_unprivileged("fit", src, "--stats", tmp_path / "s.json")
    finally:
        os.chmod(src / "day=2", 0o755)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines()[-1] == (
        f"zscore: error: cannot list the input: {src}/day=2: Permission denied")
    # An input behind a directory we may not search exists: it is not "missing".
    os.chmod(tmp_path, 0o600)
    try:
        r = run_unprivileged("fit", src, "--stats", tmp_path.parent / f"{tmp_path.name}.json")
    finally:
        os.chmod(tmp_path, 0o755)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines()[-1] == (
        f"zscore: error: cannot read the input {src}: Permission denied")
    assert not (tmp_path / "s.json").exists()
    assert not (tmp_path.parent / f"{tmp_path.name}.json").exists()
