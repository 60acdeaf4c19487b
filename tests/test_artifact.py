"""The JSON artifact: exact round trip, and every malformed field refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.artifact import FeatureStats, FittedStats
from pipeline.errors import ArtifactError
from pipeline.stats import Moments


def _stats() -> FittedStats:
    rng = np.random.default_rng(0)
    feats = {
        "a": FeatureStats.from_moments(Moments.from_array(1e9 + rng.standard_normal(50)),
                                       "float64", 0),
        "n": FeatureStats.from_moments(Moments.from_array(np.arange(2**60, 2**60 + 9)), "int64",
                                       0),
        "c": FeatureStats.from_moments(Moments.from_array(np.full(4, 0.1)), "float32", 0),
    }
    return FittedStats(features=feats, ddof=0, inf="error", created="2026-01-01T00:00:00+00:00",
                       tool_version="0.1.0",
                       input={"path": "/data", "files": 3, "rows": 63, "fingerprint": "x"})


def test_round_trip_is_exact(tmp_path):
    stats = _stats()
    stats.save(tmp_path / "s.json")
    loaded = FittedStats.load(tmp_path / "s.json")
    assert loaded == stats
    assert loaded.to_json() == stats.to_json()
    assert loaded.features["c"].constant and loaded.features["c"].std == 0.0
    assert loaded.features["n"].moments.shift == stats.features["n"].moments.shift  # big int


def _broken(tmp_path, mutate) -> str:
    data = json.loads(_stats().to_json())
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(format_version=99), "format_version"),
    (lambda d: d.pop("ddof"), "ddof"),
    (lambda d: d.update(inf="maybe"), "inf"),
    (lambda d: d["features"]["a"].pop("std"), "features.a.std"),
    (lambda d: d["features"]["a"].update(mean="zero"), "features.a.mean"),
    (lambda d: d["features"]["a"].update(std=0.0), "features.a.std"),
    (lambda d: d["features"]["a"].update(count=True), "features.a.count"),
    (lambda d: d["features"]["a"]["moments"].pop("m2"), "features.a.moments.m2"),
    (lambda d: d.update(features={}), "features"),
])
def test_malformed_field_is_named(tmp_path, mutate, field):
    path = _broken(tmp_path, mutate)
    with pytest.raises(ArtifactError) as info:
        FittedStats.load(path)
    assert f"field '{field}'" in str(info.value)
    assert path in str(info.value)
    assert info.value.exit_code == 2


def test_non_finite_numbers_are_refused(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(_stats().to_json().replace('"mean": 0.1', '"mean": NaN', 1))
    with pytest.raises(ArtifactError, match="non-finite number NaN"):
        FittedStats.load(path)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        FittedStats.load(tmp_path / "x.json")
    with pytest.raises(ArtifactError, match="does not exist"):
        FittedStats.load(tmp_path / "missing.json")


def test_loading_never_unpickles(tmp_path):
    import pickle

    (tmp_path / "p.json").write_bytes(pickle.dumps({"format_version": 1}))
    with pytest.raises(ArtifactError):
        FittedStats.load(tmp_path / "p.json")


def test_hand_written_artifact_without_moments_loads(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"format_version": 1, "ddof": 0, "inf": "error", "features": {
        "x": {"dtype": "float64", "count": 3, "missing": 0, "mean": 1.0, "std": 2.0,
              "min": 0, "max": 4, "constant": False}}}))
    stats = FittedStats.load(path)
    assert stats.features["x"].moments is None and stats.features["x"].std == 2.0


def test_errors_survive_pickling():
    import pickle

    err = ArtifactError("bad", path="p", column="c")
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.message, back.path, back.column, back.exit_code) == \
        (ArtifactError, "bad", "p", "c", 2)


# ----------------------------------------- hostile edits, through the command line
def _fitted_files(tmp_path):
    """A small dataset and its statistics with per-key entries, written by zscore itself."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.cli import main

    rng = np.random.default_rng(2)
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"k": rng.choice(["a", "b"], 200),
                             "x": 1e9 + 1e-3 * rng.standard_normal(200),
                             "n": pa.array(rng.integers(-100, 100, 200), pa.int8())}),
                   src / "p.parquet")
    stats = tmp_path / "stats.json"
    assert main(["fit", str(src), "--stats", str(stats), "--group-by", "k", "-q"]) == 0
    return src, stats


