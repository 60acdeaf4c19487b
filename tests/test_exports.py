"""Serving exports run in the engines that serve: SQL in DuckDB, ONNX in onnxruntime.

Each is compared with pipeline.apply on the same rows (and, for the hard cases,
with exact rationals), nulls, NaN and infinities included.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import duckdb
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import sqlglot

import pipeline
from pipeline.choices import EXPORT_FORMATS
from pipeline.cli import main
from pipeline.exports import DIALECTS

N = 4000
FEATURES = ["f", "g", "big", "ns", "k", "i8"]


def _table(seed: int = 0, n: int = N) -> pa.Table:
    rng = np.random.default_rng(seed)
    f = rng.normal(3, 2, n)
    f[::97] = np.nan
    k = np.full(n, 0.1)
    k[5] = np.nan
    return pa.table({
        "id": pa.array([f"r{i}" for i in range(n)]),
        "f": pa.array(f, mask=np.arange(n) % 101 == 3),  # NaN and null in one column
        "g": pa.array((1e4 + rng.normal(0, 1, n)).astype(np.float32)),
        "big": pa.array(1e9 + 1e-3 * rng.standard_normal(n)),  # a float mean loses digits
        "ns": pa.array(1_767_225_600_000_000_000 + rng.integers(-500, 500, n)),  # int64 > 2**53
        "k": pa.array(k, mask=np.arange(n) == 9),  # constant, with a NaN and a null
        "i8": pa.array(rng.integers(-100, 100, n).astype(np.int8)),
    })


@pytest.fixture(scope="module")
def data(datasets):
    path = datasets.write("exports", {"part-0.parquet": _table(0, N // 2),
                                      "part-1.parquet": _table(1, N // 2)})
    stats = pipeline.fit(str(path), features=FEATURES, client=None)
    return pa.concat_tables([_table(0, N // 2), _table(1, N // 2)]), stats


def _apply(table: pa.Table, stats, **kw) -> pa.Table:
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)  # nulls stay nulls, NaN stays NaN
    return pa.Table.from_pandas(pipeline.apply(frame, stats, **kw), preserve_index=False)


def _same(got: pa.Table, want: pa.Table, names) -> None:
    """Equal within 1e-12 relative, with nulls and NaN in the same rows."""
    for name in names:
        a, b = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        assert a.type == b.type, name
        assert a.is_null().to_pylist() == b.is_null().to_pylist(), name
        x = a.to_numpy(zero_copy_only=False).astype(np.float64)
        y = b.to_numpy(zero_copy_only=False).astype(np.float64)
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        ok = ~np.isnan(y)
        assert np.all(np.abs(x[ok] - y[ok]) <= 1e-12 * np.maximum(np.abs(y[ok]), 1.0)), name


def _duckdb(sql: str, table: pa.Table) -> pa.Table:
    con = duckdb.connect()
    con.register("t", table)
    return con.sql(sql).to_arrow_table()


# --------------------------------------------------------------------------- SQL
@pytest.mark.parametrize("mode", ["standard", "center", "scale"])
@pytest.mark.parametrize("dtype", ["preserve", "float32", "float64"])
def test_duckdb_sql_equals_apply(data, mode, dtype):
    table, stats = data
    sql = stats.to_sql("duckdb", mode=mode, dtype=dtype, table="t")
    out = _duckdb(sql, table)
    assert out.column_names == table.column_names  # * REPLACE: every column, in place
    assert out.column("id").equals(table.column("id"))
    _same(out, _apply(table, stats, mode=mode, dtype=dtype), FEATURES)
    header = json.loads(sql.splitlines()[0].removeprefix("-- zscore "))
    assert header["mode"] == mode and header["dtype"] == dtype and header["features"] == FEATURES


def test_duckdb_reads_the_sample_dataset_itself(datasets):
    """The demo's data, read by DuckDB from the Parquet files: the same as apply()."""
    path = datasets.sample("exports_sample")
    stats = pipeline.fit(str(path), exclude="id,label")
    source = f"read_parquet('{path}/**/*.parquet', hive_partitioning = true)"
    out = duckdb.sql(stats.to_sql("duckdb", table=source)).to_arrow_table().sort_by("id")
    frame = ds.dataset(path, format="parquet", partitioning="hive").to_table().sort_by("id")
    want = _apply(frame, stats)
    assert out.num_rows == want.num_rows == 24_000
    _same(out, want, list(stats.features))


