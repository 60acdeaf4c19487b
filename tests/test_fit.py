"""The statistics pass on a real LocalCluster: exact, and identical whatever the cluster."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from distributed import Client, LocalCluster
from reference import exact_reference

import pipeline
from pipeline.errors import DataError, InputError

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow


@pytest.fixture
def client(cluster):
    return cluster  # the session's LocalCluster (conftest)


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


@pytest.mark.slow  # four clusters of its own
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


def test_fit_a_pandas_dataframe_in_process(datasets, client):
    df = _hostile(1500)
    stats = pipeline.fit(df, exclude="s")  # no client and no cluster: it is fitted here
    for name in ["big", "f32", "epoch"]:
        mean, std = exact_reference(df[name].tolist())
        assert math.isclose(stats.features[name].std, std, rel_tol=1e-12)
        assert abs(stats.features[name].mean - mean) <= 1e-12 * std + np.spacing(abs(mean))
    assert stats.features["f32"].dtype == "float32" and stats.input["rows"] == 1500
    # The same numbers as the files, bit for bit.
    path = datasets.write("pandas-vs-files", _split(df, [1500]))
    assert stats.features == pipeline.fit(str(path), exclude="s", client=client).features


@pytest.mark.parametrize("option, value", [("group_by", "s"), ("filters", ["day == 1"]),
                                           ("cache", "cache-dir"),
                                           ("storage_options", {"anon": True})])
def test_dataset_options_are_refused_for_a_dataframe_naming_the_keyword(client, option, value):
    import dask.dataframe as dd

    df = _hostile(20)
    for frame, kind in ((df, "pandas"), (dd.from_pandas(df, npartitions=2), "Dask")):
        with pytest.raises(InputError) as info:
            pipeline.fit(frame, client=client, **{option: value})
        assert str(info.value) == (f"{option} applies to a dataset of Parquet files, not to a "
                                   f"{kind} DataFrame; drop it, or write the frame to Parquet "
                                   "and fit that")
        assert info.value.options == [option] and info.value.exit_code == 2


def test_the_library_warns_through_python_warnings(datasets, client, capsys):
    path = datasets.write("constant-warn", {"a.parquet": pa.table({"c": [0.5] * 3,
                                                                   "y": [1.0, 2, 3]})})
    with pytest.warns(UserWarning, match="column 'c' is constant"):
        pipeline.fit(str(path), client=client)
    assert capsys.readouterr().err == ""


# ------------------------------------------------ every stored type, exact; dtype names
FIT_TYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64,
             "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
             "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64}


def _near_top(name: str, rng) -> list:
    dtype = FIT_TYPES[name]
    if name.startswith("float"):
        top = 6e4 if name == "float16" else 1e30 if name == "float32" else 1e150
        return np.asarray(top * (1 - 1e-3 * rng.random(500)), dtype=dtype).tolist()
    info = np.iinfo(dtype)
    return [int(info.max) - int(v) for v in rng.integers(0, 9, 250)] + \
        [int(info.min) + int(v) for v in rng.integers(0, 9, 250)]


def test_every_stored_type_fits_exactly_and_is_named(datasets, client):
    rng = np.random.default_rng(23)
    data = {name: _near_top(name, rng) for name in FIT_TYPES}
    tables = {f"p{i}.parquet": pa.table({n: pa.array(v[i * 250:(i + 1) * 250],
                                                     pa.from_numpy_dtype(FIT_TYPES[n]))
                                         for n, v in data.items()}) for i in range(2)}
    stats = pipeline.fit(str(datasets.write("every-type", tables)), client=client)
    assert pipeline.FittedStats.from_dict(json.loads(stats.to_json())) == stats  # checks pass
    for name, values in data.items():
        f = stats.features[name]
        xs = [Fraction(v) for v in values]
        mean = sum(xs, Fraction(0)) / len(xs)
        std = math.sqrt(sum(((x - mean) ** 2 for x in xs), Fraction(0)) / len(xs))
        assert f.dtype == name  # the stored type, float16 included
        assert abs(f.std - std) <= 1e-12 * std, name
        assert abs(Fraction(f.mean) - mean) <= Fraction(1e-12 * std) + Fraction(
            np.spacing(abs(float(mean)))), name


# ------------------------------------------------------------ the supported spread
@pytest.mark.parametrize("spread, word", [(1e-160, "too small"), (1e-156, "too small"),
                                          (1e155, "too large")])
def test_a_spread_outside_float64_squares_is_refused_and_the_remedy_works(
        datasets, tmp_path, capsys, spread, word):
    from pipeline.cli import main

    path = datasets.write(f"spread-{spread}", {"a.parquet": pa.table(
        {"x": [0.0, spread, 2 * spread, 0.5 * spread], "y": [1.0, 2.0, 3.0, 4.0]})})
    assert main(["fit", str(path), "--stats", str(tmp_path / "s.json"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("zscore: error: column 'x' has std ")
    assert word in err and "--exclude x" in err
    assert main(["fit", str(path), "--stats", str(tmp_path / "s.json"), "--exclude", "x"]) == 0


def test_the_smallest_supported_spread_is_exact(datasets, client):
    x = np.array([0.0, 1.0, 2.0, 3.0]) * 2.0**-509  # std about 2**-509: squares still normal
    stats = pipeline.fit(str(datasets.write("spread-min", {"a.parquet": pa.table({"x": x})})),
                         client=client)
    _, std = exact_reference(x.tolist())
    assert abs(stats.features["x"].std - std) <= 1e-12 * std


def test_a_key_with_a_tiny_spread_is_refused_naming_key_and_remedy(datasets, tmp_path, capsys):
    from pipeline.cli import main

    path = datasets.write("spread-key", {"a.parquet": pa.table(
        {"k": ["a", "a", "b", "b"], "x": [1.0, 2.0, 5e-161, 1e-160],
         "y": [1.0, 2.0, 3.0, 5.0]})})
    stats = str(tmp_path / "s.json")
    assert main(["fit", str(path), "--stats", stats, "--group-by", "k"]) == 2
    err = capsys.readouterr().err
    assert "column 'x' within key ['b'] of --group-by k has std" in err and "--exclude x" in err
    assert main(["fit", str(path), "--stats", stats, "--group-by", "k", "--exclude", "x"]) == 0


@pytest.mark.parametrize("rows", [300, 70_000])
def test_a_file_read_by_row_groups_gives_the_batch_readers_moments(tmp_path, rows):
    """Files are read row group by row group (by Polars when the row groups are large, see
    pipeline.rowgroups) and cut into batches of BATCH_ROWS that run across row groups, as
    pyarrow's batch reader cuts them: the same batches, so the same bits."""
    import pyarrow.parquet as pq

    from pipeline.dataset import SourceFile
    from pipeline.moments import BATCH_ROWS, column_moments, file_moments
    from pipeline.stats import Moments
    from pipeline.storage import resolve

    df = _hostile(rows)
    path = tmp_path / "f.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path,
                   row_group_size=rows // 3 + 1)
    assert pq.ParquetFile(path).num_row_groups == 3
    names = ["big", "f32", "epoch"]
    expected = {n: Moments() for n in names}
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=names):
        for n in names:
            expected[n] = expected[n].merge(column_moments(batch.column(n)))
    file = SourceFile(rel="f.parquet", path=str(path), size=path.stat().st_size, version="1")
    assert file_moments(resolve(str(tmp_path), {}).fs, file, names) == expected
    assert expected["big"].count == rows
