"""The kernel and its three front ends: Arrow, pandas and lazy Dask."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.artifact import FeatureStats, FittedStats
from pipeline.errors import ArtifactError, DataError
from pipeline.frames import apply, inverse_transform, transform
from pipeline.stats import Moments
from pipeline.transform import Plan, transform_table


def _stats(inf="error", **columns) -> FittedStats:
    feats = {name: FeatureStats.from_moments(Moments.from_array(np.asarray(v)),
                                             str(np.asarray(v).dtype), 0)
             for name, v in columns.items()}
    return FittedStats(features=feats, inf=inf)


X = np.array([1.0, 2.0, 4.0, 9.0])
STATS = _stats(x=X, c=np.full(4, 0.1), i=np.array([1, 2, 3, 10]))


def test_standard_scale_center_match_the_formulas():
    f = STATS.features["x"]
    df = pd.DataFrame({"x": X})
    np.testing.assert_array_equal(apply(df, STATS, features=["x"])["x"], (X - f.mean) / f.std)
    np.testing.assert_array_equal(apply(df, STATS, mode="scale", features=["x"])["x"], X / f.std)
    np.testing.assert_array_equal(apply(df, STATS, mode="center", features=["x"])["x"],
                                  X - f.mean)


def test_constant_column_is_exactly_zero_or_unchanged():
    df = pd.DataFrame({"c": [0.1, np.nan, 0.1]})
    assert apply(df, STATS, features=["c"])["c"].tolist()[::2] == [0.0, 0.0]
    assert apply(df, STATS, mode="center", features=["c"])["c"].tolist()[::2] == [0.0, 0.0]
    assert apply(df, STATS, mode="scale", features=["c"])["c"].tolist()[::2] == [0.1, 0.1]
    assert np.isnan(apply(df, STATS, features=["c"])["c"][1])


def test_dtypes_preserve_and_forced():
    df = pd.DataFrame({"x": X.astype(np.float32), "i": np.array([1, 2, 3, 4], dtype=np.int64),
                       "s": list("abcd")})
    out = apply(df, STATS, features=["x", "i"])
    assert out.dtypes.to_dict() == {"x": np.float32, "i": np.float64, "s": df["s"].dtype}
    assert apply(df, STATS, dtype="float64", features=["x"])["x"].dtype == np.float64
    assert apply(df, STATS, dtype="float32", features=["i"])["i"].dtype == np.float32
    assert list(out.columns) == ["x", "i", "s"] and out["s"].equals(df["s"])


def test_input_is_not_modified():
    df = pd.DataFrame({"x": X.copy()})
    apply(df, STATS, features=["x"])
    np.testing.assert_array_equal(df["x"], X)


def test_nullable_and_arrow_dtypes_keep_missing():
    df = pd.DataFrame({"i": pd.array([1, None, 3, 4], dtype="Int64"),
                       "x": pd.arrays.ArrowExtensionArray(pa.array([1.0, None, np.nan, 4.0]))})
    out = apply(df, STATS, features=["i", "x"])
    assert out["i"].dtype == "Float64" and out["i"].isna().tolist() == [False, True, False, False]
    assert isinstance(out["x"].dtype, pd.ArrowDtype)
    arrow = pa.array(out["x"].array)
    assert arrow.null_count == 1 and np.isnan(arrow[2].as_py())  # null stays null, NaN NaN


def test_arrow_table_nulls_nan_and_passthrough():
    table = pa.table({"x": pa.array([1.0, None, np.nan, 9.0]), "s": ["a", "b", None, "d"],
                      "i": pa.array([1, 2, None, 10], pa.int64())})
    plan = Plan.build(STATS, features=["x", "i"])
    out = transform_table(table, plan)
    assert out.column("x").null_count == 1 and np.isnan(out.column("x")[2].as_py())
    assert out.column("i").type == pa.float64() and out.column("i").null_count == 1
    assert out.column("s").equals(table.column("s"))
    f = STATS.features["i"]
    assert out.column("i")[3].as_py() == (10 - f.mean) / f.std


def test_inverse_round_trips():
    df = pd.DataFrame({"x": X})
    for mode in ("standard", "scale", "center"):
        z = apply(df, STATS, mode=mode, features=["x"])
        back = apply(z, STATS, mode=mode, features=["x"], inverse=True)
        np.testing.assert_allclose(back["x"], X, rtol=1e-15)


def test_inf_policy():
    df = pd.DataFrame({"x": [1.0, np.inf]})
    with pytest.raises(DataError, match="column 'x' has 1 infinite value"):
        apply(df, STATS, features=["x"])
    lenient = _stats(inf="null", x=X)
    assert np.isnan(apply(df, lenient)["x"][1])


def test_unknown_column_and_mode():
    with pytest.raises(ArtifactError, match="column 'nope' is not in the statistics"):
        apply(pd.DataFrame({"x": X}), STATS, features=["nope"])
    with pytest.raises(DataError, match="column 'x' is not in the DataFrame"):
        apply(pd.DataFrame({"y": X}), STATS, features=["x"])
    with pytest.raises(Exception, match="unknown mode"):
        apply(pd.DataFrame({"x": X}), STATS, mode="minmax", features=["x"])


def test_dask_transform_is_lazy_and_matches_apply():
    import dask
    import dask.dataframe as dd

    df = pd.DataFrame({"x": np.linspace(0, 10, 100), "s": ["a"] * 100})
    ddf = dd.from_pandas(df, npartitions=4)
    calls = []

    def counting(_, **kw):
        calls.append(1)

    with dask.config.set(scheduler="sync"):
        with dask.callbacks.Callback(pretask=counting):
            z = transform(ddf, STATS, features=["x"])
        assert calls == []  # building the graph computed nothing
        assert z.dtypes["x"] == np.float64
        pd.testing.assert_series_equal(z.compute()["x"], apply(df, STATS, features=["x"])["x"])
        back = inverse_transform(z, STATS, features=["x"]).compute()
    np.testing.assert_allclose(back["x"], df["x"], rtol=1e-14, atol=1e-14)


def test_column_views_match_pyarrow_on_sliced_arrays():
    from pipeline.columns import null_mask, numpy_view

    for typ in (pa.int8(), pa.uint16(), pa.int64(), pa.float32(), pa.float64()):
        arr = pa.array([1, None, 3, 4, None, 6, 7, 8, 9, 10, 11], typ)
        part = arr.slice(3, 7)
        np.testing.assert_array_equal(null_mask(part), part.is_null().to_numpy(
            zero_copy_only=False))
        clean = pa.array([1, 2, 3, 4, 5, 6, 7], typ).slice(2, 4)
        np.testing.assert_array_equal(numpy_view(clean), clean.to_numpy())


def test_the_command_line_never_imports_pandas(datasets, tmp_path):
    import subprocess
    import sys

    src = datasets.sample()
    code = ("import sys; from pipeline.cli import main; "
            f"rc = main(['run', {str(src)!r}, {str(tmp_path / 'o')!r}, '-q']); "
            "sys.exit(10 if 'pandas' in sys.modules else rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # 10: pandas was imported (0.2 s of start-up)
