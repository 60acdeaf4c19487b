"""The peers zscore is measured against: the same job, written the way each tool invites.

Each peer computes the global mean and population std of the features, then
writes every row with each feature replaced by ``(x - mean) / std`` (a zero
std replaced by 1, as scikit-learn does), partitioned by ``day`` like the
input.  Each runs as its own process, so its imports and start-up count::

    python bench/peers.py TOOL INPUT OUTPUT --features f1,f2,... [--threads 2]

The peers ``dask``, ``dask-ml``, ``duckdb`` and ``polars`` are the
straightforward version of each tool's idiom, not tuned to dodge its traps: a
fast result that is wrong (DuckDB and Polars averaging NaN into NaN; a
constant column's variance computed as a tiny non-zero number, turning it into
+-1) is what :mod:`check` is there to flag.  ``duckdb-careful`` and
``polars-careful`` are what a user who knows those traps writes: NaN treated
as missing in the statistics, constant columns found by min = max.  The
``pyarrow`` floor is careful too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

PEERS: dict[str, Callable[..., None]] = {}
SCHEDULER = ""  # --scheduler: the Dask peers use this external cluster


def peer(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        PEERS[name] = fn
        return fn
    return register


# ------------------------------------------------------------------ pyarrow
@peer("pyarrow")
def run_pyarrow(inp: str, out: str, features: list[str], threads: int) -> None:
    """The floor: a dataset scan for the moments, then per-file read -> compute -> write.

    Moments are exact in float64 (per-batch mean and M2, Chan's merge in file
    order) and a column is constant when its min equals its max, so this is a
    lower bound on the time of a correct single-machine implementation with no
    cluster at all.  Both passes work on ``threads`` files at a time; files
    are written to the same relative path, which mirrors the hive layout.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    Acc = tuple[int, float, float, float, float]  # count, mean, M2, min, max
    empty: Acc = (0, 0.0, 0.0, np.inf, -np.inf)

    def merge(a: Acc, b: Acc) -> Acc:
        if not b[0]:
            return a
        if not a[0]:
            return b
        n = a[0] + b[0]
        delta = b[1] - a[1]
        return (n, a[1] + delta * b[0] / n, a[2] + b[2] + delta * delta * a[0] * b[0] / n,
                min(a[3], b[3]), max(a[4], b[4]))

    def moments(fragment: ds.Fragment) -> dict[str, Acc]:
        acc = dict.fromkeys(features, empty)
        for batch in fragment.to_batches(columns=features, use_threads=False):
            for name, arr in zip(features, batch.columns, strict=True):
                x = arr.drop_null().to_numpy(zero_copy_only=False).astype(np.float64,
                                                                          copy=False)
                x = x[~np.isnan(x)]
                if x.size:
                    m = float(x.mean())
                    d = x - m
                    acc[name] = merge(acc[name], (x.size, m, float(np.dot(d, d)),
                                                  float(x.min()), float(x.max())))
        return acc

    pa.set_cpu_count(threads)
    dataset = ds.dataset(inp, format="parquet", partitioning="hive")
    fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
    with ThreadPoolExecutor(threads) as pool:
        per_file = list(pool.map(moments, fragments))
    stats = {}
    for name in features:
        total = empty
        for acc in per_file:
            total = merge(total, acc[name])
        n, mean, m2, lo, hi = total
        stats[name] = (mean, float(np.sqrt(m2 / n)) if lo < hi else 1.0)

    def transform(path: str) -> None:
        table = pq.read_table(path, use_threads=False, partitioning=None)
        for name in features:
            i = table.schema.get_field_index(name)
            col = table.column(i)
            mean, std = stats[name]
            z = pc.divide(pc.subtract(pc.cast(col, pa.float64()), mean), std)
            if col.type == pa.float32():
                z = pc.cast(z, pa.float32())
            table = table.set_column(i, name, z)
        dest = os.path.join(out, os.path.relpath(path, inp))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        pq.write_table(table, dest, compression="snappy", use_dictionary=["city"])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(transform, [f.path for f in fragments]))


# --------------------------------------------------------------------- dask
def _dask_frame(inp: str, threads: int) -> tuple[Any, Any]:
    """The input as a Dask DataFrame, and the cluster it runs on (a context manager).

    ``SCHEDULER`` set (``--scheduler``): a client of that external cluster;
    otherwise a ``LocalCluster`` of ``threads`` worker processes of 1 thread.
    """
    import contextlib

    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    if SCHEDULER:
        client = Client(SCHEDULER)
        return dd.read_parquet(inp), (client, contextlib.nullcontext())
    cluster = LocalCluster(n_workers=threads, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=":0")
    client = Client(cluster)
    return dd.read_parquet(inp), (client, cluster)


def _dask_write(df: Any, out: str) -> None:
    # The hive key is read back as a categorical; written as one, partition_on
    # writes an empty file for every category in every partition (NOTES.md).
    df = df.assign(day=df["day"].astype(str))
    df.to_parquet(out, partition_on=["day"], write_index=False, compression="snappy")


