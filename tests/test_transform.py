"""The kernel and its three front ends: Arrow, pandas and lazy Dask."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.artifact import FeatureStats, FittedStats, Groups
from pipeline.errors import ArtifactError, DataError, InputError
from pipeline.frames import apply, inverse_transform, transform
from pipeline.plan import Plan, transform_table
from pipeline.stats import Moments

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow


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
    with pytest.raises(InputError, match="unknown mode 'maxabs'"):
        apply(pd.DataFrame({"x": X}), STATS, mode="maxabs", features=["x"])


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


@pytest.mark.slow  # a real zscore process
def test_the_command_line_never_imports_pandas(datasets, tmp_path):
    import subprocess
    import sys

    src = datasets.sample()
    code = ("import sys; from pipeline.cli import main; "
            f"rc = main(['run', {str(src)!r}, {str(tmp_path / 'o')!r}, '-q']); "
            "sys.exit(10 if 'pandas' in sys.modules else rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # 10: pandas was imported (0.2 s of start-up)


# ------------------------------------------------------- exact integers, all widths
def _exact(values) -> tuple[Fraction, float]:
    """Exact mean (a rational) and the float nearest the exact population std."""
    xs = [Fraction(int(v)) for v in values]
    mean = sum(xs, Fraction(0)) / len(xs)
    return mean, math.sqrt(sum(((x - mean) ** 2 for x in xs), Fraction(0)) / len(xs))


def _assert_z(z, x, mean: Fraction, std: float, mode: str = "standard") -> None:
    """z within 1e-12 of the exact value, relative to max(1, |z|) (so in units of sigma)."""
    for got, v in zip(np.asarray(z, dtype=np.float64).tolist(), x, strict=True):
        d = Fraction(int(v)) - (mean if mode != "scale" else 0)
        want = d / Fraction(std) if mode != "center" else d
        scale = max(1, abs(want)) if mode != "center" else max(Fraction(std), abs(want))
        assert abs(Fraction(got) - want) <= Fraction(1, 10**12) * scale, (v, got, float(want))


def _limits(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _hostile_ints(dtype, rng) -> dict[str, np.ndarray]:
    """Fit data near the type's min and max with a spread of a few units, and worse."""
    lo, hi = _limits(dtype)
    span = [int(v) for v in rng.integers(0, 7, 400)]
    spread = [int(v) for v in rng.integers(lo, hi, 300, endpoint=True, dtype=dtype)]
    out = {"near max": [hi - s for s in span], "near min": [lo + s for s in span],
           "whole range": [lo, hi, *spread], "one value": [hi - 3], "constant": [lo + 1] * 50}
    if np.dtype(dtype).itemsize == 8:
        out["epoch ns, sigma 288"] = [(lo + hi) // 4 + int(v) for v in rng.integers(0, 1000, 400)]
    return {k: np.array(v, dtype=dtype) for k, v in out.items()}


INT_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", INT_TYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("mode", ["standard", "scale", "center"])
def test_integers_of_every_width_are_exact(dtype, mode):
    rng = np.random.default_rng(5)
    lo, hi = _limits(dtype)
    for case, x in _hostile_ints(dtype, rng).items():
        stats = _stats(x=x)
        f = stats.features["x"]
        mean, std = _exact(x)
        assert abs(f.std - std) <= 1e-12 * std and abs(Fraction(f.mean) - mean) <= \
            Fraction(1, 10**12) * Fraction(std) + Fraction(np.spacing(abs(float(mean)))), case
        # validation data: the fit's values plus the type's extremes, outside its range
        val = np.concatenate([x, np.array([lo, hi, lo + 1, hi - 1], dtype=dtype)])
        table = pa.table({"x": pa.array(val, mask=np.arange(val.size) % 17 == 16)})
        out = transform_table(table, Plan.build(stats, mode=mode)).column("x")
        valid = [i for i in range(val.size) if i % 17 != 16]
        assert out.null_count == val.size - len(valid)
        z = np.asarray(out.to_pylist(), dtype=object)[valid]
        if f.constant:
            want = val[valid].astype(np.float64) if mode == "scale" else np.zeros(len(valid))
            assert z.tolist() == want.tolist(), case
        else:
            _assert_z(z, val[valid], mean, f.std, mode)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64], ids=["int64", "uint64"])
def test_the_pandas_frames_reach_the_exact_kernel(dtype):
    lo, hi = _limits(dtype)
    x = np.array([hi - k for k in range(0, 1000, 3)], dtype=dtype)
    stats = _stats(x=x)
    mean, _ = _exact(x)
    std = stats.features["x"].std
    nullable = "Int64" if dtype is np.int64 else "UInt64"
    frames = {
        "numpy": pd.Series(x),
        "nullable": pd.Series(pd.array(list(map(int, x)) + [None], dtype=nullable)),
        "arrow": pd.Series(pd.arrays.ArrowExtensionArray(pa.array(list(map(int, x)) + [None],
                                                                  pa.from_numpy_dtype(dtype)))),
    }
    for kind, s in frames.items():
        z = apply(pd.DataFrame({"x": s}), stats)["x"]
        values = z.to_numpy(dtype=np.float64, na_value=np.nan)
        _assert_z(values[:x.size], x, mean, std)
        if kind != "numpy":
            assert z.isna().tolist() == [False] * x.size + [True]  # a null stays missing


def test_the_public_functions_are_the_front_ends_not_modules():
    import dask.dataframe as dd

    import pipeline

    df = pd.DataFrame({"x": X})
    z = pipeline.transform(dd.from_pandas(df, npartitions=2), STATS, features=["x"])
    pd.testing.assert_frame_equal(z.compute(scheduler="sync"), pipeline.apply(df, STATS,
                                                                             features=["x"]))
    back = pipeline.inverse_transform(z, STATS, features=["x"]).compute(scheduler="sync")
    np.testing.assert_allclose(back["x"], X, rtol=1e-15)


