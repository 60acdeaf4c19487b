"""Small files transformed together (``pipeline.write.write_files``), written each on its own.

A task's consecutive small files of one schema are transformed as one table.  These
tests try to make that show: files of different sizes, row groups, schemas and
dictionaries in one task, an empty file, a large file in the middle, an int64 beyond
2**52, nulls and NaN, and a value that must be refused in the fourth of five files.
Each output is checked against the exact reference (rationals) and against its own
input file read by pyarrow: same rows, row groups, pass-through columns (types,
values, dictionaries) and Parquet dictionary encodings.
"""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.dataset import SourceFile
from pipeline.errors import DataError
from pipeline.plan import Plan
from pipeline.storage import resolve
from pipeline.write import write_files

pytestmark = pytest.mark.fast

FEATURES = ["f64", "f32", "i32", "i64"]


def _file(rng: np.random.Generator, n: int, k: int, *, wide: bool = False) -> pa.Table:
    """``n`` rows; a dictionary column whose dictionary differs from file to file."""
    f64 = rng.normal(1e4, 3.0, n)
    if n > 2:
        f64[1] = np.nan
    i64 = rng.integers(-10**6, 10**6, n)
    if wide and n:
        i64[0] = 2**60 + 7  # beyond 2**52: the per-column (exact integer) path
    return pa.table({
        "f64": f64,
        "f32": pa.array(rng.normal(0, 1, n).astype(np.float32),
                        mask=np.arange(n) % 7 == 3),
        "i32": rng.integers(-1000, 1000, n).astype(np.int32),
        "i64": i64,
        "city": pa.array([f"c{k}-{i % 3}" for i in range(n)]).dictionary_encode(),
        "id": np.arange(n, dtype=np.int64) + 1000 * k,
    })


def _dictionaries(path):
    md = pq.ParquetFile(path).metadata
    return [{md.schema.column(j).path for j in range(md.num_columns)
             if any("DICTIONARY" in e for e in md.row_group(i).column(j).encodings)}
            for i in range(md.num_row_groups)]


def _exact_z(tables, name):
    values = [Fraction(v) for t in tables for v in t.column(name).to_pylist()
              if v is not None and not math.isnan(v)]
    mean = sum(values, Fraction(0)) / len(values)
    std = math.sqrt(sum(((v - mean) ** 2 for v in values), Fraction(0)) / len(values))
    return mean, std


def test_small_files_of_a_task_are_each_written_as_their_own(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "in"
    src.mkdir()
    sizes = [100, 1, 0, 250, 3000, 40, 9000, 7, 100, 2, 5000, 64, 100, 100, 33, 1, 400, 80]
    tables = {}
    for k, n in enumerate(sizes):
        table = _file(rng, n, k, wide=k == 11)
        if k == 13:  # another schema among them
            table = table.append_column("extra", pa.array(np.ones(n)))
        name = f"p{k:02d}.parquet"
        pq.write_table(table, src / name, row_group_size=37 if k in (3, 8) else None,
                       use_dictionary=["city"])
        tables[name] = table
    # --workers 1: at least 8 tasks, so 2 to 3 files each
    assert main(["run", str(src), str(tmp_path / "out"), "--features", ",".join(FEATURES),
                 "--workers", "1", "-q"]) == 0
    exact = {n: _exact_z(tables.values(), n) for n in FEATURES}
    for name in tables:
        out_path = tmp_path / "out" / name
        src_md, out_md = pq.ParquetFile(src / name).metadata, pq.ParquetFile(out_path).metadata
        assert [out_md.row_group(i).num_rows for i in range(out_md.num_row_groups)] == \
            [src_md.row_group(i).num_rows for i in range(src_md.num_row_groups)], name
        assert _dictionaries(out_path) == _dictionaries(src / name), name
        out = pq.read_table(out_path)
        source = pq.read_table(src / name)
        assert out.column_names == source.column_names
        for column in source.column_names:
            if column not in FEATURES:
                assert out.schema.field(column).type == source.schema.field(column).type
                assert out.column(column).equals(source.column(column)), (name, column)
        for feature in FEATURES:
            mean, std = exact[feature]
            got = out.column(feature).to_pylist()
            for x, z in zip(source.column(feature).to_pylist(), got, strict=True):
                if x is None:
                    assert z is None
                elif math.isnan(x):
                    assert math.isnan(z)
                else:
                    want = float((Fraction(x) - mean) / Fraction(std))
                    tolerance = 1e-6 if feature == "f32" else 1e-12
                    assert z == pytest.approx(want, rel=tolerance, abs=tolerance), \
                        (name, feature, x)
    summary = json.loads((tmp_path / "out" / "_report" / "summary.json").read_text())
    for feature in FEATURES:
        counted = summary["features"][feature]
        valid = sum(t.column(feature).drop_null().to_numpy(zero_copy_only=False).size -
                    int(np.isnan(t.column(feature).drop_null().to_numpy(
                        zero_copy_only=False).astype(float)).sum()) for t in tables.values())
        assert sum(counted["fine"]) + sum(counted["low"].values()) + sum(
            counted["high"].values()) == valid, feature


def _plan(tables):
    """A plan from the exact statistics of ``tables`` (fitted by the reference)."""
    from pipeline.finalize import finalize
    from pipeline.stats import Moments

    pieces = []
    for i, t in enumerate(tables):
        moments = {}
        for name in ("x",):
            values = [v for v in t.column(name).to_pylist() if math.isfinite(v)]
            moments[name] = Moments.from_array(np.array(values)) if values else Moments()
        pieces.append((f"{i}", moments))
    return Plan.build(finalize(["x"], {"x": "double"}, pieces, ddof=0, inf="error",
                               source={"path": "x"}))


@pytest.mark.parametrize("bad", [0, 3, 4])
def test_a_refused_value_in_a_small_file_names_that_file(tmp_path, bad):
    """Five 50-row files transformed together; an infinity in one of them."""
    src = tmp_path / "in"
    src.mkdir()
    clean = [pa.table({"x": np.arange(50, dtype=np.float64) + i}) for i in range(5)]
    files = []
    for i, table in enumerate(clean):
        if i == bad:
            x = table.column("x").to_numpy().copy()
            x[17] = np.inf
            table = pa.table({"x": x})
        path = src / f"f{i}.parquet"
        pq.write_table(table, path)
        files.append(SourceFile(f"f{i}.parquet", str(path), os.path.getsize(path), "1"))
    (tmp_path / "out").mkdir()
    target = resolve(str(tmp_path / "out"), {})
    with pytest.raises(DataError) as caught:
        write_files(resolve(str(src), {}).fs, files, target, _plan(clean))
    message = str(caught.value)
    assert f"in f{bad}.parquet" in message and "infinite" in message
    assert sum(f"f{i}.parquet" in message for i in range(5)) == 1
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert all(not name.startswith(".") for name in written)  # no temporary file left