@peer("dask")
def run_dask(inp: str, out: str, features: list[str], threads: int) -> None:
    """Plain Dask DataFrame: ``mean``/``std`` in one compute, then ``to_parquet``."""
    import dask

    df, (client, cluster) = _dask_frame(inp, threads)
    with cluster, client:
        mean, std = dask.compute(df[features].mean(), df[features].std(ddof=0))
        std = std.where(std != 0, 1.0)
        df = df.assign(**{f: (df[f] - mean[f]) / std[f] for f in features})
        _dask_write(df, out)


@peer("dask-ml")
def run_dask_ml(inp: str, out: str, features: list[str], threads: int) -> None:
    """dask-ml's ``StandardScaler`` fitted and applied to the feature columns."""
    from dask_ml.preprocessing import StandardScaler

    df, (client, cluster) = _dask_frame(inp, threads)
    with cluster, client:
        scaler = StandardScaler().fit(df[features])
        z = scaler.transform(df[features])
        df = df.assign(**{f: z[f] for f in features})
        _dask_write(df, out)


# ------------------------------------------------------------------- duckdb
def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@peer("duckdb")
def run_duckdb(inp: str, out: str, features: list[str], threads: int,
               careful: bool = False) -> None:
    """One SQL statement: a CTE of AVG/STDDEV_POP, then COPY ... PARTITION_BY (day).

    ``careful``: NaN is treated as missing in the statistics (DuckDB, unlike
    pandas, averages it into NaN) and a column is constant when MIN = MAX.
    """
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    glob = os.path.join(inp, "**", "*.parquet").replace("'", "''")
    src = f"read_parquet('{glob}', hive_partitioning = true)"
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                             f"{src})").fetchall())
    aggs, repl = [], []
    for i, f in enumerate(features):
        x = _quote(f)
        if careful and types[f] in ("FLOAT", "DOUBLE"):
            x = f"CASE WHEN isnan({x}) THEN NULL ELSE {x} END"
        aggs.append(f"AVG({x}) AS m{i}, STDDEV_POP({x}) AS s{i}")
        constant = f"s.lo{i} = s.hi{i}" if careful else f"s.s{i} = 0"
        if careful:
            aggs.append(f"MIN({x}) AS lo{i}, MAX({x}) AS hi{i}")
        repl.append(f"({_quote(f)} - s.m{i}) / CASE WHEN {constant} THEN 1 ELSE s.s{i} END "
                    f"AS {_quote(f)}")
    target = out.replace("'", "''")
    con.execute(f"COPY (WITH s AS (SELECT {', '.join(aggs)} FROM {src}) "
                f"SELECT t.* REPLACE ({', '.join(repl)}) FROM {src} AS t, s) "
                f"TO '{target}' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (day))")
    con.close()


@peer("duckdb-careful")
def run_duckdb_careful(inp: str, out: str, features: list[str], threads: int) -> None:
    run_duckdb(inp, out, features, threads, careful=True)


# ------------------------------------------------------------------- polars
@peer("polars")
def run_polars(inp: str, out: str, features: list[str], threads: int,
               careful: bool = False) -> None:
    """A lazy scan, mean/std expressions collected, then a partitioned ``sink_parquet``.

    ``careful``: NaN is treated as missing in the statistics (Polars, unlike
    pandas, averages it into NaN) and a column is constant when min = max.
    """
    os.environ["POLARS_MAX_THREADS"] = str(threads)  # read once, at import
    import polars as pl

    lf = pl.scan_parquet(os.path.join(inp, "**", "*.parquet"), hive_partitioning=True)
    schema = lf.collect_schema()

    def value(f: str) -> pl.Expr:
        return pl.col(f).fill_nan(None) if careful and schema[f].is_float() else pl.col(f)

    aggs = [e for i, f in enumerate(features) for e in (
        value(f).mean().alias(f"m{i}"), value(f).std(ddof=0).alias(f"s{i}"),
        value(f).min().alias(f"lo{i}"), value(f).max().alias(f"hi{i}"))]
    row = lf.select(aggs).collect().row(0, named=True)
    exprs = []
    for i, f in enumerate(features):
        constant = row[f"lo{i}"] == row[f"hi{i}"] if careful else not row[f"s{i}"]
        exprs.append(((pl.col(f) - row[f"m{i}"]) / (1.0 if constant else row[f"s{i}"])).alias(f))
    lf.with_columns(exprs).sink_parquet(pl.PartitionBy(out, key="day"), compression="snappy",
                                        mkdir=True)


@peer("polars-careful")
def run_polars_careful(inp: str, out: str, features: list[str], threads: int) -> None:
    run_polars(inp, out, features, threads, careful=True)


# --------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tool", choices=sorted(PEERS))
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--features", required=True, help="comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scheduler", default="",
                        help="dask, dask-ml: an external cluster's address (default: a "
                             "LocalCluster of --threads worker processes)")
    args = parser.parse_args(argv)
    global SCHEDULER
    SCHEDULER = args.scheduler
    PEERS[args.tool](args.input, args.output, args.features.split(","), args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
