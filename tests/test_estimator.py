"""pipeline.StandardScaler against scikit-learn's scaler, exact rationals and its tools."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction

import dask.array as da
import dask.dataframe as dd
import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster, get_task_stream
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler as SkScaler

import pipeline
from pipeline import DataError, FittedStats, StandardScaler


def _exact(values) -> tuple[Fraction, Fraction]:
    """Mean and population variance as exact rationals (missing values left out)."""
    xs = [Fraction(int(v)) if isinstance(v, (int, np.integer)) else Fraction(float(v))
          for v in values if isinstance(v, (int, np.integer)) or not math.isnan(float(v))]
    mean = sum(xs, Fraction(0)) / len(xs)
    return mean, sum(((x - mean) ** 2 for x in xs), Fraction(0)) / len(xs)


def _rel(a: float, b: Fraction | float) -> float:
    b = float(b)
    return abs(a - b) / max(abs(b), 1e-300)


def _ordinary(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(5, 2, n), rng.exponential(3, n), rng.uniform(-1, 1, n),
                         rng.normal(-40, 0.5, n)])
    X[::17, 1] = np.nan
    return X


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


# ------------------------------------------------------------- scikit-learn's checks
def test_check_estimator_passes_every_check():
    # In a fresh interpreter: the array-API checks need SCIPY_ARRAY_API set before scipy loads.
    code = ("import json; from sklearn.utils.estimator_checks import check_estimator; "
            "from pipeline import StandardScaler as S; "
            "r = check_estimator(S(), on_fail=None, on_skip=None); "
            "print(json.dumps([[x['check_name'], x['status']] for x in r]))")
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) > 40
    assert [r for r in results if r[1] != "passed"] == []


@pytest.mark.parametrize("with_mean,with_std", [(True, True), (True, False), (False, True),
                                                (False, False)])
def test_same_as_scikit_learn_on_ordinary_data(with_mean, with_std):
    X = _ordinary()
    ours = StandardScaler(with_mean=with_mean, with_std=with_std).fit(X)
    theirs = SkScaler(with_mean=with_mean, with_std=with_std).fit(X)
    for attr in ("mean_", "var_", "scale_"):
        a, b = getattr(ours, attr), getattr(theirs, attr)
        assert (a is None) == (b is None), attr
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=attr)
    np.testing.assert_array_equal(ours.n_samples_seen_, theirs.n_samples_seen_)
    Z, Zs = ours.transform(X), theirs.transform(X)
    np.testing.assert_allclose(Z, Zs, rtol=1e-12, atol=1e-12)
    assert np.array_equal(np.isnan(Z), np.isnan(X))
    np.testing.assert_allclose(ours.inverse_transform(Z), theirs.inverse_transform(Zs),
                               rtol=1e-12)
    assert ours.get_feature_names_out().tolist() == ["x0", "x1", "x2", "x3"]


def test_float32_in_float32_out_and_int_exact():
    X = _ordinary().astype(np.float32)
    Z = StandardScaler().fit_transform(X)
    assert Z.dtype == np.float32
    # float64 arithmetic, one rounding to float32 at the end (as pipeline.apply)
    for j in range(X.shape[1]):
        mean, var = _exact(X[:, j])
        for i in (5, 6, 400):
            ref = float((Fraction(float(X[i, j])) - mean) / Fraction(math.sqrt(var)))
            assert abs(float(Z[i, j]) - ref) <= abs(np.spacing(np.float32(ref))) / 2 * (1 + 1e-9)
    # int64 near 2**62: the scikit-learn scaler rounds to float64 first; this one does not.
    big = (2**62 + np.arange(1000, dtype=np.int64) * 3).reshape(-1, 1)
    ours = StandardScaler().fit(big)
    mean, var = _exact(big[:, 0].tolist())
    assert _rel(ours.mean_[0], mean) < 1e-15 and _rel(ours.var_[0], var) < 1e-12
    z = ours.transform(big)[:, 0]
    for i in (0, 1, 500, 999):
        assert abs(z[i] - float((big[i, 0] - mean) / Fraction(math.sqrt(var)))) < 1e-12


def test_exact_where_scikit_learn_is_not():
    rng = np.random.default_rng(3)
    X = np.column_stack([1e9 + 1e-3 * rng.standard_normal(100_000),
                         0.1 + 1e-9 * rng.standard_normal(100_000)])
    ours, theirs = StandardScaler().fit(X), SkScaler().fit(X)
    Z = ours.transform(X)
    for j in range(2):
        mean, var = _exact(X[:, j])
        assert _rel(ours.mean_[j], mean) < 1e-15
        assert _rel(ours.scale_[j], Fraction(math.sqrt(var))) < 1e-12
        for i in (0, 1, 77, 99_999):
            ref = (Fraction(float(X[i, j])) - mean) / Fraction(math.sqrt(var))
            assert abs(Z[i, j] - float(ref)) < 1e-12
    # scikit-learn's small-variance heuristic calls the 1e9 column constant: scale_ 1.
    assert theirs.scale_[0] == 1.0
    assert np.abs(theirs.transform(X)[:, 0]).max() < 0.01  # z collapsed towards 0


def test_constant_columns_follow_scikit_learns_convention():
    X = np.column_stack([np.full(50, 0.1), np.arange(50.0)])
    ours, theirs = StandardScaler().fit(X), SkScaler().fit(X)
    assert ours.scale_[0] == theirs.scale_[0] == 1.0 and ours.var_[0] == 0.0
    assert np.all(ours.transform(X)[:, 0] == 0.0)
    new = np.array([[0.3, 1.0], [0.1, 2.0]])
    np.testing.assert_allclose(ours.transform(new), theirs.transform(new), rtol=1e-12,
                               atol=1e-15)
    assert ours.transform(new)[0, 0] == 0.3 - 0.1  # x - mean, not 0.0 as the CLI gives
    # scikit-learn's summed mean of 50 x 0.1 is not 0.1; the constant's mean is its value
    assert ours.mean_[0] == 0.1 != theirs.mean_[0] and ours.transform(new)[1, 0] == 0.0


def test_partial_fit_is_exact_and_equals_fit():
    X = _ordinary(2000, seed=5)
    X[:, 3] += 1e9  # where a naive running mean loses digits
    est = StandardScaler()
    for chunk in np.array_split(X, 7):
        est.partial_fit(chunk)
    whole = StandardScaler().fit(X)
    np.testing.assert_allclose(est.scale_, whole.scale_, rtol=1e-12)
    for j in range(X.shape[1]):
        mean, var = _exact(X[:, j])
        # mean_ is the nearest float64 (half an ulp), up to 1e-15 sigma (what z sees)
        for m in (est.mean_[j], whole.mean_[j]):
            err = abs(Fraction(float(m)) - mean)
            assert err <= Fraction(math.ulp(m)) / 2 + Fraction(1e-15) * Fraction(math.sqrt(var))
        assert _rel(est.var_[j], var) < 1e-12
    assert est.n_samples_seen_.tolist() == [2000, 2000 - len(X[::17]), 2000, 2000]


def test_pandas_input_keeps_names_index_and_int64_exactness():
    df = pd.DataFrame({"a": [1.0, 2.0, None, 4.0],
                       "n": pd.array([2**60, 2**60 + 2, None, 2**60 + 8], dtype="Int64")},
                      index=[10, 11, 12, 13])
    est = StandardScaler().set_output(transform="pandas").fit(df)
    assert est.feature_names_in_.tolist() == ["a", "n"]
    out = est.transform(df)
    assert isinstance(out, pd.DataFrame) and out.index.tolist() == [10, 11, 12, 13]
    assert math.isnan(out.loc[12, "a"]) and math.isnan(out.loc[12, "n"])
    mean, var = _exact([2**60, 2**60 + 2, 2**60 + 8])
    assert est.n_samples_seen_.tolist() == [3, 3]
    assert abs(out.loc[13, "n"] - float((2**60 + 8 - mean) / Fraction(math.sqrt(var)))) < 1e-12


def test_a_pandas_frame_gives_the_moments_pipeline_fit_gives():
    """One moments path for frames: the estimator and pipeline.fit agree bit for bit."""
    rng = np.random.default_rng(7)
    n = 3000
    df = pd.DataFrame({
        "hard": 1e9 + 1e-3 * rng.standard_normal(n),
        "f16": rng.standard_normal(n).astype(np.float16),
        "big": rng.integers(-2**62, 2**62, n),
        "na": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 9, n)),
                       dtype="Int32"),
    })
    df.loc[::17, "hard"] = np.nan
    scaler = StandardScaler().fit(df).to_stats()
    fitted = pipeline.fit(df)
    assert list(scaler.features) == list(fitted.features)
    for name, f in fitted.features.items():
        assert scaler.features[name].moments == f.moments, name
    mean, _ = _exact(df["na"].dropna().tolist())
    assert _rel(scaler.features["na"].mean, mean) < 1e-15


def test_infinite_values_refused_naming_the_column_or_missing():
    X = _ordinary()
    X[3, 2] = np.inf
    with pytest.raises(ValueError, match="column 'x2' has 1 infinite value") as err:
        StandardScaler().fit(X)
    assert isinstance(err.value, DataError) and err.value.column == "x2"
    assert err.value.options == ["inf"] and "pass inf='null' to" in str(err.value)
    est = StandardScaler(inf="null").fit(X)
    assert est.n_samples_seen_[2] == len(X) - 1
    assert math.isnan(est.transform(X)[3, 2])
    with pytest.raises(ValueError, match="inf must be 'error' or 'null'"):
        StandardScaler(inf="drop").fit(X)


def test_copy_false_scales_in_place_and_hand_written_statistics_cannot_grow():
    X = _ordinary()
    est = StandardScaler(copy=False).fit(X)
    expected = StandardScaler().fit(X).transform(X)
    out = est.transform(X)
    assert out is X and np.array_equal(X, expected, equal_nan=True)
    d = est.to_stats().to_dict()
    for f in d["features"].values():
        del f["moments"]  # a hand-written artifact: mean and std only
    est = StandardScaler.from_stats(FittedStats.from_dict(d))
    # without moments there is no double-double residual: equal within rounding
    np.testing.assert_allclose(est.transform(_ordinary()), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="no moments .* partial_fit cannot add to them"):
        est.partial_fit(_ordinary())


# ----------------------------------------------------------- inside scikit-learn
def test_pipeline_column_transformer_grid_search_and_pickle(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(3, 2, 200), "b": rng.normal(1e9, 1e-3, 200),
                       "city": rng.choice(["x", "y"], 200)})
    y = 2 * df["a"] + rng.normal(0, 0.1, 200)
    ct = ColumnTransformer([("z", StandardScaler(), ["a", "b"])], remainder="drop")
    ct.set_output(transform="pandas")
    out = ct.fit_transform(df)
    assert out.columns.tolist() == ["z__a", "z__b"]
    np.testing.assert_allclose(out["z__a"], SkScaler().fit_transform(df[["a"]])[:, 0],
                               rtol=1e-12, atol=1e-12)
    search = GridSearchCV(make_pipeline(ColumnTransformer([("z", StandardScaler(), ["a"])]),
                                        Ridge()),
                          {"columntransformer__z__with_std": [True, False]}, cv=3).fit(df, y)
    assert search.best_score_ > 0.99
    path = tmp_path / "model.joblib"
    joblib.dump(search.best_estimator_, path)
    again = joblib.load(path)
    np.testing.assert_array_equal(again.predict(df), search.best_estimator_.predict(df))


# --------------------------------------------------------------- Dask and Parquet
def test_dask_dataframe_fit_on_the_client_and_lazy_transform(client):
    df = pd.DataFrame({"a": _ordinary(1000)[:, 0], "big": 1e9 + _ordinary(1000)[:, 2] * 1e-3,
                       "n": np.arange(1000, dtype=np.int64) * 7})
    ddf = dd.from_pandas(df, npartitions=5)
    with get_task_stream(client) as fitted:
        est = StandardScaler().fit(ddf)
    assert len(fitted.data) >= 5  # one task per partition at least, on the client's workers
    assert est.feature_names_in_.tolist() == ["a", "big", "n"]
    for j, name in enumerate(df.columns):
        mean, var = _exact(df[name].tolist())
        assert _rel(est.mean_[j], mean) < 1e-15 and _rel(est.var_[j], var) < 1e-12
    with get_task_stream(client) as lazy:
        z = est.transform(ddf)
    assert isinstance(z, dd.DataFrame) and lazy.data == []  # a graph: nothing computed yet
    out = z.compute()
    ref = SkScaler().fit_transform(df[["a", "n"]])
    np.testing.assert_allclose(out[["a", "n"]].to_numpy(), ref, rtol=1e-12, atol=1e-12)
    mean, var = _exact(df["big"].tolist())
    for i in (0, 1, 999):
        exact = (Fraction(float(df["big"][i])) - mean) / Fraction(math.sqrt(var))
        assert abs(out["big"][i] - float(exact)) < 1e-12
    back = est.inverse_transform(z).compute()
    np.testing.assert_allclose(back.to_numpy(), df.to_numpy(), rtol=1e-12)


def test_dask_array_fit_and_transform(client):
    X = _ordinary(900)
    arr = da.from_array(X, chunks=(200, 2))
    est = StandardScaler().fit(arr)
    assert not hasattr(est, "feature_names_in_") and est.n_features_in_ == 4
    np.testing.assert_allclose(est.mean_, SkScaler().fit(X).mean_, rtol=1e-12)
    z = est.transform(arr)
    assert isinstance(z, da.Array)
    np.testing.assert_allclose(z.compute(), SkScaler().fit_transform(X), rtol=1e-12, atol=1e-12)


def test_parquet_directory_fit_over_the_dataset(datasets, client):
    path = datasets.sample("estimator_sample")
    est = StandardScaler().fit(str(path))
    table = pq.read_table(path, columns=["f_large_offset", "f_with_nan", "id"])
    names = est.feature_names_in_.tolist()
    for name in ("f_large_offset", "f_with_nan", "id"):
        mean, var = _exact(table.column(name).to_pylist() if name == "id" else
                           [v for v in table.column(name).to_pylist() if v is not None])
        j = names.index(name)
        assert _rel(est.mean_[j], mean) < 1e-15 and _rel(est.var_[j], var) < 1e-12
    assert "city" not in names and "day" not in names
    z = est.transform(str(path)).compute()  # lazy: read and scaled per file
    assert list(z.columns) == names and len(z) == table.num_rows


# ----------------------------------------------------------------- artifacts
def test_to_stats_and_from_stats_round_trip(tmp_path):
    X = pd.DataFrame(_ordinary(), columns=["a", "b", "c", "d"])
    X["k"] = 0.25  # constant
    est = StandardScaler(ddof=1).fit(X)
    path = tmp_path / "stats.json"
    est.to_stats().save(path)
    stats = FittedStats.load(path)  # the artifact's own validation accepts it
    assert stats.ddof == 1 and stats.features["b"].missing == len(X[::17])
    again = StandardScaler.from_stats(stats)
    np.testing.assert_array_equal(again.transform(X), est.transform(X))
    np.testing.assert_array_equal(again.scale_, est.scale_)
    np.testing.assert_allclose(est.var_[0], np.var(X["a"], ddof=1), rtol=1e-12)
    # the same numbers as zscore's pandas transform (the CLI's kernel)
    np.testing.assert_array_equal(pipeline.apply(X, stats).to_numpy(), est.transform(X))


def test_from_stats_of_a_dataset_fit_serves_in_a_pipeline(datasets, client):
    path = datasets.sample("estimator_sample")
    stats = pipeline.fit(str(path), features=["f_normal", "f_large_offset"])
    df = pq.read_table(path, columns=["f_normal", "f_large_offset"]).to_pandas()
    est = StandardScaler.from_stats(stats)
    np.testing.assert_array_equal(est.transform(df), pipeline.apply(df, stats).to_numpy())
    with pytest.raises(ValueError, match="fitted with group_by"):
        StandardScaler.from_stats(pipeline.fit(str(path), features=["f_normal"],
                                               group_by="label"))
