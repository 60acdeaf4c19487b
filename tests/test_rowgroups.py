"""The one reader of both data passes, row group by row group.

It is checked against ``pyarrow.parquet.read_table`` of the whole file (the reference),
value by value and bit for bit (NaN payloads and signed zeros included), with the Arrow
types, the schema metadata and the dictionaries of the file; the passes' results
(moments, written files) must not depend on the file system a file is read from; and a
file truncated while it is read must fail with an error, never kill the process.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.dataset import SourceFile
from pipeline.errors import DataError
from pipeline.moments import file_moments
from pipeline.plan import Plan
from pipeline.rowgroups import read_pieces
from pipeline.stats import Moments
from pipeline.storage import Location, resolve
from pipeline.write import write_file

pytestmark = pytest.mark.fast

GROUP = 8192  # rows of the first row groups
ROWS = 3 * GROUP + 1000


def _table(n: int = ROWS, seed: int = 3) -> pa.Table:
    """Every numeric width, float16, a decimal, strings (plain, large, dictionary), dates,
    nested columns, nulls, NaN of two payloads, signed zeros and infinities, a dotted name,
    and pandas-style metadata."""
    rng = np.random.default_rng(seed)
    f64 = rng.normal(size=n) * 1e9
    f64[::97] = np.nan
    f64[1::97] = -0.0
    f64[2::97] = np.inf
    f64[3::97] = np.frombuffer(np.uint64(0x7FF8_0000_0000_0ABC).tobytes(), np.float64)[0]
    cols = {
        "f64": pa.array(f64, mask=np.arange(n) % 89 == 0),
        "f32": pa.array(rng.normal(size=n).astype(np.float32)),
        "f16": pa.array(rng.normal(size=n).astype(np.float16)),
        "dec": pa.array([i * 10 for i in range(n)], pa.decimal128(12, 2)),
        "s": pa.array([f"v{i % 13}" for i in range(n)]),
        "ls": pa.array([f"w{i}" for i in range(n)], pa.large_string()),
        "cat": pa.array([f"c{i % 3}" for i in range(n)]).dictionary_encode(),
        "day": pa.array(np.arange(n).astype("datetime64[D]").astype("datetime64[ms]")),
        "b": pa.array(np.arange(n) % 2 == 0),
        "st": pa.array([{"a": i, "b": float(i)} for i in range(n)]),
        "l": pa.array([[i, -i] for i in range(n)]),
        "x.y": pa.array(np.arange(n, dtype=np.int32)),  # a dotted name
    }
    for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        info = np.iinfo(t)
        v = rng.integers(info.min, info.max, size=n, dtype=t, endpoint=True)
        v[:2] = info.min, info.max
        cols[t] = pa.array(v, mask=np.arange(n) % 31 == 5)
    table = pa.table(cols)
    return table.replace_schema_metadata({b"pandas": b"{}", b"mine": b"kept"})


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("rowgroups") / "f.parquet")
    with pq.ParquetWriter(path, _table().schema, use_dictionary=["cat", "s"]) as w:
        table = _table()
        # Row groups of 2 * GROUP, GROUP + 1 and the rest.
        for start, size in ((0, 2 * GROUP), (2 * GROUP, GROUP + 1),
                            (3 * GROUP + 1, None)):
            w.write_table(table.slice(start, size))
    assert [g.num_rows for g in _groups(path)] == [2 * GROUP, GROUP + 1, 999]
    return path


def _groups(path: str) -> list:
    md = pq.ParquetFile(path).metadata
    return [md.row_group(i) for i in range(md.num_row_groups)]


def _same_bits(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array) -> None:
    """Same type, same validity, and (where valid) the same bytes, NaN payloads included."""
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    b = b.combine_chunks() if isinstance(b, pa.ChunkedArray) else b
    assert a.type == b.type and len(a) == len(b) and a.null_count == b.null_count
    assert a.is_valid().equals(b.is_valid())
    if pa.types.is_integer(a.type) or pa.types.is_floating(a.type):
        width, valid = a.type.bit_width // 8, np.asarray(a.is_valid())
        raw = [np.frombuffer(x.buffers()[1], dtype=f"u{width}", count=len(x),
                             offset=x.offset * width)[valid] for x in (a, b)]
        assert np.array_equal(*raw)
    else:
        assert a.equals(b)


@pytest.mark.parametrize("columns", [None, ["f64", "int8", "uint64", "f16", "f32"],
                                     ["s", "f32", "st", "x.y"]])
def test_each_row_group_reads_as_pyarrow_reads_it(hostile, columns):
    pf = pq.ParquetFile(hostile)
    pieces = list(read_pieces(pf, columns))
    assert [p.num_rows for p in pieces] == [g.num_rows for g in _groups(hostile)]
    reference = pq.read_table(hostile, columns=columns)
    assert pa.concat_tables(pieces).schema.equals(reference.schema, check_metadata=True)
    start = 0
    for piece in pieces:
        for name in piece.column_names:
            _same_bits(piece.column(name), reference.column(name).slice(start, piece.num_rows))
        start += piece.num_rows


def test_big_row_groups_are_read_in_pieces(tmp_path):
    path = str(tmp_path / "big.parquet")
    pq.write_table(pa.table({"x": np.arange(50_000, dtype=np.float64)}), path)
    pieces = list(read_pieces(pq.ParquetFile(path), None, max_rows=20_000))
    assert [p.num_rows for p in pieces] == [20_000, 20_000, 10_000]
    assert pa.concat_tables(pieces).column("x").equals(pq.read_table(path).column("x"))


def _copy_to_memory(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs = fsspec.filesystem("memory")
    fs.pipe("/rowgroups/f.parquet", open(path, "rb").read())
    return fs, "/rowgroups/f.parquet"


def test_moments_do_not_depend_on_the_file_system(hostile):
    """Local and in memory (fsspec): the same bits, and the count and mean against an
    exact reference."""
    from fractions import Fraction

    names = ["f64", "f32", "int64", "uint64", "int8", "f16"]
    size = os.path.getsize(hostile)
    local = file_moments(resolve(os.path.dirname(hostile), {}).fs,
                         SourceFile("f.parquet", hostile, size, "1"), names)
    fs, path = _copy_to_memory(hostile)
    remote = file_moments(fs, SourceFile("f.parquet", path, size, "1"), names)
    assert local == remote
    x = pq.read_table(hostile, columns=["int64"]).column("int64").drop_null().to_pylist()
    assert local["int64"].count == len(x)
    mean = Fraction(sum(x), len(x))
    assert abs(Fraction(local["int64"].mean) - mean) <= abs(mean) * Fraction(1, 10**12)
    assert isinstance(local["f64"], Moments) and local["f64"].inf == remote["f64"].inf > 0


def test_written_files_do_not_depend_on_the_file_system(hostile, tmp_path):
    names = ["f32", "int32", "uint16", "f16"]
    size = os.path.getsize(hostile)
    fs = resolve(os.path.dirname(hostile), {}).fs
    moments = file_moments(fs, SourceFile("f.parquet", hostile, size, "1"), names)
    from pipeline.finalize import finalize

    stats = finalize(names, {n: str(pq.read_schema(hostile).field(n).type) for n in names},
                     [("f.parquet", moments)], ddof=0, inf="error", source={"path": "x"})
    plan = Plan.build(stats)
    digests = []
    mem_fs, mem_path = _copy_to_memory(hostile)
    for where, src_fs, path in (("a", fs, hostile), ("b", mem_fs, mem_path)):
        (tmp_path / where).mkdir()
        target = resolve(str(tmp_path / where), {})
        assert isinstance(target, Location)
        write_file(src_fs, SourceFile("f.parquet", path, size, "1"), target, plan)
        digests.append(hashlib.sha256((tmp_path / where / "f.parquet").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    out = pq.read_table(tmp_path / "a" / "f.parquet")
    source = pq.read_table(hostile)
    for name in source.column_names:
        if name not in names:
            _same_bits(out.column(name), source.column(name))


def test_a_damaged_page_names_the_file(hostile, tmp_path):
    """Garbage in the middle of the first row group's data (the footer intact): one line
    naming the file, from either pass."""
    data = bytearray(open(hostile, "rb").read())
    col = _groups(hostile)[0].column(pq.ParquetFile(hostile).schema_arrow.get_field_index("f64"))
    start = col.data_page_offset
    data[start:start + 4000] = os.urandom(4000)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    fs = resolve(str(tmp_path), {}).fs
    file = SourceFile("bad.parquet", str(bad), len(data), "1")
    with pytest.raises(DataError, match=r"^cannot read bad.parquet: .*the file is corrupt"):
        file_moments(fs, file, ["f64", "f32"])


@pytest.mark.slow
def test_a_file_truncated_while_it_is_read_fails_the_read_not_the_process(tmp_path):
    """A writer truncating an input in place while the fit reads it: every read either
    succeeds or fails with the one-line error naming the file; the process is never
    killed.  (A reader that memory-maps the file, as Polars' does, dies here of SIGBUS
    within 1-15 s here: see pipeline/rowgroups.py.)"""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({f"f{i}": np.random.default_rng(i).normal(size=250_000)
                             for i in range(8)}), path, row_group_size=50_000)
    script = textwrap.dedent(f"""
        import os, threading, time
        import fsspec
        from pipeline.dataset import SourceFile
        from pipeline.errors import DataError
        from pipeline.moments import file_moments

        path = {str(path)!r}
        data = open(path, "rb").read()
        stop = False

        def hammer():
            while not stop:
                with open(path, "r+b") as fh:
                    fh.truncate(len(data) // 3)
                time.sleep(0.001)
                with open(path, "r+b") as fh:
                    fh.write(data)
                time.sleep(0.001)

        threading.Thread(target=hammer, daemon=True).start()
        fs, file = fsspec.filesystem("file"), SourceFile("t.parquet", path, len(data), "1")
        ok = failed = 0
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                file_moments(fs, file, [f"f{{i}}" for i in range(8)])
                ok += 1
            except DataError as exc:
                assert "t.parquet" in str(exc) and "\\n" not in str(exc), exc
                failed += 1
        stop = True
        print(ok, failed)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    ok, failed = map(int, done.stdout.split())
    assert failed > 0  # the file really was truncated under the reader
