"""Is a tool's output a correct z-scored copy of the input?  Checked independently of every tool.

Against the reference facts of the input (:func:`generate.describe`):

* the output holds every row exactly once: row count and the sum of ``id``;
* every column is there (pass-through ones too, the hive key as a directory
  or a column);
* each feature keeps its number of valid values (neither null nor NaN): a
  column that became all-NaN, or lost or gained missing values, fails;
* no feature holds an infinite value;
* each non-constant feature has mean 0 and std 1 (population), within
  ``TOL``, accumulated in float64 over the output;
* each constant feature is 0 (within ``TOL``) wherever it is valid: the
  scikit-learn and zscore convention, where a zero std is replaced by 1; a
  variance computed as a tiny non-zero number instead turns it into +-1.

Sums of z-scores and of their squares do not cancel catastrophically (mean 0,
std 1), so float64 accumulation with numpy's pairwise sums is exact enough
here.  ``TOL`` = 1e-3 sigma leaves room for a correct float64 implementation
(the float64 spacing at 1e9 is 1.2e-7, i.e. 1.2e-4 sigma of the column at 1e9
with sigma 1e-3, so a mean that is merely rounded can be 6e-5 sigma off) and
fails a sum-of-squares variance at that offset.  The largest deviation is
reported, so smaller inaccuracies (float32 accumulation) are visible too.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from generate import data_files

TOL = 1e-3


def _file_sums(path: str, features: list[str]) -> dict[str, Any]:
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    present = [n for n in features if n in names]
    acc = {n: np.zeros(5) for n in present}  # valid, sum, sum of squares, inf, max |x|
    id_sum = 0
    cols = (["id"] if "id" in names else []) + present
    for batch in pf.iter_batches(batch_size=1 << 16, columns=cols, use_threads=False):
        if "id" in names:
            id_sum += int(pc.sum(batch.column("id")).as_py() or 0)
        for name in present:
            x = batch.column(name).drop_null().to_numpy(zero_copy_only=False)
            x = x.astype(np.float64, copy=False)
            finite = np.isfinite(x)
            inf = int(np.isinf(x).sum())
            x = x[finite]
            a = acc[name]
            a[0] += x.size + inf
            a[1] += x.sum()
            a[2] += np.dot(x, x)
            a[3] += inf
            if x.size:
                a[4] = max(a[4], float(np.abs(x).max()))
    return {"rows": pf.metadata.num_rows, "id_sum": id_sum, "acc": acc,
            "columns": pf.schema_arrow.names}


def check_output(out_dir: str, ref: dict[str, Any]) -> dict[str, Any]:
    """Check ``out_dir`` against the input's reference facts; return a JSON-able verdict.

    ``verdict["ok"]`` is True only when no problem was found; ``problems``
    lists them in words (``f_with_nan: 0 valid values, input has 1,862,235``).
    """
    files = data_files(out_dir) if os.path.isdir(out_dir) else []
    problems: list[str] = []
    if not files:
        return {"ok": False, "files": 0, "problems": [f"no Parquet file under {out_dir}"]}
    features = list(ref["features"])
    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(lambda rel: _file_sums(os.path.join(out_dir, rel), features),
                              files))
    rows = sum(p["rows"] for p in parts)
    if rows != ref["rows"]:
        problems.append(f"{rows:,} rows, input has {ref['rows']:,}")
    id_sum = sum(p["id_sum"] for p in parts)
    if rows == ref["rows"] and id_sum != ref["id_sum"]:
        problems.append("rows lost or duplicated (sum of id differs from the input's)")
    columns = set().union(*(p["columns"] for p in parts))
    in_dirs = {part.split("=")[0] for f in files for part in f.split("/")[:-1] if "=" in part}
    missing = [c for c in ref["columns"] if c not in columns]
    missing += [k for k in ref["partition_keys"] if k not in columns and k not in in_dirs]
    if missing:
        problems.append(f"columns missing: {', '.join(missing)}")
    per_feature: dict[str, dict[str, float]] = {}
    worst_mean = worst_std = 0.0
    for name in features:
        accs = [p["acc"][name] for p in parts if name in p["acc"]]
        if not accs:
            continue
        valid, s, s2, inf, maxabs = np.sum(accs, axis=0)[:4].tolist() + [
            max(a[4] for a in accs)]
        n = valid - inf
        mean = s / n if n else float("nan")
        std = float(np.sqrt(max(s2 / n - mean * mean, 0.0))) if n else float("nan")
        per_feature[name] = {"valid": int(valid), "mean": mean, "std": std, "inf": int(inf)}
        expected = ref["valid"][name]
        if valid != expected:
            problems.append(f"{name}: {int(valid):,} valid values, input has {expected:,}"
                            + (" (all NaN or null)" if valid == 0 else ""))
            continue
        if inf:
            problems.append(f"{name}: {int(inf):,} infinite values")
            continue
        if name in ref["constant"]:
            if not maxabs <= TOL:
                problems.append(f"{name}: constant input, output not 0 (max |z| {maxabs:.3g})")
            continue
        worst_mean, worst_std = max(worst_mean, abs(mean)), max(worst_std, abs(std - 1))
        if not abs(mean) <= TOL:
            problems.append(f"{name}: mean {mean:.3g}, expected 0")
        if not abs(std - 1) <= TOL:
            problems.append(f"{name}: std {std:.6g}, expected 1")
    return {"ok": not problems, "files": len(files), "rows": rows, "problems": problems,
            "max_abs_mean": worst_mean, "max_abs_std_minus_1": worst_std,
            "dtypes": _dtypes(os.path.join(out_dir, files[0]), features),
            "features": per_feature}


def _dtypes(path: str, features: list[str]) -> dict[str, str]:
    schema = pq.read_schema(path)
    return {f.name: str(f.type) for f in schema if f.name in features}
