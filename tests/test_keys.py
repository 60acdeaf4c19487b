"""Per-key statistics at scale (issue 13 §5): exact per key for every dtype, hive keys,
the cache, the key-count guard, the format 3 arrays, ``inspect`` and ``diff`` per key."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from procs import error_line, zscore

import pipeline
from pipeline.artifact import FittedStats

pytestmark = pytest.mark.fast

DTYPES = {"f16": pa.float16(), "f32": pa.float32(), "f64": pa.float64(), "i8": pa.int8(),
          "i64": pa.int64(), "u64": pa.uint64()}


def _exact(values: list) -> tuple[Fraction, Fraction]:
    """Exact mean and population variance of ``values`` (rationals), the test's own."""
    xs = [Fraction(v) for v in values]
    mean = sum(xs, Fraction(0)) / len(xs)
    return mean, sum(((x - mean) ** 2 for x in xs), Fraction(0)) / len(xs)


def _close(got: float, want: Fraction, scale: float) -> bool:
    return abs(Fraction(got) - want) <= Fraction(1e-12) * Fraction(scale) + \
        Fraction(math.ulp(float(want)))


def _table(rng: np.random.Generator, n: int, keys: list) -> pa.Table:
    key = [keys[i] for i in rng.integers(0, len(keys), n)]
    key[: min(n, 1500)] = [keys[0]] * min(n, 1500)  # one key past SMALL values in a batch
    cols = {"k": pa.array(key),
            "f16": pa.array(rng.normal(3, 1, n).astype(np.float16)),
            "f32": pa.array((1e4 + rng.normal(0, 1, n)).astype(np.float32)),
            "f64": pa.array(np.where(rng.random(n) < 0.05, np.nan, 1e9 + 1e-3 *
                                     rng.standard_normal(n))),
            "i8": pa.array(rng.integers(-128, 128, n).astype(np.int8),
                           mask=rng.random(n) < 0.05),
            "i64": pa.array(1_700_000_000_000_000_000 + rng.integers(0, 10**12, n)),
            "u64": pa.array(np.uint64(2**64 - 1) - rng.integers(0, 10**6, n).astype(np.uint64))}
    return pa.table(cols)


@pytest.fixture(scope="module")
def typed(datasets):
    rng = np.random.default_rng(3)
    keys = ["a", "b", None, "New York", "x\ty"]
    tables = {f"p{i}.parquet": _table(rng, n, keys) for i, n in enumerate([5000, 3, 2600])}
    return datasets.write("keys-typed", tables, row_group_size=1700), pa.concat_tables(
        tables.values())


def test_every_key_of_every_dtype_is_exact(cluster, typed):
    path, table = typed
    stats = pipeline.fit(str(path), group_by="k", client=cluster)
    rows = defaultdict(lambda: defaultdict(list))
    for rec in table.to_pylist():
        for name in DTYPES:
            v = rec[name]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                rows[rec["k"]][name].append(v)
    assert sorted(stats.groups.keys, key=repr) == sorted(((k,) for k in rows), key=repr)
    for key, feats in rows.items():
        for name, values in feats.items():
            f = stats.groups.keys[(key,)][name]
            mean, var = _exact(values)
            std = math.sqrt(var)
            assert f.count == len(values), (key, name)
            assert _close(f.mean, mean, std), (key, name, f.mean, float(mean))
            assert abs(f.std - std) <= 1e-12 * std, (key, name, f.std, std)
            assert (f.min, f.max) == (min(values), max(values))


def test_bit_identical_whatever_the_workers(cluster, typed):
    from distributed import Client, LocalCluster

    path, _ = typed
    two = pipeline.fit(str(path), group_by="k", client=cluster)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as lc, Client(lc, set_as_default=False) as one:
        single = pipeline.fit(str(path), group_by="k", client=one)
    assert json.loads(two.to_json())["groups"] == json.loads(single.to_json())["groups"]


