"""Delta Lake tables written by deltalake itself: live rows only, versions, features, output."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from procs import error_line, zscore


def exact(values) -> tuple[float, float]:
    """Mean and population std with rationals: the independent yardstick."""
    xs = [Fraction(float(v)) for v in values]
    mean = sum(xs, Fraction(0)) / len(xs)
    m2 = sum(((x - mean) ** 2 for x in xs), Fraction(0))
    return float(mean), math.sqrt(float(m2 / len(xs)))


def rows(n: int, seed: int, offset: float) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"day": np.repeat(["2026-01-01", "2026-01-02"], n // 2),
                     "x": rng.normal(offset, 3.0, n),
                     "k": rng.integers(-1000, 1000, n)})


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    """Version 0: 20,000 rows; 1: overwritten by 10,000 others; 2: a delete of some of them."""
    path = tmp_path_factory.mktemp("delta") / "events"
    write_deltalake(path, rows(20_000, 1, 100.0), partition_by=["day"])
    write_deltalake(path, rows(10_000, 2, -50.0), partition_by=["day"], mode="overwrite")
    DeltaTable(path).delete("x > -48.0")
    return path


def live(path: Path, version: int | None = None) -> pa.Table:
    """The rows deltalake itself reads at ``version``."""
    return DeltaTable(path, version=version).to_pyarrow_table()


def check_stats(stats_path: Path, table: pa.Table) -> dict:
    stats = json.loads(stats_path.read_text())
    assert stats["input"]["rows"] == table.num_rows
    for name in ("x", "k"):
        mean, std = exact(table.column(name).to_pylist())
        got = stats["features"][name]
        assert got["count"] == table.num_rows
        assert got["mean"] == pytest.approx(mean, rel=1e-12, abs=1e-12)
        assert got["std"] == pytest.approx(std, rel=1e-12)
    return stats


def test_an_overwritten_table_counts_only_its_live_rows(history, tmp_path, capsys):
    # The bug of issue 13: read as loose Parquet the directory holds 30,000 rows.
    assert sum(pq.read_metadata(p).num_rows for p in history.rglob("*.parquet")) > 20_000
    table = live(history)
    assert 0 < table.num_rows < 10_000  # the delete removed some of the 10,000
    code, _, err = zscore(capsys, "fit", history, "--stats", tmp_path / "s.json")
    assert code == 0, err
    stats = check_stats(tmp_path / "s.json", table)
    assert stats["input"]["table"] == {"format": "delta", "uri": str(history.resolve()),
                                       "version": 2, "partition_columns": ["day"]}


def test_the_issue_case_20000_rows_on_disk_10000_in_the_table(tmp_path, capsys):
    path = tmp_path / "t"
    write_deltalake(path, rows(10_000, 3, 5.0))
    write_deltalake(path, rows(10_000, 4, 7.0), mode="overwrite")
    code, out, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json")
    assert code == 0, err
    assert "on 10,000 rows in 1 files" in out
    check_stats(tmp_path / "s.json", live(path))
    # Loose reading, asked for: every file on disk.
    code, out, err = zscore(capsys, "fit", path, "--stats", tmp_path / "loose.json",
                            "--input-format", "parquet")
    assert code == 0, err
    assert "on 20,000 rows in 2 files" in out


@pytest.mark.parametrize("version", [0, 1])
def test_older_versions_by_number_and_by_time(history, tmp_path, capsys, version):
    code, _, err = zscore(capsys, "fit", history, "--stats", tmp_path / "v.json",
                          "--version", version)
    assert code == 0, err
    check_stats(tmp_path / "v.json", live(history, version))
    commits = {h["version"]: h["timestamp"] for h in DeltaTable(history).history()}
    assert commits[version] < commits[version + 1]
    ms = commits[version]  # whole milliseconds: a float division may land a tick earlier
    when = (dt.datetime.fromtimestamp(ms // 1000, dt.UTC)
            + dt.timedelta(milliseconds=ms % 1000)).isoformat()
    code, _, err = zscore(capsys, "fit", history, "--stats", tmp_path / "t.json",
                          "--as-of", when)
    assert code == 0, err
    stats = check_stats(tmp_path / "t.json", live(history, version))
    assert stats["input"]["table"]["version"] == version
    assert stats["input"]["table"]["timestamp"] == when


@pytest.mark.parametrize("args, message", [
    (["--version", "9"], "Delta table {path} has no version 9: its current version is 2"),
    (["--as-of", "2001-01-01T00:00:00Z"], "Delta table {path} has no version as of "
                                          "2001-01-01T00:00:00+00:00: its first commit"),
    (["--as-of", "yesterday"], "--as-of 'yesterday' is not an ISO 8601 time, e.g. --as-of "
                               "2026-01-31T12:00:00Z"),
    (["--version", "1", "--as-of", "2026-01-01"], "not both"),
    (["--snapshot-id", "3"], "is not an Iceberg table"),
])
def test_bad_versions_exit_2(history, tmp_path, capsys, args, message):
    code, _, err = zscore(capsys, "fit", history, "--stats", tmp_path / "s.json", *args)
    assert code == 2
    assert message.format(path=history) in error_line(err)
    assert not (tmp_path / "s.json").exists()


def test_partition_filters_prune_the_log_not_the_directory(history, tmp_path, capsys):
    copy = shutil.copytree(history, tmp_path / "t")
    # Junk that only a directory listing would meet, and a live file of the other day
    # gone from disk: pruned from the log, the filtered fit never touches either.
    (copy / "day=2026-01-01" / "junk.parquet").write_bytes(b"not parquet")
    table = live(copy)
    gone = next(p for p in DeltaTable(copy).file_uris() if "day=2026-01-02" in p)
    os.unlink(gone)
    code, _, err = zscore(capsys, "fit", copy, "--stats", tmp_path / "s.json",
                          "--filter", "day == 2026-01-01")
    assert code == 0, err
    day = table.filter(pa.compute.equal(table.column("day"), "2026-01-01"))
    stats = check_stats(tmp_path / "s.json", day)
    assert stats["input"]["filters"] == ["day == 2026-01-01"]
    code, _, err = zscore(capsys, "fit", copy, "--stats", tmp_path / "all.json")
    assert code == 1 or code == 2
    assert os.path.basename(gone) in error_line(err)
    code, _, err = zscore(capsys, "fit", copy, "--stats", tmp_path / "s.json",
                          "--filter", "hour == 1")
    assert code == 2
    assert "'hour', which is not a partition column of the table" in error_line(err)


def test_the_cache_reuses_moments_of_a_table(history, tmp_path, capsys):
    args = ["fit", history, "--cache", tmp_path / "cache"]
    code, _, err = zscore(capsys, *args, "--stats", tmp_path / "a.json")
    assert code == 0, err
    code, _, err = zscore(capsys, *args, "--stats", tmp_path / "b.json")
    assert code == 0, err
    files = len(DeltaTable(history).file_uris())
    assert f"cache: {files} of {files} files' moments reused, 0 read" in err
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["features"] == b["features"]


def test_column_mapping_is_refused_naming_the_feature(tmp_path, capsys):
    path = tmp_path / "mapped"
    write_deltalake(path, rows(100, 5, 0.0), configuration={"delta.columnMapping.mode": "name"})
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json")
    assert code == 2
    assert (f"Delta table {path} uses column mapping (table feature columnMapping, mode "
            "'name')") in error_line(err)


def test_deletion_vectors_enabled_but_unused_are_read(tmp_path, capsys):
    path = tmp_path / "dv"
    data = rows(1000, 6, 1.0)
    write_deltalake(path, data, configuration={"delta.enableDeletionVectors": "true"})
    assert "deletionVectors" in DeltaTable(path).protocol().reader_features
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json")
    assert code == 0, err
    check_stats(tmp_path / "s.json", data)


def read_log(path: Path) -> list[str]:
    """Live file paths by replaying _delta_log/*.json by hand (not through deltalake)."""
    live_files: dict[str, bool] = {}
    for commit in sorted((path / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live_files[action["add"]["path"]] = True
            elif "remove" in action:
                live_files.pop(action["remove"]["path"], None)
    return sorted(live_files)


def test_output_is_a_delta_table_that_deltalake_and_duckdb_read_alike(history, tmp_path,
                                                                      capsys):
    out = tmp_path / "out"
    code, _, err = zscore(capsys, "run", history, out, "--no-report")
    assert code == 0, err
    table = DeltaTable(out)
    assert table.version() == 0
    assert table.metadata().partition_columns == ["day"]
    got = table.to_pyarrow_table().sort_by([("day", "ascending"), ("k", "ascending"),
                                            ("x", "ascending")])
    source = live(history)
    assert got.num_rows == source.num_rows
    mean, std = exact(source.column("x").to_pylist())
    expected = sorted(zip(source.column("day").to_pylist(), source.column("k").to_pylist(),
                          ((Fraction(v) - Fraction(mean)) / Fraction(std)
                           for v in source.column("x").to_pylist()), strict=True))
    for (day, _, z), g_day, g_x in zip(expected, got.column("day").to_pylist(),
                                       got.column("x").to_pylist(), strict=True):
        assert g_day == day
        assert g_x == pytest.approx(float(z), rel=1e-12, abs=1e-12)
    files = [str(out / p) for p in read_log(out)]
    duck = duckdb.sql(f"select day::varchar as day, x, k from read_parquet({files!r}, "
                      "hive_partitioning=true) "
                      "order by day, k, x").to_arrow_table()
    assert duck.column("x").to_pylist() == got.column("x").to_pylist()
    assert duck.column("day").to_pylist() == got.column("day").to_pylist()
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert manifest["output_format"] == "delta"
    assert manifest["input"]["table"]["version"] == 2


def test_overwrite_rerun_is_the_next_version(history, tmp_path, capsys):
    out = tmp_path / "out"
    assert zscore(capsys, "run", history, out, "--no-report", "--version", "1")[0] == 0
    first = set(DeltaTable(out).file_uris())
    code, _, err = zscore(capsys, "run", history, out, "--no-report", "--overwrite")
    assert code == 0, err
    table = DeltaTable(out)
    assert table.version() == 1
    assert [h["operation"] for h in table.history()] == ["CREATE OR REPLACE TABLE",
                                                         "CREATE TABLE"]
    assert table.to_pyarrow_table().num_rows == live(history).num_rows
    assert not first & set(table.file_uris())
    # The previous version's files went with the replaced directory (documented).
    assert not any(os.path.exists(p) for p in first)
    data = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert data == read_log(out)


def test_output_format_parquet_writes_plain_files(history, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = zscore(capsys, "run", history, out, "--no-report", "--output-format",
                          "parquet")
    assert code == 0, err
    assert not (out / "_delta_log").exists()
    back = duckdb.sql(f"select count(*) from read_parquet('{out}/**/*.parquet', "
                      "hive_partitioning=true)").fetchall()
    assert back == [(live(history).num_rows,)]


