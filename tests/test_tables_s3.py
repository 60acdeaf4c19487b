"""Delta tables on a real S3-compatible server (moto on 127.0.0.1): read and written."""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from procs import run_zscore
from test_s3 import CANARY, s3  # noqa: F401 - the moto server fixture


def test_a_delta_table_on_s3_is_read_at_its_version_and_written_as_one(s3, tmp_path):  # noqa: F811
    options = {"AWS_ENDPOINT_URL": s3["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true",
               "AWS_REGION": "us-east-1"}
    uri = "s3://zsb/lake/events"
    rng = np.random.default_rng(7)
    for n in (3000, 1000):  # an overwrite: the first 3,000 rows stay in the bucket
        write_deltalake(uri, pa.table({"day": np.repeat(["d1", "d2"], n // 2),
                                       "x": rng.normal(10.0, 2.0, n)}),
                        partition_by=["day"], mode="overwrite", storage_options=options)
    live = DeltaTable(uri, storage_options=options).to_pyarrow_table()
    assert live.num_rows == 1000
    r = run_zscore("run", uri, "s3://zsb/lake/events_z", "--no-report",
                   "--stats", tmp_path / "s.json", env={**os.environ, **s3})
    assert r.returncode == 0, r.stderr
    assert CANARY not in r.stdout + r.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    xs = [Fraction(v) for v in live.column("x").to_pylist()]
    mean = sum(xs, Fraction(0)) / len(xs)
    assert stats["input"]["rows"] == 1000
    assert stats["input"]["table"] == {"format": "delta", "uri": uri, "version": 1,
                                       "partition_columns": ["day"]}
    assert math.isclose(stats["features"]["x"]["mean"], float(mean), rel_tol=1e-12)
    out = DeltaTable("s3://zsb/lake/events_z", storage_options=options)
    assert out.version() == 0
    assert out.to_pyarrow_table().num_rows == 1000
    # A partition directory inside the table, given as input, is refused: its files on
    # S3 include the 3,000 rows the overwrite removed.
    r = run_zscore("fit", f"{uri}/day=d1", "--stats", tmp_path / "p.json",
                   env={**os.environ, **s3})
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"zscore: error: input {uri}/day=d1 is inside {uri}, a Delta Lake table")
    assert not (tmp_path / "p.json").exists()


def test_an_iceberg_table_on_s3_is_read_at_its_snapshot_and_written_as_a_new_table(
        s3, tmp_path):  # noqa: F811
    """A SQL catalog (SQLite) whose warehouse is on S3: the input's data files, the new
    table's data files and both tables' metadata all live in the bucket."""
    from pyiceberg.catalog.sql import SqlCatalog

    props = {"uri": f"sqlite:///{tmp_path}/c.db", "warehouse": "s3://zsb/wh",
             "s3.endpoint": s3["AWS_ENDPOINT_URL"], "s3.access-key-id": "testing",
             "s3.secret-access-key": s3["AWS_SECRET_ACCESS_KEY"], "s3.region": "us-east-1"}
    catalog = SqlCatalog("lake", **props)
    catalog.create_namespace("ns")
    rng = np.random.default_rng(3)
    first = pa.table({"p": np.repeat(["a", "b"], 1500), "x": rng.normal(5.0, 2.0, 3000)})
    tbl = catalog.create_table("ns.ev", schema=first.schema)
    with tbl.update_spec() as spec:
        spec.add_identity("p")
    tbl.append(first)
    tbl.delete("p == 'a'")  # drops the files of partition a from the snapshot, not the bucket
    live = tbl.scan().to_arrow()
    assert live.num_rows == 1500
    env = {**os.environ, **s3, "PYICEBERG_HOME": str(tmp_path)}
    env.update({f"PYICEBERG_CATALOG__LAKE__{k.upper().replace('.', '__').replace('-', '_')}": v
                for k, v in {"type": "sql", **props}.items()})
    r = run_zscore("run", "ns.ev", "ns.ev_z", "--catalog", "lake", "--output-format",
                   "iceberg", "--no-report", "--stats", tmp_path / "s.json", env=env)
    assert r.returncode == 0, r.stderr
    assert CANARY not in r.stdout + r.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    xs = [Fraction(v) for v in live.column("x").to_pylist()]
    mean = sum(xs, Fraction(0)) / len(xs)
    std = math.sqrt(sum(((x - mean) ** 2 for x in xs), Fraction(0)) / len(xs))
    assert stats["input"]["rows"] == 1500
    assert math.isclose(stats["features"]["x"]["mean"], float(mean), rel_tol=1e-12)
    made = SqlCatalog("lake", **props).load_table("ns.ev_z")
    assert made.metadata.location.startswith("s3://zsb/wh/")
    got = sorted(made.scan().to_arrow().column("x").to_pylist())
    want = sorted(float((x - mean) / Fraction(std)) for x in xs)
    assert len(got) == 1500
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-12)