def test_format_3_arrays_round_trip_and_format_2_still_loads(cluster, typed, tmp_path):
    path, table = typed
    stats = pipeline.fit(str(path), group_by="k", client=cluster)
    stats.save(tmp_path / "s.json")
    text = (tmp_path / "s.json").read_text()
    data = json.loads(text)
    assert data["format_version"] == 3 and sorted(data["groups"]) == ["by", "features", "keys"]
    after = text.split('"groups"')[1].splitlines()
    assert len(after) <= len(DTYPES) + 8  # one line per feature's arrays, not per number
    back = FittedStats.load(tmp_path / "s.json")
    old = {**stats.to_dict(), "format_version": 2, "groups": stats.groups.to_dict()}
    assert "features" not in old["groups"]  # the object-per-key layout of format 2
    v2 = FittedStats.from_dict(json.loads(json.dumps(old)))
    df = table.to_pandas()
    ours, then, fresh = (pipeline.apply(df, s) for s in (back, v2, stats))
    for name in DTYPES:
        np.testing.assert_array_equal(ours[name].to_numpy(), fresh[name].to_numpy())
        np.testing.assert_array_equal(then[name].to_numpy(), fresh[name].to_numpy())


def _hive(datasets):
    rng = np.random.default_rng(5)
    files = {}
    for city in ("New%20York", "Paris", "__HIVE_DEFAULT_PARTITION__"):
        for n in (1, 22):
            files[f"city={city}/n={n}/p.parquet"] = pa.table(
                {"x": rng.normal(len(city) * n, n, 300), "y": rng.integers(0, 9, 300)})
    return datasets.write("keys-hive", files)


def test_hive_partition_keys_as_readers_show_them(cluster, datasets, tmp_path, capsys):
    path = _hive(datasets)
    ref = ds.dataset(path, partitioning="hive").to_table()  # pyarrow: the reader's view
    assert ref.schema.field("n").type == pa.int32()
    for by in ("city", "n", "city,n"):
        stats = pipeline.fit(str(path), group_by=by, client=cluster)
        cols = by.split(",")
        want = defaultdict(list)
        for rec in ref.to_pylist():
            want[tuple(rec[c] for c in cols)].append(rec["x"])
        assert sorted(stats.groups.keys, key=repr) == sorted(want, key=repr)
        for key, xs in want.items():
            mean, var = _exact(xs)
            f = stats.groups.keys[key]["x"]
            assert _close(f.mean, mean, math.sqrt(var)), (by, key)
            assert abs(f.std - math.sqrt(var)) <= 1e-12 * math.sqrt(var)
    out = tmp_path / "o"
    code, _, err = zscore(capsys, "run", path, out, "--group-by", "city", "--features", "x",
                          "-q")
    assert code == 0, err
    got = ds.dataset(out, partitioning="hive").to_table()
    assert pq.read_schema(next(out.rglob("*.parquet"))).names == ["x", "y"]  # no key added
    for city, g in got.to_pandas().groupby("city", dropna=False, observed=True):
        assert abs(g["x"].mean()) < 1e-12 and abs(g["x"].std(ddof=0) - 1) < 1e-12, city
    frame = pipeline.apply(ref.to_pandas(), FittedStats.load(out / "_stats.json"))
    np.testing.assert_allclose(frame.sort_values(["city", "n", "x"])["x"].to_numpy(),
                               got.to_pandas().sort_values(["city", "n", "x"])["x"].to_numpy(),
                               rtol=0, atol=1e-12)


def test_cache_reuses_key_moments_and_refits_only_a_changed_file(datasets, tmp_path, capsys):
    src = datasets.copy(_hive(datasets), tmp_path / "in")
    cache, args = tmp_path / "cache", ["--group-by", "city,n", "-q", "--features", "x,y"]
    assert zscore(capsys, "fit", src, "--stats", tmp_path / "a.json", "--cache", cache,
                  *args)[0] == 0
    code, _, err = zscore(capsys, "fit", src, "--stats", tmp_path / "b.json", "--cache", cache,
                          *args[:-3], "--features", "x,y")
    assert code == 0 and "cache: 6 of 6 files' moments reused, 0 read" in err
    assert zscore(capsys, "fit", src, "--stats", tmp_path / "fresh.json", *args)[0] == 0

    def groups(name):
        return json.loads((tmp_path / name).read_text())["groups"]

    assert groups("a.json") == groups("b.json") == groups("fresh.json")
    changed = src / "city=Paris" / "n=1" / "p.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 40.0], "y": [1, 2, 3]}), changed)
    code, _, err = zscore(capsys, "fit", src, "--stats", tmp_path / "c.json", "--cache", cache,
                          *args[:-3], "--features", "x,y")
    assert code == 0 and "cache: 5 of 6 files' moments reused, 1 read" in err
    assert zscore(capsys, "fit", src, "--stats", tmp_path / "fresh2.json", *args)[0] == 0
    assert groups("c.json") == groups("fresh2.json") != groups("fresh.json")
    paris = FittedStats.load(tmp_path / "c.json").groups.keys[("Paris", 1)]["x"]
    assert paris.count == 3 and _close(paris.mean, Fraction(43, 3), paris.std)


