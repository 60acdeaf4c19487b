"""Training-ready output (issue 13 §4): fill, indicator, clip and minmax in every front end.

Every expected value is computed here with fractions (exact mean, min and max of the
data as written), never with the package's helpers.
"""

from __future__ import annotations

import json
import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from procs import error_line, zscore
from reference import exact_reference

import pipeline
from pipeline import StandardScaler
from pipeline.errors import DataError, InputError
from pipeline.finish import LossyInverseWarning

TOL = 1e-12


def expected(values, mode="standard", *, fit=None, clip=None, fill=None, ddof=0):
    """Exact z (or minmax) of ``values`` with statistics of ``fit`` (default: ``values``).

    ``None`` and NaN are missing; the result is a list of floats (NaN where missing
    and not filled).
    """
    known = [v for v in (fit if fit is not None else values)
             if v is not None and not (isinstance(v, float) and math.isnan(v))]
    out = []
    lo, hi = Fraction(min(known)), Fraction(max(known))
    mean = sum(map(Fraction, known), Fraction(0)) / len(known)
    _, std = exact_reference(known, ddof)
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(math.nan if fill is None else fill)
            continue
        if mode == "minmax":
            z = 0.0 if lo == hi else float((Fraction(v) - lo) / (hi - lo))
        else:
            z = 0.0 if lo == hi else float((Fraction(v) - mean) / Fraction(std))
        if clip is not None and abs(z) > clip:
            z = math.copysign(clip, z)
        out.append(z)
    return out


def close(got, want, tol=TOL):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want)), (got, want)
    ok = ~np.isnan(want)
    scale = np.maximum(np.abs(want[ok]), 1.0)
    assert np.all(np.abs(got[ok] - want[ok]) <= tol * scale), (got, want)


A = [1.5, None, 3.25, math.nan, 100.0, -7.0, 2.0]
BIG = [2**63 - 1, 2**63 - 5, -(2**63), 12, 2**62, -5, 7]  # int64 at its limits
U = [2**64 - 1, 2**64 - 3, 0, 2**63, 9, 1, 2**64 - 2]  # uint64 at its limits


def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": pd.array(A, dtype="float64"),
                         "big": np.array(BIG, dtype=np.int64),
                         "u": np.array(U, dtype=np.uint64),
                         "h": np.array([1, 2, 3, 4, 5, 6, 7], dtype=np.float16),
                         "k": np.full(7, 4.0),
                         "label": list("abcdefg")})


@pytest.fixture(scope="module")
def stats():
    return StandardScaler().fit(frame().drop(columns="label")).to_stats()


# ------------------------------------------------------------------ apply
def test_apply_fill_indicator_clip_against_fractions(stats):
    df = frame()
    out = pipeline.apply(df, stats, fill_missing=-0.5, missing_indicator=True, clip=1.2)
    assert list(out.columns) == ["a", "a__missing", "big", "big__missing", "u", "u__missing",
                                 "h", "h__missing", "k", "k__missing", "label"]
    for name in ("a", "big", "u"):
        close(out[name], expected(list(df[name].astype(object)), clip=1.2, fill=-0.5))
    assert out["a__missing"].dtype == bool
    assert out["a__missing"].tolist() == [False, True, False, True, False, False, False]
    assert not out["big__missing"].any()
    assert out["h"].dtype == np.float16  # fill and clip keep the output dtype
    close(out["h"], np.float16(expected(list(df["h"].astype(float)), clip=1.2)), 1e-3)
    assert (out["k"] == 0.0).all()  # a constant feature
    assert df["a"].isna().sum() == 2  # the input is not modified


