"""Weighted fits (``--weight``, ``weight=``, ``sample_weight=``) against exact rationals.

Every statistic is compared with :func:`reference.weighted_reference` (fractions:
sum(w x) / sum(w) and sum(w (x - mean)**2) / (sum(w) - ddof)), never with the
implementation's own helpers; the estimator also with scikit-learn's own scaler.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import error_line, zscore
from reference import exact_reference, weighted_reference

import pipeline
from pipeline.errors import DataError, InputError
from pipeline.stats import MIN_STD, Moments

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow

DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
          "uint16", "uint32", "uint64"]


def close(a: float, b: float, rel: float = 1e-12) -> bool:
    return a == b or abs(a - b) <= rel * abs(b)


def _values(dtype: str, n: int, rng: np.random.Generator) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(n) * 3 + 7).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)


def _write(root, tables: dict[str, pa.Table], row_group_size: int | None = None):
    for rel, t in tables.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, root / rel, row_group_size=row_group_size)
    return root


def _split(table: pa.Table, sizes: list[int]) -> dict[str, pa.Table]:
    out, start = {}, 0
    for i, n in enumerate(sizes):
        out[f"part={i % 2}/f{i:02d}.parquet"] = table.slice(start, n)
        start += n
    assert start == table.num_rows
    return out


def _hostile(n: int = 3000, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 4, n)
    w[rng.random(n) < 0.2] = 0.0  # rows that count for nothing
    return pa.table({
        "big": 1e9 + 1e-3 * rng.standard_normal(n),
        "ns": 1_767_225_600_000_000_000 + rng.integers(0, 10**12, n),
        "f16": (rng.standard_normal(n) + 5).astype(np.float16),
        "u64": rng.integers(2**64 - 10**9, 2**64 - 1, n, dtype=np.uint64),
        "w": w,
    })


def _check(stats, table: pa.Table, weight: str = "w", ddof: int = 0) -> None:
    w = table.column(weight).to_pylist()
    for name, f in stats.features.items():
        x = table.column(name).to_pylist()
        pairs = [(a, b) for a, b in zip(x, w, strict=True) if a is not None and a == a]
        mean, std, total = weighted_reference([a for a, _ in pairs], [b for _, b in pairs], ddof)
        assert close(f.mean, mean), (name, f.mean, mean)
        assert close(f.std, std), (name, f.std, std)
        assert close(f.weight, total), (name, f.weight, total)
        assert f.count == sum(1 for _, b in pairs if b > 0)


# ------------------------------------------------------------------ kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wtype", ["uint8", "int64", "float16", "float32", "float64"])
def test_every_dtype_and_weight_type_is_exact_and_split_invariant(dtype, wtype):
    from pipeline.moments import column_moments, weight_values

    rng = np.random.default_rng(DTYPES.index(dtype))
    x = _values(dtype, 2000, rng)
    w = rng.integers(0, 6, 2000).astype(wtype)
    whole = column_moments(pa.array(x), weight_values(pa.array(w), "w", "t"))
    pieces = [column_moments(pa.array(x[i:i + 301]),
                             weight_values(pa.array(w[i:i + 301]), "w", "t"))
              for i in range(0, 2000, 301)]
    merged = Moments.merge_all(pieces)
    mean, std, total = weighted_reference(x.tolist(), w.tolist())
    for m in (whole, merged):
        assert close(m.mean, mean) and close(m.std(), std) and m.total_weight == total


def test_huge_tiny_and_single_weights():
    from pipeline.moments import column_moments

    rng = np.random.default_rng(5)
    x = rng.standard_normal(1000) + 2
    for w in [np.where(rng.random(1000) < 0.5, 1e300, 1e-300),  # sums past float64 if unscaled
              np.full(1000, 1e-300), np.full(1000, 1e300),
              rng.uniform(0, 1, 1000) * 10.0 ** rng.integers(-300, 300, 1000)]:
        mean, std, total = weighted_reference(x.tolist(), w.tolist())
        m = Moments.merge_all(column_moments(pa.array(x[i:i + 97]), w[i:i + 97])
                              for i in range(0, 1000, 97))
        assert close(m.mean, mean) and close(m.std(), std) and close(m.total_weight, total)
    one = np.zeros(1000)
    one[417] = 1e-300
    m = column_moments(pa.array(x), one)
    assert (m.count, m.mean, m.std(), m.minimum, m.maximum) == (1, x[417], 0.0, x[417], x[417])


def test_weights_of_one_give_the_unweighted_statistics():
    rng = np.random.default_rng(9)
    frame = pd.DataFrame({"a": 1e9 + 1e-3 * rng.standard_normal(999),
                          "b": rng.integers(-(2**62), 2**62, 999), "w": np.ones(999)})
    for ddof in (0, 1):
        plain = pipeline.fit(frame, features=["a", "b"], ddof=ddof)
        weighted = pipeline.fit(frame, features=["a", "b"], ddof=ddof, weight="w")
        for name in ("a", "b"):
            p, w = plain.features[name], weighted.features[name]
            assert close(w.mean, p.mean, 1e-15) and close(w.std, p.std, 1e-15)
            assert w.weight == 999.0 and p.weight is None


# --------------------------------------------------------------- datasets
@pytest.mark.parametrize("sizes,row_group", [([3000], None), ([1, 0, 1499, 700, 800], None),
                                             ([1500, 1500], 7)])
def test_a_weighted_dataset_fit_is_exact_whatever_the_files(tmp_path, cluster, sizes,
                                                            row_group):
    table = _hostile()
    root = _write(tmp_path / "d", _split(table, sizes), row_group)
    stats = pipeline.fit(str(root), weight="w", client=cluster)
    assert stats.weight == "w" and list(stats.features) == ["big", "ns", "f16", "u64"]
    _check(stats, table)
    (tmp_path / "s.json").write_text(stats.to_json())
    loaded = pipeline.FittedStats.load(tmp_path / "s.json")
    assert loaded.to_json() == stats.to_json()


def _fit_on(path, n_workers: int, processes: bool = False) -> str:
    from distributed import Client, LocalCluster

    where = {"host": "127.0.0.1"} if processes else {}
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                      dashboard_address=":0", **where) as lc, \
            Client(lc, set_as_default=False) as c:
        stats = pipeline.fit(str(path), weight="w", client=c)
    return json.dumps(json.loads(stats.to_json())["features"])


def _bits_data(tmp_path):
    rng = np.random.default_rng(11)
    table = _hostile(4000).append_column("g", pa.array(rng.integers(0, 3, 4000)))
    return _write(tmp_path / "d", _split(table, [900, 1100, 700, 1300]), 64)


def test_one_or_two_workers_give_the_same_bits(tmp_path):
    root = _bits_data(tmp_path)
    assert _fit_on(root, 2) == _fit_on(root, 1)


@pytest.mark.slow  # worker processes of its own
def test_worker_processes_give_the_same_bits(tmp_path):
    root = _bits_data(tmp_path)
    assert _fit_on(root, 2, processes=True) == _fit_on(root, 1)  # moments pickled


def test_group_by_with_weight_is_refused_before_any_work(tmp_path, capsys):
    """Per-key moments are unweighted arrays (pipeline.keystats): the two together are
    refused, in each front end's spelling, rather than giving per-key numbers unweighted."""
    table = _hostile(200).append_column("g", pa.array([1, 2] * 100))
    root = _write(tmp_path / "d", {"a.parquet": table})
    with pytest.raises(pipeline.InputError) as caught:
        pipeline.fit(str(root), weight="w", group_by="g")
    assert str(caught.value) == (
        "weight and group_by cannot be combined: per-key statistics are unweighted; fit "
        "weighted without group_by, or per key without weight")
    code, _, err = zscore(capsys, "fit", root, "--stats", tmp_path / "s.json", "--weight", "w",
                          "--group-by", "g")
    assert code == 2
    assert error_line(err) == (
        "zscore: error: --weight and --group-by cannot be combined: per-key statistics are "
        "unweighted; fit weighted without --group-by, or per key without --weight")
    assert not (tmp_path / "s.json").exists()