def test_max_keys_refuses_early_with_the_count(datasets, tmp_path, capsys):
    keys = np.arange(100_001)
    path = datasets.write("keys-100001", {"p.parquet": pa.table(
        {"user": keys, "x": np.random.default_rng(1).normal(size=keys.size)})})
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json", "--group-by",
                          "user", "-q")
    assert code == 2 and not (tmp_path / "s.json").exists()
    line = error_line(err)
    assert "--group-by user found " in line and "more than the limit of 100,000" in line
    found = int(line.split(" found ")[1].split(" ")[0].replace(",", ""))
    assert 100_000 < found <= 100_001 and "--max-keys " in line
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json", "--group-by",
                          "user", "-q", "--max-keys", "100001")
    assert code == 0, err
    assert len(FittedStats.load(tmp_path / "s.json").groups.keys) == 100_001


def test_max_keys_counts_keys_across_files(datasets, tmp_path, capsys):
    files = {f"p{i}.parquet": pa.table({"g": np.arange(i * 40, i * 40 + 50), "x": np.ones(50)})
             for i in range(3)}
    path = datasets.write("keys-across", files)
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json", "--group-by",
                          "g", "--max-keys", "60", "--features", "x", "-q")
    assert code == 2 and "distinct keys so far, more than the limit of 60" in error_line(err)


def test_a_key_column_that_is_also_a_feature(typed, tmp_path, capsys):
    path, _ = typed
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json", "--group-by",
                          "i8", "--features", "i8,f64", "-q")
    assert code == 2 and "--group-by column 'i8' is also a selected feature; exclude it with " \
        "--exclude i8" in error_line(err)
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "s.json", "--group-by",
                          "i8", "-q")  # the default selection leaves the key out
    assert code == 0, err
    assert "i8" not in FittedStats.load(tmp_path / "s.json").features


def _shifted(datasets, name, shift):
    rng = np.random.default_rng(11)
    df = pd.DataFrame({"k": np.repeat(["a", "b", "c"], 400), "x": rng.normal(0, 1, 1200)})
    df.loc[df.k == "b", "x"] += shift
    if shift:
        df = pd.concat([df[df.k != "c"], pd.DataFrame({"k": ["d", "d"], "x": [1.0, 2.0]})])
    return datasets.write(name, {"p.parquet": df})


def test_inspect_and_diff_per_key(cluster, datasets, tmp_path, capsys):
    for name, shift in (("old", 0.0), ("new", 3.0)):
        pipeline.fit(str(_shifted(datasets, f"keys-{name}", shift)), group_by="k",
                     client=cluster).save(tmp_path / f"{name}.json")
    code, out, _ = zscore(capsys, "inspect", tmp_path / "old.json")
    assert code == 0 and "per-key statistics: 3 keys of k" in out
    assert "smallest keys by count: a (400); b (400); c (400)" in out
    code, out, _ = zscore(capsys, "diff", tmp_path / "old.json", tmp_path / "new.json")
    assert code == 3
    assert "per-key (k): 1 of 2 keys compared drifted" in out
    assert "1 only in the old statistics, 1 only in the new" in out
    assert "keys only in the old statistics: c" in out and \
        "keys only in the new statistics: d" in out
    code, out, _ = zscore(capsys, "diff", tmp_path / "old.json", tmp_path / "new.json", "--json")
    keys = json.loads(out)["keys"]
    (drift,) = keys["drifted"]
    old = FittedStats.load(tmp_path / "old.json").groups.keys[("b",)]["x"]
    new = FittedStats.load(tmp_path / "new.json").groups.keys[("b",)]["x"]
    assert drift["key"] == ["b"] and drift["feature"] == "x"
    assert drift["shift"] == pytest.approx((new.mean - old.mean) / old.std, rel=1e-12)
    assert keys["only_old"] == [["c"]] and keys["only_new"] == [["d"]]
    code, _, _ = zscore(capsys, "diff", tmp_path / "old.json", tmp_path / "old.json")
    assert code == 0


