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
