"""The statistics pass on a real LocalCluster: exact, and identical whatever the cluster."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from distributed import Client, LocalCluster

import pipeline
from pipeline.errors import DataError
from pipeline.stats import exact_reference


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def _hostile(n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "big": 1e9 + 1e-3 * rng.standard_normal(n),
        "f32": (1e4 + rng.standard_normal(n)).astype(np.float32),
        "epoch": 1_767_225_600 + rng.integers(0, 86_400 * 30, n),
        "s": rng.choice(["a", "b"], n),
    })


def _split(df: pd.DataFrame, sizes: list[int]) -> dict[str, pa.Table]:
    out, start = {}, 0
    for i, n in enumerate(sizes):
        out[f"part={i % 3}/f{i:03d}.parquet"] = pa.Table.from_pandas(
            df.iloc[start:start + n], preserve_index=False)
        start += n
    assert start == len(df)
    return out


LAYOUTS = {
    "one file": ([3000], None),
    "many files, ragged": ([1, 0, 999, 1, 1200, 799], None),
    "tiny row groups": ([1500, 1500], 7),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_splitting_never_changes_the_answer(datasets, client, layout):
    sizes, row_group = LAYOUTS[layout]
    df = _hostile(3000)
    path = datasets.write(f"hostile-{layout}", _split(df, sizes), row_group_size=row_group)
    stats = pipeline.fit(str(path), client=client)
    assert stats.names == ["big", "f32", "epoch"]
    for name in stats.names:
        mean, std = exact_reference(df[name].tolist())
        f = stats.features[name]
        assert abs(f.std - std) <= 1e-12 * std, name
        assert abs(f.mean - mean) <= 1e-12 * std + np.spacing(abs(mean)), name
        assert f.count == 3000 and f.missing == 0
    assert stats.features["f32"].dtype == "float32"
    assert stats.input["rows"] == 3000 and stats.input["files"] == len(sizes)


def test_missing_values_are_excluded_and_counted(datasets, client):
    x = pa.array([1.0, None, float("nan"), 3.0, 5.0])
    i = pa.array([1, 2, None, 4, 8], pa.int64())
    path = datasets.write("missing", {"a.parquet": pa.table({"x": x, "i": i})})
    stats = pipeline.fit(str(path), client=client, ddof=1)
    assert (stats.features["x"].count, stats.features["x"].missing) == (3, 2)
    assert stats.features["x"].mean == 3.0
    assert stats.features["x"].std == pytest.approx(2.0, rel=1e-15)  # sample std, ddof=1
    assert (stats.features["i"].count, stats.features["i"].missing) == (4, 1)


def test_inf_is_an_error_naming_column_count_and_file(datasets, client):
    path = datasets.write("inf", {
        "a.parquet": pa.table({"x": [1.0, 2.0]}),
        "b.parquet": pa.table({"x": [float("inf"), -float("inf"), 3.0]})})
    with pytest.raises(DataError) as info:
        pipeline.fit(str(path), client=client)
    assert str(info.value).startswith("column 'x' has 2 infinite value(s), e.g. in b.parquet")
    stats = pipeline.fit(str(path), client=client, inf="null")
    assert (stats.features["x"].count, stats.features["x"].missing) == (3, 2)


def test_all_missing_column_is_an_error(datasets, client):
    path = datasets.write("all-missing", {"a.parquet": pa.table(
        {"x": pa.array([None, None], pa.float64()), "y": [1.0, 2.0]})})
    with pytest.raises(DataError, match="column 'x' has no values"):
        pipeline.fit(str(path), client=client)


def test_constant_column(datasets, client):
    path = datasets.write("constant", {"a.parquet": pa.table({"c": [0.1] * 5, "y": [1.0, 2, 3,
                                                                                       4, 5]})})
    stats = pipeline.fit(str(path), client=client)
    c = stats.features["c"]
    assert (c.constant, c.std, c.mean) == (True, 0.0, 0.1)


def _fit_json(path, **cluster_kw) -> dict:
    with LocalCluster(dashboard_address=":0", **cluster_kw) as cluster, Client(cluster) as c:
        stats = pipeline.fit(str(path), client=c)
    return json.loads(stats.to_json())["features"]


def test_bit_identical_whatever_the_cluster(datasets):
    path = datasets.sample("sample-fit", rows=30_000, days=4, files_per_day=4)
    reference = _fit_json(path, n_workers=1, threads_per_worker=1, processes=False)
    for kw in [dict(n_workers=2, threads_per_worker=1, processes=False),
               dict(n_workers=3, threads_per_worker=1, processes=False),
               dict(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1")]:
        assert _fit_json(path, **kw) == reference, kw


def test_fit_a_dask_dataframe_agrees_with_the_files(datasets, client):
    import dask.dataframe as dd

    df = _hostile(2000)
    ddf = dd.from_pandas(df, npartitions=5)
    stats = pipeline.fit(ddf, client=client)
    for name in ["big", "f32", "epoch"]:
        mean, std = exact_reference(df[name].tolist())
        assert math.isclose(stats.features[name].std, std, rel_tol=1e-12)
        assert abs(stats.features[name].mean - mean) <= 1e-12 * std + np.spacing(abs(mean))


def test_the_library_warns_through_python_warnings(datasets, client, capsys):
    path = datasets.write("constant-warn", {"a.parquet": pa.table({"c": [0.5] * 3,
                                                                   "y": [1.0, 2, 3]})})
    with pytest.warns(UserWarning, match="column 'c' is constant"):
        pipeline.fit(str(path), client=client)
    assert capsys.readouterr().err == ""
