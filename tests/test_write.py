"""The transform pass's files: layout, encodings and types kept, bytes reproducible."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import write
from pipeline.cli import main


def _meta(path):
    md = pq.ParquetFile(path).metadata
    rg = md.row_group(0)
    return ({md.schema.column(j).path: rg.column(j).compression for j in range(md.num_columns)},
            {md.schema.column(j).path for j in range(md.num_columns)
             if any("DICTIONARY" in e for e in rg.column(j).encodings)},
            [md.row_group(i).num_rows for i in range(md.num_row_groups)])


def test_nested_columns_keep_their_codecs_dictionaries_and_values(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    n = 5000
    rng = np.random.default_rng(0)
    table = pa.table({
        "x": rng.normal(size=n),
        "s": pa.array([{"a": int(i), "b": f"v{i % 7}"} for i in range(n)]),
        "l": pa.array([[i, i + 1] for i in range(n)]),
        "cat": pa.array([f"c{i % 3}" for i in range(n)]).dictionary_encode(),
    })
    pq.write_table(table, src / "a.parquet", row_group_size=1200,
                   compression={"x": "zstd", "s.a": "snappy", "s.b": "gzip",
                                "l.list.element": "gzip", "cat": "zstd"},
                   use_dictionary=["s.b", "cat"])
    assert main(["run", str(src), str(tmp_path / "out"), "--features", "x", "-q"]) == 0
    codecs_in, dict_in, groups_in = _meta(src / "a.parquet")
    codecs_out, dict_out, groups_out = _meta(tmp_path / "out" / "a.parquet")
    assert codecs_out == codecs_in
    assert dict_out == dict_in - {"x"}
    assert groups_out == groups_in == [1200, 1200, 1200, 1200, 200]
    md = pq.ParquetFile(tmp_path / "out" / "a.parquet").metadata
    stats = {md.schema.column(j).path: md.row_group(0).column(j).is_stats_set
             for j in range(md.num_columns)}
    assert stats == {"x": False, "s.a": True, "s.b": True, "l.list.element": True, "cat": True}
    out = pq.read_table(tmp_path / "out" / "a.parquet")
    for name in ("s", "l", "cat"):
        assert out.column(name).equals(pq.read_table(src / "a.parquet").column(name))


def test_huge_row_groups_are_split(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"x": np.arange((1 << 20) + 5, dtype=np.float64)}), src / "a.parquet",
                   row_group_size=1 << 21)
    assert main(["run", str(src), str(tmp_path / "out"), "-q", "--no-report"]) == 0
    assert _meta(tmp_path / "out" / "a.parquet")[2] == [1 << 20, 5]


def test_an_empty_file_stays_an_empty_file_with_the_new_types(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"x": [1.0, 2.0], "i": [1, 2]}), src / "a.parquet")
    pq.write_table(pa.table({"x": pa.array([], pa.float64()), "i": pa.array([], pa.int64())}),
                   src / "b.parquet")
    assert main(["run", str(src), str(tmp_path / "out"), "-q"]) == 0
    empty = pq.read_table(tmp_path / "out" / "b.parquet")
    assert empty.num_rows == 0 and empty.schema.field("i").type == pa.float64()


def test_pandas_metadata_follows_the_new_types(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    df = pd.DataFrame({"i": [1, 2, 3], "s": ["a", "b", "c"]}, index=[10, 11, 12])
    df.to_parquet(src / "a.parquet")
    assert main(["run", str(src), str(tmp_path / "out"), "-q"]) == 0
    meta = json.loads(pq.read_schema(tmp_path / "out" / "a.parquet").metadata[b"pandas"])
    assert {c["name"]: c["numpy_type"] for c in meta["columns"]}["i"] == "float64"
    back = pd.read_parquet(tmp_path / "out" / "a.parquet")
    assert list(back.index) == [10, 11, 12] and back["i"].dtype == np.float64


@pytest.mark.parametrize("codec", ["zstd", "gzip", "none"])
def test_the_input_codec_is_kept(tmp_path, codec):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0]}), src / "a.parquet", compression=codec)
    assert main(["run", str(src), str(tmp_path / "out"), "-q", "--no-report"]) == 0
    assert set(_meta(tmp_path / "out" / "a.parquet")[0].values()) == {codec.upper()
                                                                       if codec != "none"
                                                                       else "UNCOMPRESSED"}


def test_a_codec_that_did_not_compress_a_feature_is_not_used_for_its_z_scores(tmp_path):
    """Random floats: uncompressed, at most 2 % above what snappy makes of the same values.

    A feature the codec did shrink, a dictionary-encoded feature and the
    pass-through columns keep the input's codec.
    """
    src = tmp_path / "in"
    src.mkdir()
    n = 20_000
    rng = np.random.default_rng(1)
    table = pa.table({
        "noise": rng.normal(size=n),
        "steps": rng.integers(0, 5, size=n) * 0.5,
        "coded": rng.choice(rng.normal(size=50), size=n),
        "note": [f"n{i % 11}" for i in range(n)],
    })
    pq.write_table(table, src / "a.parquet", compression="snappy", use_dictionary=["coded"])
    assert main(["run", str(src), str(tmp_path / "out"), "-q", "--no-report"]) == 0
    out = tmp_path / "out" / "a.parquet"
    assert _meta(out)[0] == {"noise": "UNCOMPRESSED", "steps": "SNAPPY", "coded": "SNAPPY",
                             "note": "SNAPPY"}
    # The reference: the same written values, all snappy, by pyarrow alone.
    pq.write_table(pq.read_table(out), tmp_path / "ref.parquet", compression="snappy",
                   use_dictionary=False)
    size = {p: {c.path_in_schema: c.total_compressed_size
                for c in (pq.ParquetFile(p).metadata.row_group(0).column(j) for j in range(4))}
            for p in (out, tmp_path / "ref.parquet")}
    assert size[out]["noise"] <= 1.02 * size[tmp_path / "ref.parquet"]["noise"]
    assert size[tmp_path / "ref.parquet"]["steps"] < 0.5 * n * 8  # what snappy is kept for
    # A small file (under 64 KiB a column) keeps its codec: compressing it costs microseconds.
    pq.write_table(table.slice(0, 1000), src / "a.parquet", compression="snappy")
    assert main(["run", str(src), str(tmp_path / "small"), "-q", "--no-report"]) == 0
    assert set(_meta(tmp_path / "small" / "a.parquet")[0].values()) == {"SNAPPY"}


def test_writer_options_never_dictionary_encode_features():
    from pipeline.plan import ColumnPlan, Plan

    plan = Plan(columns=(ColumnPlan.single("x", 0.0, 1.0),))
    assert write.writer_options({"x": "SNAPPY", "s": "SNAPPY"}, {"x", "s"}, plan) == {
        "compression": "snappy", "use_dictionary": ["s"], "write_statistics": ["s"]}
    assert write.writer_options({"x": "ZSTD", "s": "GZIP"}, set(), plan) == {
        "compression": {"x": "zstd", "s": "gzip"}, "use_dictionary": False,
        "write_statistics": ["s"]}
    assert write.writer_options({"x": "ZSTD"}, set(), plan)["write_statistics"] is False


def test_pass_through_columns_keep_each_files_own_type(tmp_path, capsys):
    """string vs double, two time zones, a column absent from one file: copied as they are."""
    src = tmp_path / "in"
    src.mkdir()
    files = {
        "a.parquet": pa.table({"x": [1.0, 2.0], "note": ["n1", "n2"],
                               "t": pa.array([1, 2], pa.timestamp("us", tz="UTC")),
                               "extra": [True, False]}),
        "b.parquet": pa.table({"x": [3.0, 5.0], "note": [0.5, 1.5],
                               "t": pa.array([3, 4], pa.timestamp("us", tz="Europe/Paris"))}),
    }
    for name, table in files.items():
        pq.write_table(table, src / name)
    assert main(["run", str(src), str(tmp_path / "out"), "-q"]) == 0
    err = capsys.readouterr().err
    warnings = [line.split("zscore: warning: ")[1] for line in err.splitlines()]
    assert warnings == [
        "pass-through column 'note' is double in b.parquet but string in 1 other file(s); "
        "each output file keeps the type of its input file",
        "pass-through column 't' is timestamp[us, tz=Europe/Paris] in b.parquet but "
        "timestamp[us, tz=UTC] in 1 other file(s); each output file keeps the type of its "
        "input file",
        "pass-through column 'extra' is missing from b.parquet but present in 1 other file(s); "
        "each output file keeps the columns of its input file"]
    for name, table in files.items():
        out = pq.read_table(tmp_path / "out" / name)
        assert out.column_names == table.column_names
        for column in table.column_names:
            if column != "x":
                assert out.column(column).equals(table.column(column)), (name, column)
    std = math.sqrt(8.75 / 4)  # of x = 1, 2, 3, 5 around its mean 2.75
    assert pq.read_table(tmp_path / "out" / "b.parquet").column("x").to_pylist() == [
        pytest.approx(0.25 / std, rel=1e-15), pytest.approx(2.25 / std, rel=1e-15)]


def test_a_struct_with_duplicate_field_names_is_copied_as_is(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    struct = pa.StructArray.from_arrays([pa.array([1, 2]), pa.array(["u", "v"])],
                                        names=["a", "a"])
    table = pa.table({"x": [1.0, 3.0], "s": struct})
    pq.write_table(table, src / "a.parquet")
    assert main(["run", str(src), str(tmp_path / "out"), "-q", "--no-report"]) == 0
    out = pq.read_table(tmp_path / "out" / "a.parquet")
    assert out.schema.field("s").type == struct.type
    assert out.column("s").equals(table.column("s"))
    assert out.column("x").to_pylist() == [-1.0, 1.0]


def test_mixed_float_storage_gives_one_output_type_readers_agree_on(tmp_path):
    import dask.dataframe as dd
    import pyarrow.dataset as ds

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(4)
    x32 = (1e4 + rng.standard_normal(100)).astype(np.float32)
    x64 = 1e4 + 1e-6 * rng.standard_normal(100)  # digits float32 would lose
    pq.write_table(pa.table({"x": x32}), src / "a.parquet")
    pq.write_table(pa.table({"x": x64}), src / "b.parquet")
    assert main(["run", str(src), str(tmp_path / "out"), "-q", "--no-report"]) == 0
    stats = json.loads((tmp_path / "out" / "_stats.json").read_text())
    assert stats["features"]["x"]["dtype"] == "float64"  # the widest stored type
    for name in ("a.parquet", "b.parquet"):
        assert pq.read_schema(tmp_path / "out" / name).field("x").type == pa.float64()
    by_arrow = ds.dataset(tmp_path / "out", format="parquet").to_table()
    by_dask = dd.read_parquet(str(tmp_path / "out")).compute()
    assert by_arrow.schema.field("x").type == pa.float64() and by_dask["x"].dtype == np.float64
    f = stats["features"]["x"]
    want = (np.concatenate([x32.astype(np.float64), x64]) - f["mean"]) / f["std"]
    got = by_dask["x"].to_numpy()
    np.testing.assert_allclose(np.sort(got), np.sort(want), rtol=0, atol=1e-9)
    assert len(np.unique(got[got > -50])) > 190  # b's values were not squeezed into float32


def test_float16_is_preserved_and_recorded(tmp_path):
    from fractions import Fraction

    src = tmp_path / "in"
    src.mkdir()
    h = np.array([1.5, 2.0, 2.5, 7.0, 65504.0, -3.25], dtype=np.float16)
    pq.write_table(pa.table({"h": h}), src / "a.parquet")
    assert main(["run", str(src), str(tmp_path / "out"), "-q", "--no-report"]) == 0
    stats = json.loads((tmp_path / "out" / "_stats.json").read_text())
    assert stats["features"]["h"]["dtype"] == "float16"
    out = pq.read_table(tmp_path / "out" / "a.parquet").column("h")
    assert out.type == pa.float16()
    xs = [Fraction(float(v)) for v in h]
    mean = sum(xs) / len(xs)
    std = (sum((x - mean) ** 2 for x in xs) / len(xs)) ** 0.5  # float, ~1e-16
    want = np.array([float((x - mean) / Fraction(std)) for x in xs]).astype(np.float16)
    assert out.to_numpy().tolist() == want.tolist()  # the float16 nearest the exact z
    assert main(["run", str(src), str(tmp_path / "o32"), "-q", "--no-report",
                 "--dtype", "float32"]) == 0
    assert pq.read_schema(tmp_path / "o32" / "a.parquet").field("h").type == pa.float32()


def test_a_value_overflowing_the_output_type_is_refused(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"h": np.array([-6e4, 6e4, 6e4], dtype=np.float16)}),
                   src / "a.parquet")
    args = ["run", str(src), str(tmp_path / "out"), "-q", "--no-report", "--mode", "center"]
    assert main(args) == 2  # -6e4 - 2e4 is past float16's 65504: not a silent inf
    err = capsys.readouterr().err
    assert "column 'h' has 1 value(s) that overflow float16 when transformed in a.parquet; " \
        "pass --dtype float64" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    assert main(args + ["--dtype", "float64"]) == 0
    assert pq.read_table(tmp_path / "out" / "a.parquet").column("h").to_pylist() == \
        [-8e4, 4e4, 4e4]


def test_the_report_of_epoch_nanoseconds_counts_the_exact_z(tmp_path):
    """Raw float64 cannot resolve sigma = 288 ns at 1.8e18: the report bins the written z."""
    from fractions import Fraction

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(8)
    ns = 1_767_225_600 * 10**9 + rng.integers(0, 1000, 3000)
    pq.write_table(pa.table({"t": ns}), src / "a.parquet")
    assert main(["run", str(src), str(tmp_path / "out"), "-q"]) == 0
    t = json.loads((tmp_path / "out" / "_report" / "summary.json").read_text())["features"]["t"]
    xs = [Fraction(int(v)) for v in ns]
    mean = sum(xs) / len(xs)
    std = Fraction(json.loads((tmp_path / "out" / "_stats.json").read_text())["features"]["t"][
        "std"])
    z = np.array([float((x - mean) / std) for x in xs])
    edges = -16 + np.arange(t["first"], t["first"] + len(t["fine"]) + 1) / 256
    assert np.abs(np.histogram(z, bins=edges)[0] - np.array(t["fine"])).sum() <= 2
    assert np.count_nonzero(t["fine"]) > 300  # 5 spikes if raw float64 were binned