def test_dask_and_pandas_frames_whatever_the_partitions(cluster):
    import dask.dataframe as dd

    table = _hostile(2400)
    frame = table.to_pandas()
    _check(pipeline.fit(frame, weight="w"), table)
    for n in (1, 3, 7):
        _check(pipeline.fit(dd.from_pandas(frame, npartitions=n), weight="w", client=cluster),
               table)


@pytest.mark.parametrize("bad,what", [(-1.0, "negative"), (math.nan, "NaN"),
                                      (math.inf, "infinite"), (None, "missing")])
def test_bad_weights_are_refused_naming_file_and_column(tmp_path, capsys, bad, what):
    table = _hostile(100)
    w = table.column("w").to_pylist()
    w[37] = bad
    bad_table = table.set_column(4, "w", pa.array(w, type=pa.float64()))
    root = _write(tmp_path / "d", {"a.parquet": table, "b/c.parquet": bad_table})
    code, _, err = zscore(capsys, "fit", root, "--stats", tmp_path / "s.json", "--weight", "w")
    assert code == 2
    line = error_line(err)
    assert "weight column 'w'" in line and "b/c.parquet" in line and f"is {what}" in line
    frame = bad_table.to_pandas()  # where pandas' NaN is its missing value
    what = "missing" if what == "NaN" else what
    with pytest.raises(DataError, match=f"weight column 'w' .* in the DataFrame .*is {what}"):
        pipeline.fit(frame, weight="w")


