"""A deterministic, realistic sample training set, for the demo, tests and benchmarks.

Hive-partitioned by ``day``, a few files per day, with the traps real data has:
NaNs and nulls, a float32 column at a large offset, a column at mean 1e9 with
sigma 1e-3, int64 epoch seconds, a constant column, and pass-through ``id``,
``label``, ``city`` (string) and ``event_time`` (timestamp) columns.
"""

from __future__ import annotations

import os
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CITIES = np.array(["Lisbon", "Osaka", "Lagos", "Lima", "Oslo", "Pune", "Quito", "Reno"])

BASE_FEATURES = ("f_normal", "f_skewed", "f_float32_offset", "f_large_offset", "f_with_nan",
                 "f_count", "f_epoch_seconds", "f_constant")


def feature_names(n_features: int) -> list[str]:
    """The first eight are the named traps; more are ``f08``, ``f09``, ... floats."""
    names = list(BASE_FEATURES[:n_features])
    names += [f"f{i:02d}" for i in range(len(names), n_features)]
    return names


def make_table(rows: int, start: int, rng: np.random.Generator, n_features: int = 8,
               day: date | None = None) -> pa.Table:
    """One file's worth of rows; ``start`` numbers the ids."""
    cols: dict[str, pa.Array] = {"id": pa.array(np.arange(start, start + rows, dtype=np.int64))}
    for i, name in enumerate(feature_names(n_features)):
        if name == "f_normal":
            cols[name] = pa.array(rng.normal(3.0, 2.0, rows))
        elif name == "f_skewed":
            cols[name] = pa.array(rng.lognormal(0.0, 1.0, rows))
        elif name == "f_float32_offset":
            cols[name] = pa.array(rng.normal(1e4, 1.0, rows).astype(np.float32))
        elif name == "f_large_offset":
            cols[name] = pa.array(1e9 + 1e-3 * rng.standard_normal(rows))
        elif name == "f_with_nan":
            x = rng.normal(-1.0, 0.5, rows)
            x[rng.random(rows) < 0.05] = np.nan
            mask = rng.random(rows) < 0.02  # nulls as well as NaN
            cols[name] = pa.array(x, mask=mask)
        elif name == "f_count":
            cols[name] = pa.array(rng.poisson(20, rows).astype(np.int64))
        elif name == "f_epoch_seconds":
            base = 1_767_225_600 + 86_400 * ((day or date(2026, 1, 1)) - date(2026, 1, 1)).days
            cols[name] = pa.array(base + rng.integers(0, 86_400, rows, dtype=np.int64))
        elif name == "f_constant":
            cols[name] = pa.array(np.full(rows, 0.1))
        else:
            scale = 10.0 ** (i % 5 - 2)
            x = rng.normal(i, scale, rows)
            cols[name] = pa.array(x.astype(np.float32) if i % 3 == 0 else x)
    cols["label"] = pa.array(rng.integers(0, 2, rows, dtype=np.int8))
    cols["city"] = pa.array(CITIES[rng.integers(0, len(CITIES), rows)])
    base_ts = np.datetime64(day or date(2026, 1, 1), "s")
    cols["event_time"] = pa.array(base_ts + rng.integers(0, 86_400, rows).astype("m8[s]"))
    return pa.table(cols)


def make_dataset(path: str | os.PathLike[str], *, rows: int = 300_000, days: int = 4,
                 files_per_day: int = 3, n_features: int = 8, seed: int = 0,
                 row_group_size: int | None = None, compression: str = "snappy") -> list[str]:
    """Write a hive-partitioned dataset under ``path``; return the files' relative paths.

    The same arguments always produce the same bytes.
    """
    rng = np.random.default_rng(seed)
    n_files = days * files_per_day
    sizes = np.full(n_files, rows // n_files)
    sizes[: rows % n_files] += 1
    written = []
    start = 0
    for d in range(days):
        day = date(2026, 1, 1) + timedelta(days=d)
        folder = os.path.join(os.fspath(path), f"day={day.isoformat()}")
        os.makedirs(folder, exist_ok=True)
        for k in range(files_per_day):
            n = int(sizes[d * files_per_day + k])
            table = make_table(n, start, rng, n_features, day)
            start += n
            name = f"part-{k}.parquet"
            pq.write_table(table, os.path.join(folder, name), compression=compression,
                           row_group_size=row_group_size, use_dictionary=["city"])
            written.append(f"day={day.isoformat()}/{name}")
    return written