def _set(*path, value):
    def edit(d):
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value(d[path[-1]]) if callable(value) else value
    return edit


X, KX = ("features", "x"), ("groups", "features", "x")


def _first(value):
    """Set entry 0 of a per-key list (format 3 stores each moment as one list over keys)."""
    return lambda values: [value(values[0]) if callable(value) else value, *values[1:]]

HOSTILE_EDITS = {
    "std 1e-320": (_set(*X, "std", value=1e-320), "features.x.std"),
    "shift 1e308": (_set(*X, "moments", "shift", value=1e308), "features.x.moments.shift"),
    "mean true": (_set(*X, "mean", value=True), "features.x.mean"),
    "min > max": (_set(*X, "min", value=2e9), "features.x.min"),
    "count 10**400": (_set(*X, "count", value=10**400), "features.x.count"),
    "count 2**63 + 1": (_set(*X, "count", value=2**63 + 1), "features.x.count"),
    "edited mean, moments present": (_set(*X, "mean", value=lambda m: m + 1e-3),
                                     "features.x.mean"),
    "edited std, moments present": (_set(*X, "std", value=lambda s: s * 2), "features.x.std"),
    "negative per-key m2": (_set(*KX, "m2", value=_first(-1.0)), "groups.features.x.m2[0]"),
    "per-key min above max": (_set(*KX, "min", value=_first(2e9)), "groups.features.x.min[0]"),
    "per-key m2 1e-320": (_set(*KX, "m2", value=_first(1e-320)), "groups.features.x.m2[0]"),
    "per-key m2 past the range": (_set(*KX, "m2", value=_first(1e6)), "groups.features.x.m2[0]"),
    "per-key shift 1e308": (_set(*KX, "shift", value=_first(1e308)),
                            "groups.features.x.shift[0]"),
    "per-key offset 1e300": (_set(*KX, "offset", value=_first(1e300)),
                             "groups.features.x.offset[0]"),
    "constant but min < max": (_set(*X, "constant", value=True), "features.x.constant"),
    "unknown dtype": (_set(*X, "dtype", value="float128"), "features.x.dtype"),
    "per-key shift not a number": (_set(*KX, "shift", value=_first("a")),
                                   "groups.features.x.shift[0]"),
    "per-key list too short": (_set(*KX, "offset", value=lambda v: v[1:]),
                               "groups.features.x.offset"),
    "negative missing": (_set(*X, "missing", value=-1), "features.x.missing"),
    "one value but min < max": (_set(*X, "count", value=1), "features.x.count"),
    "more values than rows": (_set(*X, "missing", value=500), "features.x.count"),
    "key has more rows than the feature": (_set(*KX, "missing", value=_first(199)),
                                           "groups.features.x.count[0]"),
    "mean outside [min, max]": (_set(*X, "mean", value=3e9), "features.x.mean"),
    "std larger than the range": (lambda d: d["features"]["x"].update(
        std=1.0, moments=None) or d["features"]["x"].pop("moments"), "features.x.std"),
    "moments.inf > missing": (_set(*X, "moments", "inf", value=3), "features.x.moments.inf"),
    "negative m2": (_set(*X, "moments", "m2", value=-1.0), "features.x.moments.m2"),
    "offset 1e300": (_set(*X, "moments", "offset", value=1e300), "features.x.moments.offset"),
    "unknown field": (_set(*X, "mena", value=1.0), "features.x.mena"),
    "integer min not an integer": (_set("features", "n", "min", value=-100.5),
                                   "features.n.min"),
    "int8 max past 127": (_set("features", "n", "max", value=300), "features.n.max"),
    "integer shift not an integer": (_set("features", "n", "moments", "shift", value=0.5),
                                     "features.n.moments.shift"),
    "groups in format 1": (_set("format_version", value=1), "groups"),
    "a key twice": (_set("groups", "keys", "k", value=lambda v: [v[0], v[0], *v[2:]]),
                    "groups.keys[1]"),
    "rows not an integer": (_set("input", "rows", value="many"), "input.rows"),
    "nested input": (_set("input", "path", value={"a": {"b": 1}}), "input.path"),
    "constant's mean differs from its value": (
        lambda d: d["features"]["x"].update(min=5.0, max=5.0, constant=True, std=0.0,
                                            mean=5.5) or d["features"]["x"].pop("moments"),
        "features.x.mean"),
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return _fitted_files(tmp_path_factory.mktemp("fitted"))


@pytest.mark.parametrize("case", list(HOSTILE_EDITS))
def test_every_hostile_edit_is_exit_2_naming_the_field(fitted, tmp_path, capsys, case):
    from pipeline.cli import main

    src, good = fitted
    mutate, field = HOSTILE_EDITS[case]
    data = json.loads(good.read_text())
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    for argv in (["inspect", str(bad)],
                 ["transform", str(src), str(tmp_path / "out"), "--stats", str(bad), "-q"]):
        assert main(argv) == 2, (case, argv[0])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"field '{field}' " in err, (case, argv[0], err)
        assert err.startswith(f"zscore: error: statistics file {bad}: ")
        if case.startswith("edited"):  # refused for disagreeing, not for a range
            assert "mean/std and moments must agree" in err
    assert not (tmp_path / "out").exists()


def _write_raw(tmp_path, text: str):
    path = tmp_path / "raw.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, "is nested too deeply"),
    ('{"format_version": 1, "format_version": 2}', "'format_version' appears twice"),
    ('{"format_version": 1, "ddof": 0, "inf": "error", "features": {"x": {"mean": 1e400}}}',
     "field 'features.x.dtype' is missing"),
])
def test_malformed_json_is_one_line_exit_2(tmp_path, text, words):
    import subprocess
    import sys
    from pathlib import Path

    path = _write_raw(tmp_path, text)
    zscore = Path(sys.executable).parent / "zscore"  # a real process: a traceback would show
    r = subprocess.run([str(zscore), "inspect", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_file_past_the_size_limit_is_refused_unread(tmp_path):
    from pipeline.artifact_fields import MAX_BYTES

    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ArtifactError, match=r"is larger than 256 MiB, the limit"):
        FittedStats.load(path)


def test_removing_moments_is_the_remedy_for_an_edited_mean(fitted, tmp_path):
    """Without moments the mean as written is used, and shown, by the transform."""
    import pyarrow.parquet as pq

    from pipeline.cli import main

    src, good = fitted
    data = json.loads(good.read_text())
    data.pop("groups")
    data["format_version"] = 1
    f = data["features"]["x"]
    f["mean"] += 1e-3  # one sigma
    f.pop("moments")
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert main(["transform", str(src), str(out), "--stats", str(edited), "-q",
                 "--features", "x"]) == 0
    shown = json.loads((out / "_stats.json").read_text())["features"]["x"]
    assert shown["mean"] == f["mean"]
    x = pq.read_table(src / "p.parquet").column("x").to_numpy()
    z = pq.read_table(out / "p.parquet").column("x").to_numpy()
    np.testing.assert_allclose(z, (x - f["mean"]) / f["std"], rtol=1e-9)


def test_artifacts_zscore_writes_pass_their_own_checks(fitted, tmp_path):
    """Every artifact the fit and merge write loads again (rounding stays within tolerance)."""
    from pipeline.compose import merge

    _, good = fitted
    stats = FittedStats.load(good)
    twin = FittedStats.from_dict({**json.loads(good.read_text()),
                                  "input": {"fingerprint": "other", "rows": 200}})
    merged = merge([stats, twin])
    merged.save(tmp_path / "m.json")
    assert FittedStats.load(tmp_path / "m.json").features["x"].count == 400