@pytest.mark.parametrize("dtype, values", [
    ("float16", [0.5, 1.0, 3.0, 65504.0, -65504.0]),
    ("float32", [1e9 + 64, 1e9, 1e9 + 128, 3.4e38]),
    ("float64", [1e150, -1e150, 0.1, 5e-324]),
    ("int8", [-128, 127, 0, 5]), ("uint8", [0, 255, 7]),
    ("int16", [-32768, 32767, 3]), ("uint16", [0, 65535, 9]),
    ("int32", [-2**31, 2**31 - 1, 17]), ("uint32", [0, 2**32 - 1, 4]),
    ("int64", BIG), ("uint64", U),
    ("int64", [2**63 - 1, 2**63 - 2, 2**63 - 7]),  # a narrow range at the top
    ("uint64", [2**64 - 1, 2**64 - 2, 2**64 - 1000]),
])
def test_minmax_is_exact_for_every_dtype(dtype, values):
    x = np.array(values, dtype=dtype)
    df = pd.DataFrame({"x": x})
    st = StandardScaler().fit(df).to_stats()
    got = pipeline.apply(df, st, mode="minmax", dtype="float64")["x"]
    close(got, expected([v.item() for v in x], "minmax"))
    assert got.min() == 0.0 and got.max() == 1.0


def test_minmax_constant_column_is_zero_and_missing_stays_missing():
    df = pd.DataFrame({"c": [7.0, 7.0, math.nan]})
    st = StandardScaler().fit(df).to_stats()
    out = pipeline.apply(df, st, mode="minmax")["c"]
    assert out.iloc[:2].tolist() == [0.0, 0.0] and math.isnan(out.iloc[2])
    new = pipeline.apply(pd.DataFrame({"c": [9.0]}), st, mode="minmax", fill_missing=0)
    assert new["c"].tolist() == [0.0]


def test_hostile_values(stats):
    # NaN and null together, an all-missing batch, a tiny clip, float16.
    df = pd.DataFrame({"a": pd.array([None, math.nan, None], dtype="Float64"),
                       "big": np.array([2**63 - 1, -(2**63), 0], dtype=np.int64)})
    out = pipeline.apply(df, stats, features=["a", "big"], fill_missing=0.0,
                         missing_indicator=True, clip=1e-300)
    assert out["a"].tolist() == [0.0, 0.0, 0.0] and out["a__missing"].all()
    want = expected([2**63 - 1, -(2**63), 0], fit=BIG, clip=1e-300)
    assert out["big"].tolist() == want and abs(want[0]) == 1e-300


def test_fill_of_infinities_made_missing_by_inf_null():
    train = pd.DataFrame({"x": [1.0, 2.0, 4.0]})
    st = StandardScaler(inf="null").fit(train).to_stats()
    df = pd.DataFrame({"x": [math.inf, 2.0, -math.inf]})
    out = pipeline.apply(df, st, fill_missing=0.25, missing_indicator=True, clip=1.0)
    assert out["x__missing"].tolist() == [True, False, True]
    close(out["x"], [0.25, *expected([2.0], fit=[1.0, 2.0, 4.0]), 0.25])
    strict = StandardScaler().fit(train).to_stats()  # inf="error": never clipped away
    with pytest.raises(DataError, match="column 'x' has 2 infinite value"):
        pipeline.apply(df, strict, clip=1.0)


def test_indicator_name_already_there_is_refused(stats):
    df = frame().assign(a__missing=1)
    with pytest.raises(DataError, match="column 'a__missing' already exists"):
        pipeline.apply(df, stats, fill_missing=0, missing_indicator=True)


@pytest.mark.parametrize("kw, message", [
    ({"clip": 0}, "clip must be a finite number > 0, not 0"),
    ({"clip": -1.0}, "clip must be a finite number > 0, not -1.0"),
    ({"clip": math.nan}, "clip must be a finite number > 0, not nan"),
    ({"fill_missing": "zero"}, "fill_missing must be a finite number, not 'zero'"),
    ({"fill_missing": math.inf}, "fill_missing must be a finite number, not inf"),
    ({"fill_missing": 3, "clip": 2}, r"fill_missing 3 is outside \[-2, 2\]"),
    ({"missing_indicator": True}, "missing_indicator marks filled values"),
    ({"mode": "minmax", "inverse": True}, "mode='minmax' has no inverse transform"),
])
def test_bad_options_are_refused(stats, kw, message):
    with pytest.raises(InputError, match=message):
        pipeline.apply(frame(), stats, **kw)


