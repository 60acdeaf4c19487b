"""Iceberg tables written by pyiceberg in a real SQL catalog on SQLite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from procs import error_line, zscore
from pyiceberg.catalog.sql import SqlCatalog


def exact(values) -> tuple[float, float]:
    xs = [Fraction(float(v)) for v in values]
    mean = sum(xs, Fraction(0)) / len(xs)
    m2 = sum(((x - mean) ** 2 for x in xs), Fraction(0))
    return float(mean), math.sqrt(float(m2 / len(xs)))


def rows(n: int, seed: int, offset: float, parts=("a", "b")) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"p": np.repeat(list(parts), n // len(parts)),
                     "x": rng.normal(offset, 2.0, n), "k": rng.integers(0, 500, n)})


class Lake:
    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root}/catalog.db"
        self.warehouse = f"file://{root}/warehouse"
        self.catalog = SqlCatalog("lake", uri=self.uri, warehouse=self.warehouse)
        self.catalog.create_namespace("ns")


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    """ns.events: append 20,000; delete partition a (drops files); append 4,000; delete
    rows with x > 101 (rewrites files)."""
    lake = Lake(tmp_path_factory.mktemp("iceberg"))
    first = rows(20_000, 1, 100.0)
    tbl = lake.catalog.create_table("ns.events", schema=first.schema)
    with tbl.update_spec() as spec:
        spec.add_identity("p")
    tbl.append(first)
    tbl.delete("p == 'a'")
    tbl.append(rows(4_000, 2, 99.0))
    tbl.delete("x > 101.0")
    return lake


@pytest.fixture
def catalog_env(lake, tmp_path):
    """The catalog configured through pyiceberg's environment variables (read by pyiceberg
    at import: hence a zscore process of its own, see :func:`cli`)."""
    lake.env = {**os.environ, "PYICEBERG_HOME": str(tmp_path),  # not the machine's yaml
                "PYICEBERG_CATALOG__LAKE__TYPE": "sql",
                "PYICEBERG_CATALOG__LAKE__URI": lake.uri,
                "PYICEBERG_CATALOG__LAKE__WAREHOUSE": lake.warehouse}
    return lake


def cli(lake: Lake, *args) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], env=lake.env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def check_stats(path: Path, table: pa.Table) -> dict:
    stats = json.loads(path.read_text())
    assert stats["input"]["rows"] == table.num_rows
    for name in ("x", "k"):
        mean, std = exact(table.column(name).to_pylist())
        assert stats["features"][name]["mean"] == pytest.approx(mean, rel=1e-12)
        assert stats["features"][name]["std"] == pytest.approx(std, rel=1e-12)
    return stats


def test_a_catalog_table_counts_only_the_rows_of_its_snapshot(catalog_env, tmp_path):
    tbl = catalog_env.catalog.load_table("ns.events")
    table = tbl.scan().to_arrow()
    on_disk = sum(pq.read_metadata(p).num_rows
                  for p in (catalog_env.root / "warehouse").rglob("*.parquet"))
    assert on_disk > table.num_rows + 10_000
    code, _, err = cli(catalog_env, "fit", "ns.events", "--catalog", "lake",
                       "--stats", tmp_path / "s.json")
    assert code == 0, err
    stats = check_stats(tmp_path / "s.json", table)
    assert stats["input"]["table"] == {
        "format": "iceberg", "uri": tbl.metadata_location, "table": "ns.events",
        "catalog": "lake", "snapshot_id": tbl.current_snapshot().snapshot_id,
        "partition_columns": ["p"]}


def test_every_snapshot_by_id_and_by_metadata_file(lake, tmp_path, capsys):
    tbl = lake.catalog.load_table("ns.events")
    for snap in tbl.snapshots():
        table = tbl.scan(snapshot_id=snap.snapshot_id).to_arrow()
        out = tmp_path / f"{snap.snapshot_id}.json"
        code, _, err = zscore(capsys, "fit", tbl.metadata_location.removeprefix("file://"),
                              "--snapshot-id", snap.snapshot_id, "--stats", out)
        assert code == 0, err
        stats = check_stats(out, table)
        assert stats["input"]["table"]["snapshot_id"] == snap.snapshot_id


def test_identity_partition_filters_and_hive_output(catalog_env, tmp_path):
    tbl = catalog_env.catalog.load_table("ns.events")
    table = tbl.scan(row_filter="p == 'b'").to_arrow()
    out = tmp_path / "out"
    code, _, err = cli(catalog_env, "run", "ns.events", out, "--catalog", "lake", "--filter",
                       "p == b", "--no-report")
    assert code == 0, err
    check_stats(out / "_stats.json", table)
    assert sorted(p.parent.name for p in out.rglob("*.parquet")) == \
        ["p=b"] * len(list(out.rglob("*.parquet")))
    back = duckdb.sql(f"select p::varchar, x from read_parquet('{out}/**/*.parquet', "
                      "hive_partitioning=true) order by x").fetchall()
    mean, std = exact(table.column("x").to_pylist())
    expected = sorted((Fraction(v) - Fraction(mean)) / Fraction(std)
                      for v in table.column("x").to_pylist())
    assert [p for p, _ in back] == ["b"] * table.num_rows
    for (_, got), z in zip(back, expected, strict=True):
        assert got == pytest.approx(float(z), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("args, message", [
    (["ns.missing", "--catalog", "lake"], "Iceberg catalog 'lake' has no table ns.missing"),
    (["ns.events", "--catalog", "lake", "--snapshot-id", "12345"],
     "Iceberg table ns.events has no snapshot 12345"),
    (["ns.events", "--catalog", "lake", "--version", "1"], "is not a Delta table"),
    (["ns.events", "--catalog", "lake", "--filter", "k == 1"],
     "'k', which is not a partition column of the table ns.events (its partition columns: p)"),
])
def test_bad_iceberg_inputs_exit_2(catalog_env, tmp_path, args, message):
    code, _, err = cli(catalog_env, "fit", *args, "--stats", tmp_path / "s.json")
    assert code == 2
    assert message in error_line(err)


def test_a_table_directory_needs_its_catalog_or_metadata_file(lake, tmp_path, capsys):
    directory = lake.root / "warehouse" / "ns" / "events"
    code, _, err = zscore(capsys, "fit", directory, "--stats", tmp_path / "s.json")
    assert code == 2
    newest = sorted((directory / "metadata").glob("*.metadata.json"))[-1]
    assert (f"input {directory} is an Iceberg table directory without version-hint.text"
            in error_line(err))
    assert f"(the newest here is {newest})" in error_line(err)
    # The remedy, followed: the metadata file named (here the current one) is read.
    current = lake.catalog.load_table("ns.events")
    assert current.metadata_location == f"file://{newest}"
    code, _, err = zscore(capsys, "fit", newest, "--stats", tmp_path / "s.json")
    assert code == 0, err
    check_stats(tmp_path / "s.json", current.scan().to_arrow())


def test_a_renamed_column_is_refused(lake, tmp_path, capsys):
    tbl = lake.catalog.create_table("ns.renamed", schema=rows(10, 3, 0.0).schema)
    tbl.append(rows(100, 3, 0.0))
    with tbl.update_schema() as update:
        update.rename_column("x", "y")
    code, _, err = zscore(capsys, "fit", tbl.metadata_location, "--stats", tmp_path / "s.json")
    assert code == 2
    assert "column 'y' was renamed from 'x'" in error_line(err)


def test_output_as_a_new_iceberg_table_in_the_same_catalog(catalog_env, tmp_path):
    source = catalog_env.catalog.load_table("ns.events").scan().to_arrow()
    code, _, err = cli(catalog_env, "run", "ns.events", "ns.events_z", "--catalog", "lake",
                       "--output-format", "iceberg", "--no-report")
    assert code == 0, err
    made = catalog_env.catalog.load_table("ns.events_z")
    assert [f.name for f in made.spec().fields] == ["p"]
    got = made.scan().to_arrow().sort_by([("p", "ascending"), ("x", "ascending")])
    assert got.num_rows == source.num_rows
    mean, std = exact(source.column("x").to_pylist())
    expected = sorted(zip(source.column("p").to_pylist(),
                          ((Fraction(v) - Fraction(mean)) / Fraction(std)
                           for v in source.column("x").to_pylist()), strict=True))
    for (p, z), g_p, g_x in zip(expected, got.column("p").to_pylist(),
                                got.column("x").to_pylist(), strict=True):
        assert g_p == p
        assert g_x == pytest.approx(float(z), rel=1e-12, abs=1e-12)
    # DuckDB reads the files pyiceberg plans (its iceberg extension cannot be downloaded here).
    files = [t.file.file_path.removeprefix("file://") for t in made.scan().plan_files()]
    duck = duckdb.sql(f"select p, x from read_parquet({files!r}) order by p, x").fetchall()
    assert [x for _, x in duck] == got.column("x").to_pylist()
    code, _, err = cli(catalog_env, "run", "ns.events", "ns.events_z", "--catalog", "lake",
                       "--output-format", "iceberg", "--no-report")
    assert code == 2
    assert ("Iceberg table ns.events_z already exists in catalog 'lake'; choose another "
            "name or drop it first") in error_line(err)


def test_an_iceberg_output_needs_an_iceberg_input_from_a_catalog(lake, tmp_path, capsys):
    tbl = lake.catalog.load_table("ns.events")
    code, _, err = zscore(capsys, "run", tbl.metadata_location, tmp_path / "out",
                          "--output-format", "iceberg")
    assert code == 2
    assert ("--output-format iceberg makes a new table in the catalog of an Iceberg input "
            "named with --catalog; this input is not one: choose --output-format parquet or "
            "--output-format delta") in error_line(err)
    assert not (tmp_path / "out").exists()


def add_position_deletes(tbl, positions: list[int]) -> None:
    """Commit a position delete file for the table's one data file.

    pyiceberg writes no delete files (its deletes rewrite data files), so its own
    manifest writer is used with a DELETES content; pyiceberg's reader then
    applies the deletes (checked by the caller): the snapshot is a valid one.
    """
    from pyiceberg.manifest import (
        DataFile,
        DataFileContent,
        FileFormat,
        ManifestContent,
        ManifestEntry,
        ManifestEntryStatus,
        ManifestWriterV2,
    )
    from pyiceberg.typedef import Record

    class DeleteManifestWriter(ManifestWriterV2):
        def content(self):
            return ManifestContent.DELETES

        @property
        def _meta(self):
            return {**super()._meta, "content": "deletes"}

    data = next(iter(tbl.scan().plan_files())).file
    location = tbl.location().removeprefix("file://")
    path = f"{location}/data/deletes-0.parquet"
    ids = {"file_path": b"2147483546", "pos": b"2147483545"}  # reserved by the Iceberg spec
    schema = pa.schema([pa.field("file_path", pa.string(), False,
                                 {b"PARQUET:field_id": ids["file_path"]}),
                        pa.field("pos", pa.int64(), False, {b"PARQUET:field_id": ids["pos"]})])
    pq.write_table(pa.table({"file_path": [data.file_path] * len(positions), "pos": positions},
                            schema=schema), path)
    with tbl.transaction() as tx:
        append = tx.update_snapshot().fast_append()
        delete = DataFile.from_args(content=DataFileContent.POSITION_DELETES,
                                    file_path=f"file://{path}", file_format=FileFormat.PARQUET,
                                    partition=Record(), record_count=len(positions),
                                    file_size_in_bytes=os.path.getsize(path))
        delete.spec_id = 0
        out = tbl.io.new_output(f"{location}/metadata/deletes-m0.avro")
        with DeleteManifestWriter(tbl.spec(), tbl.schema(), out, append._snapshot_id,
                                  "null") as writer:
            writer.add(ManifestEntry.from_args(status=ManifestEntryStatus.ADDED,
                                               snapshot_id=append._snapshot_id,
                                               sequence_number=None, file_sequence_number=None,
                                               data_file=delete))
        manifest = writer.to_manifest_file()
        append._process_manifests = lambda manifests: [*manifests, manifest]
        append.commit()


def test_row_level_deletes_are_refused(lake, tmp_path, capsys):
    tbl = lake.catalog.create_table("ns.deletes", schema=pa.schema([("x", pa.float64())]),
                                    properties={"format-version": "2"})
    tbl.append(pa.table({"x": [1.0, 2.0, 3.0, 4.0]}))
    add_position_deletes(tbl, [0, 3])
    tbl = lake.catalog.load_table("ns.deletes")
    assert tbl.scan().to_arrow().column("x").to_pylist() == [2.0, 3.0]  # pyiceberg applies them
    code, _, err = zscore(capsys, "fit", tbl.metadata_location, "--stats", tmp_path / "s.json")
    assert code == 2
    assert "has 1 delete file(s) (row-level deletes, e.g. deletes-0.parquet), which zscore " \
           "cannot apply" in error_line(err)
    assert not (tmp_path / "s.json").exists()


def test_an_iceberg_output_is_logged_to_mlflow_from_its_data_directory(catalog_env, tmp_path):
    # OUTPUT names a table, not a directory: lineage must log what was published (the
    # table's data location holding _stats.json and _SUCCESS), after a successful commit.
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    catalog_env.env = {**catalog_env.env, "MLFLOW_TRACKING_URI": uri}
    code, out, err = cli(catalog_env, "run", "ns.events", "ns.events_logged", "--catalog",
                         "lake", "--output-format", "iceberg", "--no-report", "--mlflow")
    assert code == 0, err
    run_id = out.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    logged = Path(client.download_artifacts(run_id, "", str(tmp_path / "got")))
    stats = [p for p in logged.rglob("_stats.json")]
    assert len(stats) == 1
    assert json.loads(stats[0].read_text())["input"]["rows"] == \
        catalog_env.catalog.load_table("ns.events").scan().to_arrow().num_rows
