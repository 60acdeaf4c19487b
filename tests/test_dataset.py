"""Listing, hive partitions, footer validation and feature selection."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.dataset import fingerprint, list_files, read_footers
from pipeline.errors import DataError, InputError
from pipeline.location import resolve
from pipeline.schema import Schema, select_features, validate


def _df(n=10, **cols):
    base = {"id": range(n), "x": [float(i) for i in range(n)], "s": ["a"] * n}
    base.update(cols)
    return pd.DataFrame(base)


def _inspect(path, features=None, exclude=()):
    loc = resolve(path)
    files = list_files(loc)
    footers = read_footers(loc.fs, files)
    keys = tuple(k for k, _ in files[0].partition)
    return files, validate(footers, keys, features, exclude)


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


def test_every_problem_is_listed_with_its_file(tmp_path):
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
        _inspect(tmp_path)
    msg = str(info.value)
    assert "d.parquet is empty (0 bytes)" in msg
    assert "e.parquet is not a readable Parquet file" in msg
    assert "g.parquet has column 'x' twice; rewrite the file with distinct column names" in msg
    assert "column 'x' is large_string in b.parquet but double in 3 other file(s)" in msg
    assert "'s'" not in msg  # a pass-through column may be missing from a file
    assert msg.startswith("4 problem(s) in the input")


def test_selected_feature_missing_from_a_file(tmp_path):
    pq.write_table(pa.Table.from_pandas(_df(y=[1.0] * 10)), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "b.parquet")
    with pytest.raises(DataError, match="selected feature 'y' is missing from b.parquet"):
        _inspect(tmp_path)


def test_numeric_width_may_differ_for_a_feature(tmp_path):
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df(x=list(range(10)))), tmp_path / "b.parquet")
    _, (schema, chosen) = _inspect(tmp_path)
    assert "x" in chosen and schema.field("x").type == pa.float64() and schema.notes == ()
    _, (schema, chosen) = _inspect(tmp_path, exclude="x")  # passed through file by file
    assert "x" not in chosen and schema.varying == ("x",)
    assert schema.notes == ("pass-through column 'x' is int64 in b.parquet but double in 1 "
                            "other file(s); each output file keeps the type of its input file",)


def test_pass_through_drift_is_a_warning_naming_the_column(tmp_path):
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df(s=[1.5] * 10)), tmp_path / "b.parquet")
    pq.write_table(pa.Table.from_pandas(_df().drop(columns="s")), tmp_path / "c.parquet")
    _, (schema, chosen) = _inspect(tmp_path)
    assert chosen == ["id", "x"] and schema.varying == ("s",)
    assert schema.notes == (
        "pass-through column 's' is missing from c.parquet but present in 2 other file(s); "
        "each output file keeps the columns of its input file",
        "pass-through column 's' is double in b.parquet but large_string in 1 other file(s); "
        "each output file keeps the type of its input file")


def test_a_selected_feature_must_be_numeric_and_present_everywhere(tmp_path):
    pq.write_table(pa.Table.from_pandas(_df(y=[1.0] * 10)), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_df(x=["1"] * 10)), tmp_path / "b.parquet")
    pq.write_table(pa.Table.from_pandas(_df(y=[2.0] * 10)), tmp_path / "c.parquet")
    with pytest.raises(DataError) as info:
        _inspect(tmp_path, features="x,y")
    assert str(info.value) == (
        "2 problem(s) in the input: column 'x' is large_string in b.parquet but double in 2 "
        "other file(s); exclude it with --exclude x or fix the file; selected feature 'y' is "
        "missing from b.parquet but present in 2 other file(s); exclude it with --exclude y or "
        "fix the files")


def test_partition_keys_are_not_features(tmp_path):
    (tmp_path / "k=1").mkdir()
    pq.write_table(pa.Table.from_pandas(_df()), tmp_path / "k=1" / "a.parquet")
    _, (schema, chosen) = _inspect(tmp_path)
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
])
def test_select_features_errors(features, exclude, message):
    s = _schema(a1=pa.int64(), txt=pa.string())
    with pytest.raises(InputError, match=message):
        select_features(s, features, exclude)


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