# ------------------------------------------------------------------ inverse
def test_inverse_warns_and_indicators_restore_missing(stats):
    df = frame()
    z = pipeline.apply(df, stats, fill_missing=0.0, missing_indicator=True, clip=100.0)
    with pytest.warns(LossyInverseWarning, match="filled with 0.0"):
        back = pipeline.apply(z, stats, inverse=True, fill_missing=0.0,
                              missing_indicator=True, clip=100.0)
    assert list(back.columns) == list(df.columns)
    assert back["a"].isna().tolist() == df["a"].isna().tolist()
    close(back["a"], df["a"], 1e-13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipeline.apply(pipeline.apply(df, stats), stats, inverse=True)  # nothing lossy: quiet


def test_dask_transform_and_inverse(stats):
    import dask
    import dask.dataframe as dd

    df = frame()
    ddf = dd.from_pandas(df, npartitions=3)
    with dask.config.set(scheduler="sync"):
        lazy = pipeline.transform(ddf, stats, fill_missing=0.5, missing_indicator=True,
                                  clip=1.0)
        assert list(lazy.columns) == list(pipeline.apply(df.iloc[:0], stats, fill_missing=0.5,
                                                         missing_indicator=True).columns)
        assert lazy.dtypes["a__missing"] == np.dtype(bool)
        got = lazy.compute()
        for name in ("a", "big", "u"):
            close(got[name], expected(list(df[name].astype(object)), clip=1.0, fill=0.5))
        mm = pipeline.transform(ddf, stats, mode="minmax").compute()
        close(mm["big"], expected(BIG, "minmax"))
        with pytest.warns(LossyInverseWarning):
            back = pipeline.inverse_transform(lazy, stats, fill_missing=0.5,
                                              missing_indicator=True, clip=1.0)
        assert "a__missing" not in back.columns
        assert back.compute()["a"].isna().sum() == 2
    with pytest.raises(InputError, match="no inverse"):
        pipeline.inverse_transform(ddf, stats, mode="minmax")


# --------------------------------------------------------------- estimator
def test_estimator_options_against_fractions():
    X = np.array([[1.0, 10.0], [np.nan, 20.0], [3.0, 30.0], [50.0, 45.0]])
    est = StandardScaler(fill_missing=0.0, missing_indicator=True, clip=1.5).fit(X)
    Z = est.transform(X)
    assert list(est.get_feature_names_out()) == ["x0", "x0__missing", "x1", "x1__missing"]
    close(Z[:, 0], expected([1.0, None, 3.0, 50.0], clip=1.5, fill=0.0))
    close(Z[:, 2], expected([10.0, 20.0, 30.0, 45.0], clip=1.5))
    assert Z[:, 1].tolist() == [0.0, 1.0, 0.0, 0.0] and not Z[:, 3].any()
    with pytest.warns(LossyInverseWarning, match="clipped"):
        back = est.inverse_transform(Z)
    assert back.shape == X.shape and np.isnan(back[1, 0])
    mm = StandardScaler(minmax=True).fit(X)
    close(mm.transform(X)[:, 1], expected([10.0, 20.0, 30.0, 45.0], "minmax"))
    with pytest.raises(ValueError, match="no inverse_transform"):
        mm.inverse_transform(X)
    with pytest.raises(ValueError, match="clip must be a finite number > 0"):
        StandardScaler(clip=0.0).fit(X).transform(X)
    frame = pd.DataFrame(X, columns=["p", "q"])
    est_pd = StandardScaler(fill_missing=0.0, missing_indicator=True).fit(frame)
    z_pd = est_pd.set_output(transform="pandas").transform(frame)
    assert list(z_pd.columns) == ["p", "p__missing", "q", "q__missing"]
    with pytest.warns(LossyInverseWarning):
        close(est_pd.inverse_transform(z_pd), X, 1e-13)  # NaN back in place
    pd_out = est.set_output(transform="pandas").transform(X)
    assert list(pd_out.columns) == ["x0", "x0__missing", "x1", "x1__missing"]


def test_estimator_with_options_passes_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(StandardScaler(clip=50.0, fill_missing=0.0))
    check_estimator(StandardScaler(minmax=True))


def test_estimator_lazy_dask_array_with_indicators():
    import dask.array as da

    X = np.array([[1.0, np.nan], [2.0, 5.0], [4.0, 7.0], [8.0, 9.0]])
    est = StandardScaler(fill_missing=0.0, missing_indicator=True).fit(X)
    lazy = est.transform(da.from_array(X, chunks=(2, 2)))
    assert lazy.shape == (4, 4)
    np.testing.assert_array_equal(lazy.compute(), est.transform(X))


# --------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def training(datasets):
    files = {
        "day=1/part-0.parquet": pa.table({"a": pa.array([1.5, None, 3.25, math.nan]),
                                          "big": pa.array(BIG[:4], pa.int64()),
                                          "id": pa.array([1, 2, 3, 4])}),
        "day=2/part-0.parquet": pa.table({"a": pa.array([100.0, -7.0, 2.0]),
                                          "big": pa.array(BIG[4:], pa.int64()),
                                          "id": pa.array([5, 6, 7])}),
    }
    return datasets.write("finish-training", files)


def _read(out, rel):
    return pq.read_table(out / rel)


def test_cli_run_fill_indicator_clip(training, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = zscore(capsys, "run", training, out, "--exclude", "id", "--threads",
                          "--workers", "1", "-q", "--fill-missing", "-1", "--missing-indicator",
                          "--clip", "1.5")
    assert code == 0, err
    first = _read(out, "day=1/part-0.parquet")
    assert first.column_names == ["a", "a__missing", "big", "big__missing", "id"]
    assert first.schema.field("a__missing").type == pa.bool_()
    a = first.column("a").to_pylist() + _read(out, "day=2/part-0.parquet").column("a").to_pylist()
    close(a, expected(A, clip=1.5, fill=-1.0))
    assert first.column("a").null_count == 0
    assert first.column("a__missing").to_pylist() == [False, True, False, True]
    manifest = json.loads((out / "_SUCCESS").read_text())
    want = {n: sum(abs(z) > 1.5 for z in expected(v) if not math.isnan(z))
            for n, v in (("a", A), ("big", BIG))}
    assert manifest["clipped"] == want and want["a"] == 1
    assert (manifest["fill_missing"], manifest["missing_indicator"], manifest["clip"]) == \
        (-1.0, True, 1.5)
    page = (out / "_report" / "index.html").read_text()
    assert "values clipped to ±1.5" in page and f'big</span> {want["big"]}' in page


def test_cli_transform_minmax(training, tmp_path, capsys):
    stats = tmp_path / "s.json"
    assert zscore(capsys, "fit", training, "--stats", stats, "--exclude", "id", "-q",
                  "--threads")[0] == 0
    out = tmp_path / "mm"
    code, _, err = zscore(capsys, "transform", training, out, "--stats", stats, "--mode",
                          "minmax", "-q", "--threads")
    assert code == 0, err
    big = _read(out, "day=1/part-0.parquet").column("big").to_pylist() + \
        _read(out, "day=2/part-0.parquet").column("big").to_pylist()
    close(big, expected(BIG, "minmax"))
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert manifest["mode"] == "minmax" and manifest["clip"] is None and "clipped" not in manifest


@pytest.mark.parametrize("args, message", [
    (["--clip", "0"], "zscore: error: --clip must be a finite number > 0, not 0.0; for example "
                      "--clip 5"),
    (["--clip", "abc"], "zscore: error: Invalid value for '--clip': 'abc' is not a valid float. "
                        "(see 'zscore run --help')"),
    (["--fill-missing", "x"], "zscore: error: Invalid value for '--fill-missing': 'x' is not a "
                              "valid float. (see 'zscore run --help')"),
    (["--fill-missing", "inf"], "zscore: error: --fill-missing must be a finite number, not "
                                "inf; for example --fill-missing 0"),
    (["--fill-missing", "3", "--clip", "2"], "zscore: error: --fill-missing 3.0 is outside "
                                             "[-2.0, 2.0], the range --clip keeps values in; "
                                             "choose a fill value inside it, or a larger clip"),
    (["--missing-indicator"], "zscore: error: --missing-indicator marks filled values: pass "
                              "--fill-missing 0 with it"),
])
def test_cli_bad_options_exit_2(training, tmp_path, capsys, args, message):
    code, _, err = zscore(capsys, "run", training, tmp_path / "out", *args)
    assert code == 2
    assert error_line(err) == message
    assert "local Dask cluster" not in err  # refused before a cluster started
    assert not (tmp_path / "out").exists()


def test_cli_indicator_clash_exit_2(datasets, tmp_path, capsys):
    src = datasets.write("finish-clash", {"p.parquet": pa.table({"a": [1.0, None, 3.0],
                                                                "a__missing": [0, 0, 1]})})
    code, _, err = zscore(capsys, "run", src, tmp_path / "out", "--features", "a", "--threads",
                          "--fill-missing", "0", "--missing-indicator")
    assert code == 2
    assert "column 'a__missing' already exists in" in error_line(err)
    assert "--missing-indicator cannot add it" in error_line(err)


def test_cli_per_key_minmax_fill(datasets, tmp_path, capsys):
    """Per-key statistics: each key's own min and max, then the fill."""
    keys = ["a", "b", "a", "b", "a", "b"]
    x = [2**63 - 1, 10, -(2**63), 30, 0, None]
    src = datasets.write("finish-keys", {"p.parquet": pa.table({"key": keys,
                                                                "x": pa.array(x, pa.int64())})})
    out = tmp_path / "out"
    code, _, err = zscore(capsys, "run", src, out, "--features", "x", "--group-by", "key",
                          "--mode", "minmax", "--fill-missing", "0.5", "--threads", "-q")
    assert code == 0, err
    got = pq.read_table(out / "p.parquet").column("x").to_pylist()
    want = {k: expected([v for kk, v in zip(keys, x, strict=True) if kk == k], "minmax", fill=0.5)
            for k in ("a", "b")}
    close(got, [want[k].pop(0) for k in keys])


def test_cli_delta_output_has_the_indicator_columns(tmp_path, capsys):
    from deltalake import DeltaTable, write_deltalake

    write_deltalake(str(tmp_path / "dl"), pa.table({"a": [1.0, None, 3.0, math.nan, 9.0],
                                                    "d": [1, 1, 2, 2, 2]}), partition_by=["d"])
    out = tmp_path / "out"
    code, _, err = zscore(capsys, "run", tmp_path / "dl", out, "--features", "a", "--threads",
                          "-q", "--fill-missing", "0", "--missing-indicator", "--clip", "1")
    assert code == 0, err
    table = DeltaTable(str(out)).to_pyarrow_table().sort_by([("d", "ascending")])
    assert table.schema.field("a__missing").type == pa.bool_()
    rows = {(d, m) for d, m in zip(table.column("d").to_pylist(),
                                   table.column("a__missing").to_pylist(), strict=True)}
    assert rows == {(1, False), (1, True), (2, False), (2, True)}
    close(sorted(table.column("a").to_pylist()),
          sorted(expected([1.0, None, 3.0, math.nan, 9.0], clip=1.0, fill=0.0)))