def test_weight_column_refusals(tmp_path, capsys):
    table = _hostile(200).append_column("s", pa.array(["a"] * 200))
    root = _write(tmp_path / "d", {"a.parquet": table})
    out = tmp_path / "s.json"
    for args, text in [(["--weight", "s"], "'s' is string, not an integer or floating"),
                       (["--weight", "nope"], "'nope' is not a column of the input"),
                       (["--weight", "w", "--features", "big,w"], "also a selected feature"),
                       (["--weight", "w", "--group-by", "w"], "cannot be combined")]:
        code, _, err = zscore(capsys, "fit", root, "--stats", out, *args)
        assert code == 2 and text in error_line(err), err
    assert not out.exists()


def test_all_zero_weights_and_ddof_beyond_the_total_are_refused(tmp_path, capsys):
    n = 50
    frame = pd.DataFrame({"x": np.arange(n, dtype=float), "y": np.arange(n, dtype=float),
                          "w": np.zeros(n)})
    frame.loc[frame.index[:10], "y"] = np.nan
    frame.loc[frame.index[:10], "w"] = 1.0  # every positive weight is on a missing y
    with pytest.raises(DataError, match="column 'y' has no value with a positive weight in 'w'"):
        pipeline.fit(frame, weight="w")
    small = pd.DataFrame({"x": [1.0, 2.0, 3.0], "w": [0.2, 0.3, 0.4]})
    assert close(pipeline.fit(small, weight="w").features["x"].std,
                 weighted_reference([1, 2, 3], [0.2, 0.3, 0.4])[1])
    with pytest.raises(DataError, match="total weight 0.9 in 'w', not more than ddof 1"):
        pipeline.fit(small, weight="w", ddof=1)
    root = _write(tmp_path / "d", {"a.parquet": pa.Table.from_pandas(small)})
    code, _, err = zscore(capsys, "fit", root, "--stats", tmp_path / "s.json", "--weight", "w",
                          "--ddof", "1")
    assert code == 2 and "pass --ddof 0" in error_line(err)
    code, _, _ = zscore(capsys, "fit", root, "--stats", tmp_path / "s.json", "--weight", "w")
    assert code == 0  # the remedy works


def test_ddof_1_divides_by_the_total_weight_minus_one():
    frame = pd.DataFrame({"x": [1.0, 5.0, 2.0, 8.0], "w": [3, 1, 2, 4]})
    got = pipeline.fit(frame, weight="w", ddof=1).features["x"]
    # frequency weights: the same as each row repeated w times, unweighted
    assert close(got.std, exact_reference([1.0] * 3 + [5.0] + [2.0] * 2 + [8.0] * 4, ddof=1)[1])


# -------------------------------------------------------- the command line
def test_run_passes_the_weight_through_and_inspect_shows_it(tmp_path, capsys):
    table = _hostile(500).set_column(4, "w", pa.array(np.arange(500) % 7, pa.int16()))
    root = _write(tmp_path / "d", _split(table, [200, 300]))
    out = tmp_path / "out"
    code, _, err = zscore(capsys, "run", root, out, "--weight", "w", "--threads", "-q")
    assert code == 0, err
    assert "the report counts written rows unweighted" in err  # said, not left to mislead
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["weight"] == "w" and "w" not in stats["features"]
    for rel in ["part=0/f00.parquet", "part=1/f01.parquet"]:
        written = pq.read_table(out / rel)
        assert written.schema.field("w").type == pa.int16()
        assert written.column("w").equals(pq.read_table(root / rel).column("w"))
        big = pq.read_table(root / rel).column("big").to_pylist()
        f = stats["features"]["big"]
        exact_mean = Fraction(f["moments"]["shift"]) + Fraction(f["moments"]["offset"])
        for x, z in zip(big[:20], written.column("big").to_pylist()[:20], strict=True):
            assert abs(z - float((Fraction(x) - exact_mean) / Fraction(f["std"]))) <= 1e-9
    code, text, _ = zscore(capsys, "inspect", out / "_stats.json")
    assert code == 0 and "weighted by column 'w'" in text and "weight" in text.splitlines()[2]