def test_loose_parquet_can_become_a_delta_table(datasets, tmp_path, capsys):
    src = datasets.sample()
    code, _, err = zscore(capsys, "run", src, tmp_path / "out", "--exclude", "id,label",
                          "--no-report", "--output-format", "delta")
    assert code == 0, err
    table = DeltaTable(tmp_path / "out")
    assert table.metadata().partition_columns == ["day"]
    expected = sum(pq.read_metadata(p).num_rows for p in src.rglob("*.parquet"))
    assert table.to_pyarrow_table().num_rows == expected


Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def inline_deletion_vector(rows_deleted: list[int]) -> dict:
    """A Delta inline deletion vector (protocol: magic, 64-bit portable roaring, Z85).

    No Python writer makes deletion vectors (delta-rs rewrites files); this one is
    checked below by deltalake itself, which decodes and applies it.
    """
    import struct

    from pyroaring import BitMap

    data = (struct.pack("<I", 1681511377) + struct.pack("<Q", 1) + struct.pack("<I", 0)
            + BitMap(rows_deleted).serialize())
    padded = data + b"\0" * (-len(data) % 4)
    text = []
    for i in range(0, len(padded), 4):
        value, chunk = int.from_bytes(padded[i:i + 4], "big"), []
        for _ in range(5):
            value, digit = divmod(value, 85)
            chunk.append(Z85[digit])
        text.extend(reversed(chunk))
    return {"storageType": "i", "pathOrInlineDv": "".join(text), "sizeInBytes": len(data),
            "cardinality": len(rows_deleted)}