def test_lazy_dask_transform_of_int64_nanoseconds_is_exact():
    import dask.dataframe as dd

    rng = np.random.default_rng(9)
    x = 1_767_225_600 * 10**9 + rng.integers(0, 1000, 1000)
    stats = _stats(x=x)
    mean, _ = _exact(x)
    z = transform(dd.from_pandas(pd.DataFrame({"x": x}), npartitions=3), stats)
    values = z.compute(scheduler="sync")["x"].to_numpy()
    assert len(np.unique(values)) == len(np.unique(x))  # not 5 values for 1,000 inputs
    _assert_z(values, x, mean, stats.features["x"].std)


@pytest.mark.parametrize("dtype", INT_TYPES, ids=lambda t: np.dtype(t).name)
def test_per_key_integers_are_exact_and_use_each_rows_key(dtype):
    rng = np.random.default_rng(11)
    lo, hi = _limits(dtype)
    keys = np.array(["a", "b", "c"])[rng.integers(0, 3, 600)]
    base = {"a": hi - 9, "b": lo, "c": (lo + hi) // 2}  # near the top, the bottom, the middle
    x = np.array([base[k] + int(v) for k, v in zip(keys, rng.integers(0, 10, 600),
                                                    strict=True)], dtype=dtype)
    df = pd.DataFrame({"k": keys, "x": x})
    global_ = FeatureStats.from_moments(Moments.from_array(x), np.dtype(dtype).name, 0)
    per_key = {(k,): {"x": FeatureStats.from_moments(Moments.from_array(x[keys == k]),
                                                     np.dtype(dtype).name, 0)} for k in base}
    stats = FittedStats(features={"x": global_}, groups=Groups(by=("k",), keys=per_key))
    z = apply(df, stats)["x"].to_numpy()
    for k in base:
        mean, _ = _exact(x[keys == k])
        _assert_z(z[keys == k], x[keys == k], mean, per_key[(k,)]["x"].std)
    back = apply(apply(df, stats), stats, inverse=True)["x"].to_numpy()
    assert back.dtype == np.float64
    assert all(abs(Fraction(b) - int(v)) <= Fraction(math.ulp(float(v))) + Fraction(1, 10**6)
               for b, v in zip(back.tolist(), x.tolist(), strict=True))
    unseen = apply(pd.DataFrame({"k": ["zz"], "x": x[:1]}), stats)
    _assert_z(unseen["x"].to_numpy(), x[:1], _exact(x)[0], global_.std)


def test_hand_written_artifact_without_moments_shifts_exactly():
    """No moments: the mean as written is the exact mean; round(mean) is the integer shift."""
    mean, std = 9_223_372_036_854_774_784.5, 3.0  # 2**63 - 1024 + 0.5 is not a float64: rounds
    f = FeatureStats(dtype="uint64", count=10, missing=0, mean=mean, std=std,
                     min=2**63 - 2048, max=2**64 - 1, constant=False)
    stats = FittedStats(features={"x": f})
    x = np.array([2**63 - 2048, 2**63 - 1030, 2**63 - 1020, 2**64 - 1], dtype=np.uint64)
    _assert_z(apply(pd.DataFrame({"x": x}), stats)["x"], x, Fraction(f.mean), std)


@pytest.mark.parametrize("mode", ["standard", "scale", "center"])
def test_inverse_of_integer_features_is_float64_and_round_trips(mode):
    x = np.array([2**63 - 7, 2**63 - 5, 2**63 - 1, 2**63 - 4], dtype=np.uint64)
    stats = _stats(x=x)
    z = apply(pd.DataFrame({"x": x}), stats, mode=mode)
    back = apply(z, stats, mode=mode, inverse=True)["x"]
    assert back.dtype == np.float64  # integers do not come back as integers
    for got, v in zip(back.tolist(), x.tolist(), strict=True):
        assert abs(Fraction(got) - v) <= Fraction(math.ulp(float(v)))  # the nearest float64


def test_int64_results_do_not_depend_on_the_other_values_of_the_batch():
    """Small values give the same bits in a batch of small values and next to 2**62."""
    x = np.array([-3, 0, 1, 2, 10, 2**40 + 1], dtype=np.int64)
    stats = _stats(x=np.array([1, 2, 4, 2**40], dtype=np.int64))
    plan = Plan.build(stats)
    alone = transform_table(pa.table({"x": x}), plan).column("x").to_pylist()
    mixed = transform_table(pa.table({"x": np.append(x, 2**62)}), plan).column("x").to_pylist()
    assert mixed[:-1] == alone


@pytest.mark.parametrize("fit_values, data, dtype", [
    ([-(2**63), -(2**63) + 3, -(2**63) + 8], [0, 1, 2**64 - 1], np.uint64),  # mean below 0
    ([2**64 - 9, 2**64 - 2, 2**64 - 1], [-(2**63), 0, 2**63 - 1], np.int64),  # above int64
])
def test_a_mean_outside_the_datas_type_is_still_exact(fit_values, data, dtype):
    """Validation data stored with another type than the fit's: the shift is clamped exactly."""
    fit_dtype = np.int64 if dtype is np.uint64 else np.uint64
    stats = _stats(x=np.array(fit_values, dtype=fit_dtype))
    x = np.array(data, dtype=dtype)
    for mode in ("standard", "center"):
        z = transform_table(pa.table({"x": x}), Plan.build(stats, mode=mode)).column("x")
        _assert_z(z.to_numpy(), data, _exact(fit_values)[0], stats.features["x"].std, mode)