def test_sql_is_exact_on_the_hard_columns(data):
    table, stats = data
    out = _duckdb(stats.to_sql("duckdb", table="t", features=["big", "ns", "k"]), table)
    for name in ("big", "ns"):
        values = [Fraction(v) for v in table.column(name).to_pylist()]
        mean = sum(values, Fraction(0)) / len(values)
        std = Fraction(math.sqrt(sum(((v - mean) ** 2 for v in values), Fraction(0))
                                 / len(values)))
        z = out.column(name).to_pylist()
        for i in (0, 1, 2, N - 1):
            assert abs(z[i] - float((values[i] - mean) / std)) < 1e-12, name
    k = out.column("k").to_pylist()
    half = N // 2  # two files of the same layout: a NaN at row 5, a null at row 9 of each
    assert k[9] is None and k[half + 9] is None and math.isnan(k[5]) and math.isnan(k[half + 5])
    assert {v for i, v in enumerate(k) if i % half not in (5, 9)} == {0.0}
    # The residual is what keeps 'big' exact: one float mean would move z by ~1e-5.
    f = stats.features["big"]
    naive = _duckdb(f'SELECT ("big" - {f.mean!r}) / {f.std!r} AS z FROM t', table)
    assert np.abs(np.array(naive.column("z")) - np.array(out.column("big"))).max() > 1e-7


def test_infinite_values_fail_the_query_or_become_nan(data, datasets):
    table, stats = data
    bad = table.set_column(1, "f", pa.array([math.inf] + [1.0] * (N - 1)))
    with pytest.raises(duckdb.Error, match="zscore: column f has an infinite value: inf"):
        _duckdb(stats.to_sql("duckdb", table="t"), bad)
    nulls = pipeline.FittedStats.from_dict({**stats.to_dict(), "inf": "null"})
    out = _duckdb(nulls.to_sql("duckdb", table="t"), bad)
    _same(out, _apply(bad, nulls), FEATURES)
    assert math.isnan(out.column("f")[0].as_py())


@pytest.mark.parametrize("dialect", ["postgres", "spark", "bigquery"])
def test_other_dialects_parse_and_run_as_written(data, dialect):
    table, stats = data
    sql = stats.to_sql(dialect, table="t")
    assert sqlglot.parse_one(sql, read=dialect) is not None  # valid in that dialect
    if dialect == "bigquery":
        assert "SELECT * REPLACE (" in sql and "`big`" in sql and "IS_INF(`f`)" in sql
        return
    # Translated by sqlglot (an independent parser) and run in DuckDB: the same numbers.
    con = duckdb.connect()
    con.register("t", table)
    con.create_function("raise_error", lambda msg: None, [duckdb.sqltype("VARCHAR")],
                        duckdb.sqltype("DOUBLE"))
    out = con.sql(sqlglot.transpile(sql, read=dialect, write="duckdb")[0]).to_arrow_table()
    assert out.column_names == FEATURES  # no REPLACE in this dialect: the features only
    _same(out, _apply(table, stats).select(FEATURES), FEATURES)


def test_per_key_statistics_are_refused(datasets):
    path = datasets.write("exports_keys", {"p.parquet": _table(2, 200)})
    stats = pipeline.fit(str(path), features=["f"], group_by="i8")
    with pytest.raises(pipeline.InputError, match="fitted per key") as err:
        stats.to_sql()
    assert err.value.options == ["group_by", "group_by"]
    assert "refit without --group-by to export" in err.value.render(cli=True)