def test_a_live_deletion_vector_is_refused_naming_the_feature(tmp_path, capsys):
    from deltalake import QueryBuilder

    path = tmp_path / "dv"
    write_deltalake(path, pa.table({"x": [1.0, 2.0, 3.0, 4.0]}),
                    configuration={"delta.enableDeletionVectors": "true"})
    first = path / "_delta_log" / "00000000000000000000.json"
    add = next(json.loads(line)["add"] for line in first.read_text().splitlines()
               if '"add"' in line)
    remove = {"path": add["path"], "dataChange": True, "deletionTimestamp": 1,
              "extendedFileMetadata": True, "partitionValues": {}, "size": add["size"]}
    commit = [{"commitInfo": {"timestamp": add["modificationTime"] + 1, "operation": "DELETE"}},
              {"remove": remove},
              {"add": {**add, "deletionVector": inline_deletion_vector([0, 3])}}]
    (path / "_delta_log" / "00000000000000000001.json").write_text(
        "".join(json.dumps(a) + "\n" for a in commit))
    live_rows = QueryBuilder().register("t", DeltaTable(path)).execute("select x from t")
    assert sorted(pa.table(live_rows.read_all()).column("x").to_pylist()) == [2.0, 3.0]
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json")
    assert code == 2
    assert (f"Delta table {path}: 1 live file(s) have deletion vectors (table feature "
            f"deletionVectors), e.g. {os.path.basename(add['path'])}") in error_line(err)


