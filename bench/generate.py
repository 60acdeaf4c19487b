"""Deterministic benchmark datasets, generated once into ``bench/data/<size>``.

Every size uses :func:`pipeline.sample.make_dataset` with 32 features, so the
benchmark sees the same traps as the tests (NaNs and nulls, a constant column,
columns at offsets 1e4 and 1e9, int64 columns, float32 columns) plus the
pass-through ``id``, ``label``, ``city`` (string) and ``event_time`` columns, in
hive partitions ``day=YYYY-MM-DD``.  S, M and L have files of the same size
(250,000 rows, about 55 MB of snappy Parquet), so L vs M measures scaling
with the number of files and not with their size.

A dataset is written to ``<size>.partial`` and renamed when complete, then
described in ``<size>.json``: the generator's parameters (a directory made
with other parameters is refused, not silently reused) and reference facts
used to check every tool's output: row count, sum of ``id``, and the number
of valid (neither null nor NaN) values of each feature.

Usage::

    python bench/generate.py S M        # sizes: XS S M L many
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.sample import make_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
N_FEATURES = 32
PASS_THROUGH = ("id", "label")  # numeric columns that are not features (--exclude id,label)


@dataclass(frozen=True)
class Spec:
    """Arguments of :func:`pipeline.sample.make_dataset` for one size."""

    rows: int
    days: int
    files_per_day: int
    n_features: int = N_FEATURES
    seed: int = 0
    compression: str = "snappy"

    @property
    def files(self) -> int:
        return self.days * self.files_per_day


SIZES: dict[str, Spec] = {
    "XS": Spec(rows=20_000, days=2, files_per_day=2),          # fixed costs, smoke tests
    "S": Spec(rows=2_000_000, days=4, files_per_day=2),         # 8 files, ~0.45 GB
    "M": Spec(rows=10_000_000, days=10, files_per_day=4),       # 40 files, ~2.2 GB
    "L": Spec(rows=40_000_000, days=40, files_per_day=4),       # 160 files, ~8.8 GB
    "many": Spec(rows=1_000_000, days=100, files_per_day=100),  # 10,000 files of 100 rows
}


def data_files(root: str) -> list[str]:
    """Relative paths of the Parquet files under ``root``, sorted; hidden names skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if not name.startswith((".", "_")):
                out.append(os.path.normpath(os.path.join(rel_dir, name)))
    return sorted(out)


def features_of(schema: pa.Schema) -> list[str]:
    """The columns zscore normalizes with ``--exclude id,label``: numeric, not pass-through."""
    return [f.name for f in schema if f.name not in PASS_THROUGH and
            (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]


def _file_facts(path: str, features: list[str]) -> dict[str, Any]:
    pf = pq.ParquetFile(path)
    valid = dict.fromkeys(features, 0)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    id_sum = 0
    for batch in pf.iter_batches(batch_size=1 << 16, columns=["id", *features],
                                 use_threads=False):
        id_sum += int(pc.sum(batch.column(0)).as_py() or 0)
        for name, arr in zip(batch.schema.names[1:], batch.columns[1:], strict=True):
            x = arr.drop_null().to_numpy(zero_copy_only=False).astype(np.float64)
            x = x[~np.isnan(x)]
            valid[name] += x.size
            if x.size:
                lo[name] = min(lo.get(name, np.inf), float(x.min()))
                hi[name] = max(hi.get(name, -np.inf), float(x.max()))
    return {"rows": pf.metadata.num_rows, "id_sum": id_sum, "valid": valid, "min": lo,
            "max": hi, "bytes": os.path.getsize(path)}


def describe(root: str) -> dict[str, Any]:
    """Reference facts of a dataset, computed independently of every tool benchmarked."""
    files = data_files(root)
    schema = pq.read_schema(os.path.join(root, files[0]))
    features = features_of(schema)
    with ThreadPoolExecutor(2) as pool:
        facts = list(pool.map(lambda rel: _file_facts(os.path.join(root, rel), features),
                              files))
    valid = {name: sum(f["valid"][name] for f in facts) for name in features}
    lo = {n: min(f["min"].get(n, np.inf) for f in facts) for n in features}
    hi = {n: max(f["max"].get(n, -np.inf) for f in facts) for n in features}
    return {"files": len(files), "rows": sum(f["rows"] for f in facts),
            "bytes": sum(f["bytes"] for f in facts), "id_sum": sum(f["id_sum"] for f in facts),
            "features": features, "constant": [n for n in features if lo[n] == hi[n]],
            "valid": valid, "columns": schema.names, "partition_keys": ["day"]}


def info_path(size: str) -> str:
    return os.path.join(DATA, f"{size}.json")


def ensure(size: str, *, log: Any = print) -> tuple[str, dict[str, Any]]:
    """``bench/data/<size>`` and its description, generating it only if absent.

    Raises
    ------
    SystemExit
        When the directory exists but was made with other parameters.
    """
    spec = SIZES[size]
    root = os.path.join(DATA, size)
    if os.path.isdir(root) and os.path.exists(info_path(size)):
        with open(info_path(size)) as fh:
            info = json.load(fh)
        if info.get("spec") != asdict(spec):
            raise SystemExit(f"{root} was generated with {info.get('spec')}, not {asdict(spec)};"
                             f" delete it and {info_path(size)} to regenerate")
        return root, info
    partial = root + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    log(f"generating {size}: {spec.rows:,} rows in {spec.files} files under {root} ...")
    t0 = time.perf_counter()
    make_dataset(partial, rows=spec.rows, days=spec.days, files_per_day=spec.files_per_day,
                 n_features=spec.n_features, seed=spec.seed, compression=spec.compression)
    seconds = time.perf_counter() - t0
    info = describe(partial)
    info.update(spec=asdict(spec), size=size, generate_seconds=round(seconds, 1))
    os.replace(partial, root)
    with open(info_path(size) + ".tmp", "w") as fh:
        json.dump(info, fh, indent=1)
    os.replace(info_path(size) + ".tmp", info_path(size))
    log(f"generated {size}: {info['rows']:,} rows, {info['files']} files, "
        f"{info['bytes'] / 1e9:.2f} GB in {seconds:.0f} s")
    return root, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="+", choices=sorted(SIZES))
    args = parser.parse_args(argv)
    for size in args.sizes:
        root, info = ensure(size)
        print(f"{size}: {root}: {info['rows']:,} rows, {info['files']} files, "
              f"{info['bytes'] / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