# -------------------------------------------------------------------------- ONNX
def _run(model: bytes, X: np.ndarray) -> tuple[np.ndarray, int]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    z, n = session.run(None, {"X": X})
    return z, int(n)


@pytest.mark.parametrize("mode", ["standard", "center", "scale"])
def test_onnx_float64_graph_equals_apply(data, mode):
    table, stats = data
    names = ["f", "g", "big", "k", "i8"]
    model = stats.to_onnx(mode=mode, features=names)
    frame = table.select(names).to_pandas().astype(np.float64)  # nulls become NaN
    z, n = _run(model, frame.to_numpy())
    assert z.dtype == np.float64 and n == 0
    want = pipeline.apply(frame, stats, mode=mode, features=names, dtype="float64")
    _same(pa.table({c: z[:, i] for i, c in enumerate(names)}),
          pa.table({c: want[c].to_numpy() for c in names}), names)  # NaN kept as NaN
    meta = json.loads(onnx.load_from_string(model).metadata_props[0].value)
    assert meta["mode"] == mode and meta["features"] == names and meta["dtype"] == "float64"


def test_onnx_float32_input_is_handled_as_apply_does(data):
    table, stats = data
    frame = table.select(["g"]).to_pandas()  # float32
    model = stats.to_onnx(dtype="preserve", features=["g"])  # all float32: float32
    z, _ = _run(model, frame.to_numpy())
    assert z.dtype == np.float32
    want = pipeline.apply(frame, stats, features=["g"])["g"].to_numpy()
    assert want.dtype == np.float32 and np.array_equal(z[:, 0], want)


def test_onnx_infinite_values_are_counted_and_64_bit_integers_refused(data):
    table, stats = data
    X = table.select(["f"]).to_pandas().to_numpy(np.float64).copy()
    X[3, 0] = -math.inf
    z, n = _run(stats.to_onnx(features=["f"]), X)
    assert n == 1 and math.isnan(z[3, 0])
    with pytest.raises(pipeline.InputError, match="column 'ns' is int64 with values past 2"):
        stats.to_onnx()


# --------------------------------------------------------------------------- CLI
def test_cli_export_sql_and_onnx(data, tmp_path, capsys):
    table, stats = data
    stats.save(tmp_path / "stats.json")
    assert main(["export", str(tmp_path / "stats.json"), "--format", "sql", "--dialect",
                 "duckdb", "--mode", "center", "--table", "t"]) == 0
    sql = capsys.readouterr().out
    _same(_duckdb(sql, table), _apply(table, stats, mode="center"), FEATURES)
    out = tmp_path / "z.onnx"
    assert main(["export", str(tmp_path / "stats.json"), "--format", "onnx", "--features",
                 "f,big", "-o", str(out)]) == 0
    assert "wrote onnx (standard) of 2 features" in capsys.readouterr().out
    frame = table.select(["f", "big"]).to_pandas()
    z, _ = _run(out.read_bytes(), frame.to_numpy())
    assert np.array_equal(z, pipeline.apply(frame, stats, features=["f", "big"]).to_numpy(),
                          equal_nan=True)
    assert main(["export", str(tmp_path / "stats.json"), "--format", "onnx"]) == 2
    assert capsys.readouterr().err == ("zscore: error: --format onnx writes a binary model: "
                                       "give -o FILE (see 'zscore export --help')\n")
    # An unset shell variable: refused, not a query of nothing.
    assert main(["export", str(tmp_path / "stats.json"), "--format", "sql", "--features",
                 ""]) == 2
    assert capsys.readouterr().err.startswith("zscore: error: --features is empty; name the "
                                              "features to export")


def test_cli_choices_are_the_library_s():
    from pipeline.cli import export

    choices = {p.name: list(p.type.choices) for p in export.params
               if hasattr(p.type, "choices")}
    assert choices["dialect"] == list(DIALECTS) and choices["fmt"] == list(EXPORT_FORMATS)