def test_partition_values_that_need_escaping_and_nulls_round_trip(tmp_path, capsys):
    path = tmp_path / "odd"
    values = ["a b", "c/d", "e%f", "g=h", None]
    write_deltalake(path, pa.table({"p": values, "x": [1.0, 2.0, 3.0, 4.0, 5.0]}),
                    partition_by=["p"])
    code, _, err = zscore(capsys, "run", path, tmp_path / "out", "--no-report")
    assert code == 0, err
    back = DeltaTable(tmp_path / "out").to_pyarrow_table().sort_by("x")
    assert back.column("p").to_pylist() == values
    mean, std = exact([1.0, 2.0, 3.0, 4.0, 5.0])
    assert back.column("x").to_pylist() == pytest.approx([(v - mean) / std for v in
                                                          (1.0, 2.0, 3.0, 4.0, 5.0)],
                                                         rel=1e-12)
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json", "--filter",
                          "p == c/d")
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["features"]["x"]["mean"] == 2.0


def test_python_api_reads_a_version_and_transforms_into_a_delta_table(history, tmp_path):
    from distributed import Client, LocalCluster

    from pipeline import TableOptions, fit, transform_dataset

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster, \
            Client(cluster) as client:
        stats = fit(history, table=TableOptions(version=1), client=client)
        assert stats.input["table"]["version"] == 1
        table = live(history, 1)
        assert stats.features["x"].mean == pytest.approx(exact(table.column("x").to_pylist())[0],
                                                         rel=1e-12)
        result = transform_dataset(history, tmp_path / "out", stats, report=False,
                                   table=TableOptions(version=1), client=client)
    assert result.manifest["output_format"] == "delta"
    assert DeltaTable(tmp_path / "out").to_pyarrow_table().num_rows == table.num_rows