def test_merge_refuses_mixing_weights_and_merges_weighted_fits(tmp_path, capsys):
    table = _hostile(1000)
    a = _write(tmp_path / "a", {"x.parquet": table.slice(0, 400)})
    b = _write(tmp_path / "b", {"y.parquet": table.slice(400)})
    table2 = table.append_column("v", table.column("w"))
    c = _write(tmp_path / "c", {"z.parquet": table2.slice(400)})
    for src, name, args in [(a, "a.json", ["--weight", "w"]), (b, "b.json", ["--weight", "w"]),
                            (b, "bu.json", ["--exclude", "w"]),
                            (c, "bv.json", ["--weight", "v", "--exclude", "w"])]:
        code, _, err = zscore(capsys, "fit", src, "--stats", tmp_path / name, *args, "-q")
        assert code == 0, err
    for other, text in [("bu.json", "has weight column none (unweighted) but"),
                        ("bv.json", "has weight column 'v' but")]:
        code, _, err = zscore(capsys, "merge", tmp_path / "a.json", tmp_path / other,
                              "-o", tmp_path / "m.json")
        assert code == 2 and text in error_line(err), err
    code, _, err = zscore(capsys, "merge", tmp_path / "a.json", tmp_path / "b.json",
                          "-o", tmp_path / "m.json", "-q")
    assert code == 0, err
    _check(pipeline.FittedStats.load(tmp_path / "m.json"), table)


def test_the_cache_keeps_weighted_and_unweighted_moments_apart(tmp_path, capsys):
    table = _hostile(600)
    root = _write(tmp_path / "d", _split(table, [300, 300]))
    cache = tmp_path / "cache"
    for args in (["--exclude", "w"], ["--weight", "w"], ["--weight", "w"]):
        code, _, err = zscore(capsys, "fit", root, "--stats", tmp_path / "s.json",
                              "--cache", cache, *args)
        assert code == 0, err
    assert "cache: 2 of 2 files' moments reused" in err
    _check(pipeline.FittedStats.load(tmp_path / "s.json"), table)


def test_an_edited_total_weight_is_refused(tmp_path, capsys):
    frame = pd.DataFrame({"x": [1.0, 2.0, 4.0], "w": [1, 2, 3]})
    d = pipeline.fit(frame, weight="w").to_dict()
    d["features"]["x"]["weight"] = 7.0
    (tmp_path / "s.json").write_text(json.dumps(d))
    code, _, err = zscore(capsys, "inspect", tmp_path / "s.json")
    assert code == 2 and "field 'features.x.weight' is 7.0 but the moments give 6.0" in \
        error_line(err)


# ------------------------------------------------------------- the estimator
def test_the_estimator_matches_scikit_learn_with_sample_weight():
    from sklearn.preprocessing import StandardScaler as Reference

    rng = np.random.default_rng(21)
    X = rng.standard_normal((800, 5)) * [1, 10, 100, 0.1, 3] + [0, 5, -3, 2, 1]
    X[rng.random(X.shape) < 0.05] = np.nan
    w = rng.uniform(0, 3, 800)
    w[:40] = 0
    ours, ref = pipeline.StandardScaler().fit(X, sample_weight=w), \
        Reference().fit(X, sample_weight=w)
    assert np.allclose(ours.mean_, ref.mean_, rtol=1e-12, atol=0)
    assert np.allclose(ours.var_, ref.var_, rtol=1e-12, atol=0)
    assert np.allclose(ours.n_samples_seen_, ref.n_samples_seen_, rtol=1e-12, atol=0)
    assert np.allclose(ours.transform(X), ref.transform(X), rtol=1e-11, atol=1e-12,
                       equal_nan=True)
    no_nan = np.nan_to_num(X)
    ours = pipeline.StandardScaler().fit(no_nan, sample_weight=w)
    ref = Reference().fit(no_nan, sample_weight=w)
    assert isinstance(ours.n_samples_seen_, float)
    assert close(ours.n_samples_seen_, float(ref.n_samples_seen_))
    # batches, unweighted then weighted: a batch without weights counts each row once
    ours, ref = pipeline.StandardScaler(), Reference()
    for est in (ours, ref):
        est.partial_fit(no_nan[:300])
        est.partial_fit(no_nan[300:], sample_weight=w[300:])
    assert np.allclose(ours.mean_, ref.mean_, rtol=1e-12, atol=0)
    assert np.allclose(ours.var_, ref.var_, rtol=1e-12, atol=0)
    assert close(float(ours.n_samples_seen_), float(ref.n_samples_seen_))


