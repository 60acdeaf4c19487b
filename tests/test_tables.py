"""A table directory is never read as loose Parquet: without its library it is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from pyiceberg.catalog.sql import SqlCatalog
from reference import exact_reference

# The library is made unimportable the way Python itself does it: a None entry in
# sys.modules makes `import deltalake` raise ImportError, as on a machine without it.
BLOCKED = ("import sys\n"
           "for name in {blocked!r}: sys.modules[name] = None\n"
           "from pipeline.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")


def without(blocked: tuple[str, ...], *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED.format(blocked=blocked),
                           *map(str, args)], capture_output=True, text=True, timeout=120)


def table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"x": rng.normal(0, 1, n), "k": rng.integers(0, 9, n)})


@pytest.fixture(scope="module")
def delta(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tables") / "delta"
    write_deltalake(path, table(10_000, 1))
    write_deltalake(path, table(10_000, 2), mode="overwrite")
    return path


@pytest.fixture(scope="module")
def iceberg(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tables")
    catalog = SqlCatalog("c", uri=f"sqlite:///{root}/c.db", warehouse=f"file://{root}/wh")
    catalog.create_namespace("ns")
    tbl = catalog.create_table("ns.t", schema=table(1, 0).schema)
    tbl.append(table(1000, 3))
    tbl.append(table(1000, 4))
    tbl.delete("k > 4")
    return root / "wh" / "ns" / "t"


def test_a_delta_directory_without_deltalake_is_refused_naming_the_extra(delta, tmp_path):
    proc = without(("deltalake",), "fit", delta, "--stats", tmp_path / "s.json")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"zscore: error: input {delta} is a Delta Lake table, which zscore reads only with "
        "the 'delta' extra: pip install 'dask-zscore[delta]' (or pass --input-format parquet "
        "to read its files as loose Parquet, counting rows the table may have deleted)")
    assert not (tmp_path / "s.json").exists()
    # Asked for, the loose reading counts every file on disk (the live and the removed).
    proc = without(("deltalake",), "fit", delta, "--stats", tmp_path / "s.json",
                   "--input-format", "parquet")
    assert proc.returncode == 0, proc.stderr
    assert "on 20,000 rows in 2 files" in proc.stdout


def test_an_iceberg_directory_without_pyiceberg_is_refused_naming_the_extra(iceberg, tmp_path):
    for target in (iceberg, next((iceberg / "metadata").glob("*.metadata.json"))):
        proc = without(("pyiceberg",), "fit", target, "--stats", tmp_path / "s.json")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(
            f"zscore: error: input {target} is an Iceberg table, which zscore reads only with "
            "the 'iceberg' extra: pip install 'dask-zscore[iceberg]'")
    proc = without(("pyiceberg",), "run", iceberg, tmp_path / "out", "--input-format",
                   "parquet")
    assert proc.returncode == 2  # loose reading meets the metadata files, and says so
    assert "metadata/" in proc.stderr and "is not a readable Parquet file" in proc.stderr


def test_a_catalog_name_without_pyiceberg_is_refused_naming_the_extra(tmp_path):
    proc = without(("pyiceberg",), "fit", "ns.t", "--catalog", "c", "--stats",
                   tmp_path / "s.json")
    assert proc.returncode == 2, proc.stderr
    assert "the 'iceberg' extra: pip install 'dask-zscore[iceberg]'" in proc.stderr


def test_table_options_are_checked_when_built_and_named_as_each_front_end_spells_them():
    from pipeline import InputError, TableOptions

    with pytest.raises(InputError) as caught:
        TableOptions(version=1, as_of="2026-01-01T00:00:00Z")
    assert caught.value.options == ["version", "as_of"]
    assert str(caught.value) == ("give TableOptions.version or TableOptions.as_of (a Delta "
                                 "version or a time to read the table as of), not both")
    assert caught.value.render(cli=True) == ("give --version or --as-of (a Delta version or a "
                                             "time to read the table as of), not both")
    with pytest.raises(InputError, match="input_format must be one of auto, parquet"):
        TableOptions(input_format="csv")


def test_a_python_remedy_for_a_table_option_is_followed(datasets, cluster, tmp_path):
    """The remedy a Python caller is given, ``table=TableOptions(output_format='parquet')``,
    is what they type next, and it works."""
    import pyarrow.parquet as pq

    from pipeline import InputError, TableOptions, run

    loose = datasets.write("tables-loose", {"part-0.parquet": table(1000, 5)})
    with pytest.raises(InputError) as caught:
        run(loose, tmp_path / "out", table=TableOptions(output_format="iceberg"), report=False,
            client=cluster)
    message = str(caught.value)
    assert "choose table=TableOptions(output_format='parquet') or " \
           "table=TableOptions(output_format='delta')" in message
    assert not (tmp_path / "out").exists()
    remedy = message.split("choose table=", 1)[1].split(" or ")[0]
    result = run(loose, tmp_path / "out", table=eval(remedy, {"TableOptions": TableOptions}),
                 report=False, client=cluster)
    assert result.manifest["output_format"] == "parquet"
    source = table(1000, 5).column("x").to_pylist()
    mean, std = exact_reference(source)
    got = pq.read_table(tmp_path / "out").column("x").to_pylist()
    for z, v in zip(got, source, strict=True):
        assert z == pytest.approx(float((Fraction(v) - Fraction(mean)) / Fraction(std)),
                                  rel=1e-12, abs=1e-12)


def test_a_directory_or_file_inside_a_table_is_never_read_as_loose_parquet(tmp_path):
    """``table/day=1/`` holds the partition's files on disk, live and removed alike:
    refused, naming the table and the remedies, which both work."""
    from deltalake import DeltaTable

    root = tmp_path / "t"
    rows = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "day": ["1", "1", "2", "2"]})
    write_deltalake(root, rows, partition_by=["day"])
    write_deltalake(root, pa.table({"x": [10.0, 30.0], "day": ["1", "1"]}),
                    partition_by=["day"], mode="overwrite")
    part = root / "day=1"
    assert len(list(part.glob("*.parquet"))) == 2  # one live file, one removed
    inside = [part, next(part.glob("*.parquet")), f"{part}/"]
    for target in inside:
        proc = subprocess.run([sys.executable, "-m", "pipeline", "fit", str(target), "--stats",
                               str(tmp_path / "s.json")], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            f"zscore: error: input {target} is inside {root}, a Delta Lake table, whose "
            "directory also holds files its later commits removed: give the table "
            f"{root} as input (one partition of it with --filter), or --input-format parquet "
            "to read these files as loose Parquet")
    # The first remedy: the live rows of the partition only.
    live = DeltaTable(root).to_pyarrow_table().to_pydict()
    want = [Fraction(x) for x, d in zip(live["x"], live["day"], strict=True) if d == "1"]
    proc = subprocess.run([sys.executable, "-m", "pipeline", "fit", str(root), "--filter",
                           "day=1", "--stats", str(tmp_path / "s.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    fitted = json.loads((tmp_path / "s.json").read_text())["features"]["x"]
    assert fitted["count"] == len(want) == 2
    assert fitted["mean"] == float(sum(want) / len(want))
    # The second: asked for, the loose reading counts both files on disk.
    proc = subprocess.run([sys.executable, "-m", "pipeline", "fit", str(part), "--stats",
                           str(tmp_path / "s.json"), "--input-format", "parquet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "on 4 rows in 2 files" in proc.stdout, proc.stdout
