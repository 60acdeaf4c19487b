"""merge (exact, as if fitted together) and diff (drift with exit code 3)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reference import exact_reference

import pipeline
from pipeline.artifact import FittedStats
from pipeline.cli import main
from pipeline.compose import diff, merge
from pipeline.errors import ArtifactError

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow


@pytest.fixture(scope="module")
def months(datasets):
    rng = np.random.default_rng(5)
    files = {}
    for month in ("01", "02", "03"):
        for part in range(2):
            n = 500 + 37 * part
            files[f"month={month}/p{part}.parquet"] = pa.table({
                "big": 1e9 + 1e-3 * rng.standard_normal(n) + 1e-4 * int(month),
                "i": rng.integers(0, 100, n), "f": rng.normal(int(month), 1, n).astype("float32")})
    return datasets.write("months", files)


def test_merge_equals_fitting_together(cluster, months, tmp_path):
    parts = [pipeline.fit(str(months), filters=[f"month == {m}"], client=cluster)
             for m in ("01", "02", "03")]
    merged = merge(parts)
    together = pipeline.fit(str(months), client=cluster)
    values = pa.concat_tables(
        pa.parquet.read_table(p) for p in sorted(months.rglob("*.parquet"))).to_pydict()
    for name, f in merged.features.items():
        t = together.features[name]
        assert (f.count, f.missing, f.min, f.max, f.dtype) == (t.count, t.missing, t.min, t.max,
                                                               t.dtype)
        mean, std = exact_reference(values[name])
        assert abs(f.std - std) <= 1e-12 * std and abs(f.mean - mean) <= 1e-12 * std + \
            np.spacing(abs(mean))
        assert f.mean == pytest.approx(t.mean, rel=1e-15) and f.std == pytest.approx(t.std,
                                                                                    rel=1e-13)
    assert merged.input["rows"] == together.input["rows"]


def test_merge_refuses_what_does_not_add_up(cluster, months):
    a = pipeline.fit(str(months), filters=["month == 01"], client=cluster)
    b = pipeline.fit(str(months), filters=["month == 02"], ddof=1, client=cluster)
    with pytest.raises(ArtifactError, match="b.json has ddof 1 but a.json has 0"):
        merge([a, b], names=["a.json", "b.json"])
    c = pipeline.fit(str(months), filters=["month == 02"], features="i", client=cluster)
    with pytest.raises(ArtifactError, match="has features i but a.json has big, i, f"):
        merge([a, c], names=["a.json", "c.json"])
    with pytest.raises(ArtifactError, match="were fitted on the same input"):
        merge([a, a], names=["a.json", "again.json"])


def test_merge_and_diff_through_the_cli(months, tmp_path, capsys):
    for m in ("01", "02", "03"):
        assert main(["fit", str(months), "--stats", str(tmp_path / f"{m}.json"), "--filter",
                     f"month == {m}", "-q"]) == 0
    assert main(["merge", str(tmp_path / "01.json"), str(tmp_path / "02.json"), "-o",
                 str(tmp_path / "q.json")]) == 0
    assert FittedStats.load(tmp_path / "q.json").input["files"] == 4
    capsys.readouterr()
    # f's mean moves by one sigma from month to month; big and i do not move much
    code = main(["diff", str(tmp_path / "01.json"), str(tmp_path / "02.json"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 3 and report["flagged"] == 1
    f = next(d for d in report["features"] if d["feature"] == "f")
    assert f["flagged"] and 0.8 < f["shift"] < 1.2
    assert main(["diff", str(tmp_path / "01.json"), str(tmp_path / "02.json"), "--max-shift",
                 "1.5"]) == 0
    out = capsys.readouterr().out
    assert "0 of 3 features drifted" in out


def test_diff_flags_constant_and_missing_features():
    from pipeline.artifact import FeatureStats
    from pipeline.stats import Moments

    def stats(**cols):
        return FittedStats(features={k: FeatureStats.from_moments(Moments.from_array(
            np.asarray(v, dtype=float)), "float64", 0) for k, v in cols.items()})

    old = stats(c=[1, 1, 1], x=[0, 1, 2])
    new = stats(c=[2, 2, 2], y=[0, 1, 2])
    got = {d.feature: d for d in diff(old, new)}
    assert got["c"].flagged and got["c"].shift == float("inf") and got["c"].ratio == 1.0
    assert got["x"].note == "only in the old statistics" and got["y"].flagged


def test_diff_of_epoch_nanoseconds_measures_the_exact_shift(tmp_path, capsys):
    # At 1.7e18 a float64 mean is a multiple of 256 ns, comparable to sigma (~290 ns):
    # the shift must come from the exact means, not from the rounded ones.
    from fractions import Fraction

    rng = np.random.default_rng(1)
    old = 1_700_000_000_000_000_000 + rng.integers(0, 1000, 5000)
    new = old + 150
    for name, values in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"t": values.astype("int64")}), tmp_path / name / "p.parquet")
        assert main(["fit", str(tmp_path / name), "--stats", str(tmp_path / f"{name}.json")]) == 0
    n = len(old)
    mean = Fraction(sum(int(v) for v in old), n)
    var = sum((Fraction(int(v)) - mean) ** 2 for v in old) / n
    exact_shift = Fraction(150) / Fraction(float(var) ** 0.5)
    drift = diff(FittedStats.load(tmp_path / "old.json"), FittedStats.load(tmp_path / "new.json"))
    assert abs(drift[0].shift - float(exact_shift)) < 1e-12 * float(exact_shift)
    assert drift[0].flagged and drift[0].ratio == 1.0


def test_merge_keeps_the_narrowest_type_that_holds_every_stored_type(tmp_path):
    # float16 in one fit and float32 in another merge to float32, as files of one dataset do;
    # an integer next to a float gives float64.
    rng = np.random.default_rng(2)
    stored = {"a": {"h": "float16", "i": "int32"}, "b": {"h": "float32", "i": "float32"}}
    for name, types in stored.items():
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({c: rng.normal(5, 1, 100).astype(t) for c, t in types.items()}),
                       tmp_path / name / "p.parquet")
        assert main(["fit", str(tmp_path / name), "--stats", str(tmp_path / f"{name}.json")]) == 0
    merged = merge([FittedStats.load(tmp_path / "a.json"), FittedStats.load(tmp_path / "b.json")])
    assert {k: f.dtype for k, f in merged.features.items()} == {"h": "float32", "i": "float64"}