def test_the_estimator_is_exact_where_floats_are_hard():
    table = _hostile(5000)
    frame = table.select(["big", "ns"]).to_pandas()
    w = np.asarray(table.column("w"))
    est = pipeline.StandardScaler()
    for i in range(0, 5000, 1250):
        est.partial_fit(frame.iloc[i:i + 1250], sample_weight=w[i:i + 1250])
    for j, name in enumerate(["big", "ns"]):
        mean, std, total = weighted_reference(table.column(name).to_pylist(), w.tolist())
        assert close(est.mean_[j], mean) and close(est.scale_[j], std)
    assert close(est.n_samples_seen_, total)
    assert est.to_stats().weight == "sample_weight"
    fitted = pipeline.fit(table.to_pandas(), features=["big", "ns"], weight="w")
    again = pipeline.StandardScaler.from_stats(fitted)
    assert again.to_stats().weight == "w" and close(again.n_samples_seen_, total)
    assert np.allclose(again.mean_, est.mean_, rtol=1e-15, atol=0)


def test_the_estimator_refuses_bad_sample_weights(cluster):
    import dask.dataframe as dd

    X = np.arange(12.0).reshape(6, 2)
    for bad, text in [([1, 2, -1, 1, 1, 1], "negative"), ([1] * 5, r"shape \(5,\)"),
                      ([1, 2, np.inf, 1, 1, 1], "infinite")]:
        with pytest.raises(ValueError, match=text):
            pipeline.StandardScaler().fit(X, sample_weight=bad)
    with pytest.raises(ValueError, match="weight='column'"):
        pipeline.StandardScaler().fit(dd.from_pandas(pd.DataFrame(X), npartitions=2),
                                      sample_weight=np.ones(6))
    with pytest.raises(InputError, match="sample_weight is zero for every row"):
        pipeline.StandardScaler().fit(X, sample_weight=np.zeros(6))
    X[:3, 1] = np.nan  # every positive weight on a missing value of x1
    with pytest.raises(InputError, match="column 'x1' has no values"):
        pipeline.StandardScaler().fit(X, sample_weight=[1, 1, 1, 0, 0, 0])


# ----------------------------------------------------------- merge properties
_pair = st.tuples(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
                  st.floats(min_value=1e-300, max_value=1e300) | st.just(0.0))
_pairs = st.lists(_pair, min_size=0, max_size=30)


def _weighted(pairs) -> Moments:
    from pipeline.moments import column_moments

    x = np.array([p[0] for p in pairs], dtype=np.float64)
    w = np.array([p[1] for p in pairs], dtype=np.float64)
    return column_moments(pa.array(x), w)


@settings(max_examples=300, deadline=None)
@given(_pairs, _pairs, _pairs)
def test_weighted_merge_in_any_order_and_grouping_is_exact(a, b, c):
    every = a + b + c
    orders = [_weighted(a).merge(_weighted(b)).merge(_weighted(c)),
              _weighted(a).merge(_weighted(b).merge(_weighted(c))),
              _weighted(c).merge(_weighted(a)).merge(_weighted(b)),
              _weighted(every)]
    assert Moments().merge(orders[0]) == orders[0] == orders[0].merge(Moments())
    positive = [(x, w) for x, w in every if w > 0]
    if not positive:
        assert all(m.count == 0 for m in orders)
        return
    mean, std, total = weighted_reference([x for x, _ in positive], [w for _, w in positive])
    if 0 < std < MIN_STD * 2**12:
        # Below MIN_STD the fit refuses (test_fit); just above it, with weights 1e300
        # apart, the light side's total is subnormal on the common scale (pipeline.stats).
        return
    scale = max(abs(mean), std, 1e-300)
    for m in orders:
        assert m.count == len(positive)
        assert abs(m.mean - mean) <= 1e-12 * scale
        assert abs(m.std() - std) <= 1e-12 * scale
        assert close(m.total_weight, total)


def test_a_delta_table_is_fitted_weighted_over_its_live_rows(tmp_path, cluster):
    from deltalake import write_deltalake

    old, live = _hostile(300, seed=1).select(["big", "w"]), _hostile(400, seed=2).select(
        ["big", "w"])
    write_deltalake(tmp_path / "t", old)
    write_deltalake(tmp_path / "t", live, mode="overwrite")  # old files stay on disk
    stats = pipeline.fit(str(tmp_path / "t"), weight="w", client=cluster)
    _check(stats, live)