def test_hand_written_format_2_keys_inspect_and_diff(cluster, datasets, tmp_path, capsys):
    stats = pipeline.fit(str(_shifted(datasets, "keys-old", 0.0)), group_by="k", client=cluster)
    data = {**stats.to_dict(), "format_version": 2, "groups": stats.groups.to_dict()}
    for entry in data["groups"]["keys"]:
        for f in entry["features"].values():
            f.pop("moments")  # hand-written: mean and std only
    (tmp_path / "hand.json").write_text(json.dumps(data))
    code, out, _ = zscore(capsys, "inspect", tmp_path / "hand.json")
    assert code == 0 and "per-key statistics: 3 keys of k" in out
    stats.save(tmp_path / "fit.json")
    code, out, _ = zscore(capsys, "diff", tmp_path / "hand.json", tmp_path / "fit.json")
    assert code == 0 and "per-key (k): 0 of 3 keys compared drifted" in out
    pipeline.fit(str(_shifted(datasets, "keys-new", 3.0)), group_by="k",
                 client=cluster).save(tmp_path / "other.json")
    code, _, err = zscore(capsys, "merge", tmp_path / "hand.json", tmp_path / "other.json",
                          "-o", tmp_path / "m.json")
    assert code == 2 and "has per-key statistics without exact moments" in error_line(err)


def test_the_transform_per_key_is_exact_from_the_arrays(cluster, typed):
    from pipeline.kernel import ColumnPlan

    path, table = typed
    stats = pipeline.fit(str(path), group_by="k", client=cluster)
    keys = stats.groups.keys
    for name, glob in stats.features.items():  # the arrays give the per-object numbers
        fast = ColumnPlan(name, *keys.kernel_arrays(name, glob))
        slow = ColumnPlan.of(name, [*(keys[k].get(name, glob) for k in keys), glob])
        for field in ("mean", "std", "constant", "residual"):
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
    df = table.to_pandas()
    z = pipeline.apply(df, stats)
    rows = table.to_pylist()
    for name in DTYPES:
        by_key = defaultdict(list)
        for rec in rows:
            v = rec[name]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                by_key[rec["k"]].append(v)
        exact = {k: _exact(v) for k, v in by_key.items()}
        # float16/32 features stay float16/32 (--dtype preserve): within their rounding
        tol = Fraction(max(1e-12, float(np.finfo(z[name].dtype).eps)))
        for r in range(0, len(rows), 97):  # every 97th row, against rationals
            v, key = rows[r][name], rows[r]["k"]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            mean, var = exact[key]
            want = (Fraction(v) - mean) / Fraction(math.sqrt(var))
            assert abs(Fraction(float(z[name].iloc[r])) - want) <= \
                tol * max(1, abs(want)), (name, key, r)


def test_worker_processes_give_the_same_keys_and_the_same_refusal(cluster, typed, tmp_path,
                                                                 capsys):
    path, _ = typed
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "p.json", "--group-by",
                          "k", "--processes", "--workers", "2", "-q")
    assert code == 0, err
    threads = pipeline.fit(str(path), group_by="k", client=cluster)
    assert json.loads((tmp_path / "p.json").read_text())["groups"] == \
        json.loads(threads.to_json())["groups"]
    code, _, err = zscore(capsys, "fit", path, "--stats", tmp_path / "q.json", "--group-by",
                          "f16", "--max-keys", "50", "--processes", "--workers", "2", "-q")
    assert code == 2 and "more than the limit of 50; group by a coarser key" in error_line(err)
