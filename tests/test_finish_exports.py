"""Fill, indicator, clip and minmax in the serving exports: SQL run in DuckDB, ONNX in onnxruntime.

Expected values are exact rationals computed here (fractions), not the package's.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import duckdb
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
import sqlglot
from procs import error_line, zscore

import pipeline

N = 600
BIG = [2**63 - 1, -(2**63), 2**63 - 100, 0]  # int64 at both limits
HUGE = [2**64 - 1, 0, 2**64 - 7, 12]  # uint64 up to its limit


def _table() -> pa.Table:
    rng = np.random.default_rng(7)
    f = rng.normal(3, 2, N)
    f[::37] = np.nan
    f[1] = 40.0  # an outlier for the clip
    return pa.table({
        "id": pa.array(range(N)),
        "f": pa.array(f, mask=np.arange(N) % 41 == 2),  # NaN and null in one column
        "g": pa.array((1e4 + rng.normal(0, 1, N)).astype(np.float32)),
        "big": pa.array((BIG * N)[:N], pa.int64()),
        "u": pa.array((HUGE * N)[:N], pa.uint64()),
        "k": pa.array(np.full(N, 0.1)),
    })


@pytest.fixture(scope="module")
def data(datasets):
    table = _table()
    path = datasets.write("finish-exports", {"p.parquet": table})
    return table, pipeline.fit(str(path), exclude="id", client=None)


def _exact(values, mode, clip=None, fill=None):
    """z or minmax of each value with the exact statistics of the non-missing ones."""
    known = [Fraction(v) for v in values if v is not None and not math.isnan(v)]
    lo, hi = min(known), max(known)
    mean = sum(known, Fraction(0)) / len(known)
    std = Fraction(math.sqrt(sum(((v - mean) ** 2 for v in known), Fraction(0)) / len(known)))
    out = []
    for v in values:
        if v is None or math.isnan(v):
            out.append(math.nan if fill is None else fill)
            continue
        z = 0.0 if lo == hi else float((Fraction(v) - (lo if mode == "minmax" else mean)) /
                                       ((hi - lo) if mode == "minmax" else std))
        out.append(math.copysign(clip, z) if clip is not None and abs(z) > clip else z)
    return out


def _close(got, want, tol=1e-12):
    got = np.array([math.nan if v is None else v for v in got], dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.all(np.abs(got[ok] - want[ok]) <= tol * np.maximum(np.abs(want[ok]), 1.0))


OPTIONS = {"fill_missing": -0.5, "missing_indicator": True, "clip": 2.5}


@pytest.mark.parametrize("mode", ["standard", "minmax"])
def test_duckdb_sql_against_fractions(data, mode):
    table, stats = data
    sql = stats.to_sql("duckdb", mode=mode, dtype="float64", table="t", **OPTIONS)
    con = duckdb.connect()
    con.register("t", table)
    out = con.sql(sql).to_arrow_table()
    assert out.column_names == ["id", "f", "g", "big", "u", "k", "f__missing", "g__missing",
                                "big__missing", "u__missing", "k__missing"]
    for name in ("f", "g", "big", "u"):
        _close(out.column(name).to_pylist(),
               _exact(table.column(name).to_pylist(), mode, 2.5, -0.5))
    assert out.column("k").to_pylist() == [0.0] * N  # constant
    missing = [v is None or math.isnan(v) for v in table.column("f").to_pylist()]
    assert out.column("f__missing").to_pylist() == missing and any(missing)
    assert out.schema.field("f__missing").type == pa.bool_()
    header = json.loads(sql.splitlines()[0].removeprefix("-- zscore "))
    assert {k: header[k] for k in OPTIONS} == OPTIONS and header["mode"] == mode


def test_duckdb_sql_equals_apply_float32_output(data):
    """Clip and fill before the cast to REAL give apply's float32 values, bit for bit."""
    table, stats = data
    con = duckdb.connect()
    con.register("t", table)
    out = con.sql(stats.to_sql("duckdb", dtype="float32", table="t",
                                  clip=0.1, fill_missing=0.05)).to_arrow_table()
    want = pipeline.apply(table.to_pandas(), stats, dtype="float32", clip=0.1, fill_missing=0.05)
    for name in ("f", "g", "big", "u", "k"):
        assert out.column(name).type == pa.float32()
        assert out.column(name).to_pylist() == want[name].tolist(), name


@pytest.mark.parametrize("dialect", ["postgres", "spark", "bigquery"])
def test_other_dialects(data, dialect):
    table, stats = data
    sql = stats.to_sql(dialect, table="t", features=["f", "g"], **OPTIONS)
    assert sqlglot.parse_one(sql, read=dialect) is not None
    header = json.loads(sql.splitlines()[0].removeprefix("-- zscore "))
    assert header["clip"] == 2.5 and header["missing_indicator"] is True
    if dialect == "bigquery":
        assert "IS_NAN(" in sql and "AS `f__missing`" in sql
        return
    con = duckdb.connect()
    con.register("t", table)
    con.create_function("raise_error", lambda msg: None, [duckdb.sqltype("VARCHAR")],
                        duckdb.sqltype("DOUBLE"))  # Spark's; never called (no infinities)
    out = con.sql(sqlglot.transpile(sql, read=dialect, write="duckdb")[0]).to_arrow_table()
    assert out.column_names == ["f", "f__missing", "g", "g__missing"]
    _close(out.column("f").to_pylist(), _exact(table.column("f").to_pylist(), "standard",
                                               2.5, -0.5))


def test_onnx_against_fractions(data):
    table, stats = data
    names = ["f", "g", "k"]  # 64-bit integers past 2**53 are refused by the ONNX export
    X = np.column_stack([np.array(table.column(n).to_pylist(), dtype=float) for n in names])
    for mode in ("standard", "minmax"):
        model = stats.to_onnx(mode=mode, features=names, **OPTIONS)
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["Z", "n_infinite", "missing"]
        z, n_inf, missing = session.run(None, {"X": X})
        for j in range(len(names)):
            _close(z[:, j], _exact(list(X[:, j]), mode, 2.5, -0.5))
        assert missing[:, 0].tolist() == np.isnan(X[:, 0]).tolist() and int(n_inf) == 0
    plain = ort.InferenceSession(stats.to_onnx(features=names, clip=1.0))
    assert [o.name for o in plain.get_outputs()] == ["Z", "n_infinite"]
    z = plain.run(None, {"X": X})[0]
    assert np.nanmax(np.abs(z)) == 1.0 and np.isnan(z[:, 0]).any()  # clipped; NaN kept


def test_cli_export_records_options_and_refuses_bad_ones(data, tmp_path, capsys):
    _, stats = data
    path = tmp_path / "s.json"
    stats.save(path)
    code, out, err = zscore(capsys, "export", path, "--format", "sql", "--mode", "minmax",
                            "--clip", "3", "--fill-missing", "0", "--missing-indicator")
    assert code == 0, err
    header = json.loads(out.splitlines()[0].removeprefix("-- zscore "))
    assert (header["mode"], header["clip"], header["fill_missing"]) == ("minmax", 3.0, 0.0)
    code, _, err = zscore(capsys, "export", path, "--format", "sql", "--clip", "-3")
    assert code == 2
    assert error_line(err) == ("zscore: error: --clip must be a finite number > 0, not -3.0; "
                               "for example --clip 5")
