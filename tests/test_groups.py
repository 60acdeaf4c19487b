"""Per-key normalization: exact per key (where Dask's grouped variance is not), applied per row."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reference import exact_reference

import pipeline
from pipeline.artifact import FittedStats
from pipeline.cli import main
from pipeline.errors import DataError

pytestmark = pytest.mark.fast  # in make test-fast, except tests marked slow

LEVELS = {"A": (1e9, 1e-3), "B": (5.0, 2.0), "C": (-3.0, 0.5)}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tool = rng.choice(list(LEVELS), n)
    x = np.array([LEVELS[t][0] for t in tool]) + np.array([LEVELS[t][1] for t in tool]) * \
        rng.standard_normal(n)
    return pd.DataFrame({"tool": tool, "chamber": rng.integers(1, 3, n), "x": x,
                         "flat": np.where(tool == "C", 7.25, rng.normal(size=n)),
                         "y": rng.normal(size=n)})


@pytest.fixture(scope="module")
def tools(datasets):
    frames = [_frame(n, seed) for seed, n in enumerate([4000, 1, 2500, 3100])]
    path = datasets.write("tools", {f"p{i}.parquet": f for i, f in enumerate(frames)},
                          row_group_size=900)
    return path, pd.concat(frames, ignore_index=True)


def test_per_key_statistics_are_exact(cluster, tools):
    path, df = tools
    stats = pipeline.fit(str(path), group_by="tool", client=cluster)
    assert stats.names == ["chamber", "x", "flat", "y"]  # the key is not a feature
    assert stats.groups is not None and stats.groups.by == ("tool",)
    assert list(stats.groups.keys) == [("A",), ("B",), ("C",)]
    for (tool,), feats in stats.groups.keys.items():
        for name in ("x", "y"):
            mean, std = exact_reference(df.loc[df.tool == tool, name].tolist())
            f = feats[name]
            assert abs(f.std - std) <= 1e-12 * std, (tool, name)
            assert abs(f.mean - mean) <= 1e-12 * std + np.spacing(abs(mean)), (tool, name)
    assert stats.groups.keys[("C",)]["flat"].constant
    # the global statistics are those of an ungrouped fit, bit for bit
    plain = pipeline.fit(str(path), client=cluster)
    assert json.loads(stats.to_json())["features"] == \
        {k: v for k, v in json.loads(plain.to_json())["features"].items() if k != "tool"}


def test_dask_grouped_std_is_wrong_where_zscore_is_right(cluster, tools):
    import dask.dataframe as dd

    path, df = tools
    dask_std = dd.from_pandas(df, npartitions=4).groupby("tool")["x"].std(ddof=0).compute()
    _, exact = exact_reference(df.loc[df.tool == "A", "x"].tolist())
    ours = pipeline.fit(str(path), group_by="tool", client=cluster).groups.keys[("A",)]["x"].std
    assert abs(dask_std["A"] - exact) > 1e-2 * exact  # sum(x**2) - sum(x)**2/n at 1e9
    assert abs(ours - exact) <= 1e-12 * exact


def test_transform_uses_each_rows_key(tools, tmp_path, capsys):
    path, df = tools
    assert main(["run", str(path), str(tmp_path / "o"), "--group-by", "tool,chamber"]) == 0
    stats = FittedStats.load(tmp_path / "o" / "_stats.json")
    assert stats.format_version == 3 and stats.groups.by == ("tool", "chamber")
    assert len(stats.groups.keys) == 6
    out = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "o").glob("*.parquet")))
    for (tool, _chamber), g in out.groupby(["tool", "chamber"]):
        assert abs(g["x"].mean()) < 1e-9 and abs(g["x"].std(ddof=0) - 1) < 1e-9
        if tool == "C":
            assert (g["flat"] == 0.0).all()  # a constant group is exactly 0
    summary = json.loads((tmp_path / "o" / "_report" / "summary.json").read_text())
    x = summary["features"]["x"]
    assert x["moments"]["count"] + x["moments"]["missing"] == len(df)
    assert sum(x["keys"]["count"]) + sum(x["keys"]["missing"]) == len(df)


def test_unseen_keys(cluster, tools, tmp_path, capsys):
    path, _ = tools
    stats = pipeline.fit(str(path), group_by="tool", features="x", client=cluster)
    new = pd.DataFrame({"tool": ["B", "Z", None], "x": [5.0, 5.0, 5.0]})
    out = pipeline.apply(new, stats)["x"].to_numpy()
    _, df = tools
    for got, rows in ((out[0], df.tool == "B"), (out[1], slice(None)), (out[2], slice(None))):
        xs = [Fraction(v) for v in df.loc[rows, "x"].tolist()]
        mean = sum(xs, Fraction(0)) / len(xs)
        std = math.sqrt(sum(((v - mean) ** 2 for v in xs), Fraction(0)) / len(xs))
        want = (Fraction(5) - mean) / Fraction(std)  # B's numbers; the global ones for Z, None
        assert abs(Fraction(got) - want) <= Fraction(1, 10**12) * max(1, abs(want))
    out = pipeline.apply(new, stats, unseen="null")["x"]
    assert out.isna().tolist() == [False, True, True]
    with pytest.raises(DataError, match="key 'Z' of group_by='tool' was not seen at fit time; "
                                        "refit, or pass unseen='global' or unseen='null'"):
        pipeline.apply(new, stats, unseen="error")
    stats.save(tmp_path / "s.json")
    src = tmp_path / "new"
    src.mkdir()
    pq.write_table(pa.Table.from_pandas(new), src / "n.parquet")
    assert main(["transform", str(src), str(tmp_path / "o"), "--stats", str(tmp_path / "s.json"),
                 "--unseen", "error"]) == 2
    assert "key 'Z' of --group-by tool was not seen at fit time (in n.parquet)" in \
        capsys.readouterr().err


def test_inverse_round_trips_per_key(cluster, tools):
    path, df = tools
    stats = pipeline.fit(str(path), group_by="tool", features="x,y", client=cluster)
    z = pipeline.apply(df, stats)
    back = pipeline.apply(z, stats, inverse=True)
    np.testing.assert_allclose(back["x"], df["x"], rtol=1e-15)


def test_group_by_errors(tools, tmp_path, capsys):
    path, _ = tools
    assert main(["fit", str(path), "--stats", str(tmp_path / "s.json"), "--group-by", "nope"]) == 2
    assert ("--group-by column 'nope' is neither a column of the files nor a hive partition "
            "key") in capsys.readouterr().err
    assert main(["fit", str(path), "--stats", str(tmp_path / "s.json"), "--group-by", "chamber",
                 "--features", "x,chamber"]) == 2
    assert "--group-by column 'chamber' is also a selected feature" in capsys.readouterr().err


def test_grouped_artifacts_merge_key_by_key(cluster, datasets):
    frames = {f"half={h}/p.parquet": _frame(3000, 40 + h) for h in (1, 2)}
    path = datasets.write("tools-halves", frames)
    halves = [pipeline.fit(str(path), group_by="tool", filters=[f"half == {h}"], client=cluster)
              for h in (1, 2)]
    merged = pipeline.merge(halves)
    together = pipeline.fit(str(path), group_by="tool", client=cluster)
    for key, feats in together.groups.keys.items():
        for name, f in feats.items():
            m = merged.groups.keys[key][name]
            assert m.count == f.count and m.mean == pytest.approx(f.mean, rel=1e-15)
            assert m.std == pytest.approx(f.std, rel=1e-12)


@pytest.mark.parametrize("unseen", ["global", "null"])
def test_rows_with_unseen_keys_are_counted_per_key_column(tools, tmp_path, capsys, unseen):
    path, df = tools
    assert main(["fit", str(path), "--stats", str(tmp_path / "s.json"), "--group-by",
                 "tool,chamber", "--features", "x", "-q"]) == 0
    rng = np.random.default_rng(9)
    new = pd.DataFrame({"tool": rng.choice(["A", "B", "Z", "Y"], 3000),
                        "chamber": rng.choice([1, 2, 3], 3000), "x": rng.normal(size=3000)})
    src = tmp_path / "new"
    src.mkdir()
    for i, part in enumerate((new.iloc[:1000], new.iloc[1000:2000], new.iloc[2000:])):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), src / f"n{i}.parquet")
    capsys.readouterr()
    assert main(["transform", str(src), str(tmp_path / "o"), "--stats", str(tmp_path / "s.json"),
                 "--unseen", unseen, "-q"]) == 0
    err = capsys.readouterr().err
    # The reference: pandas, against the keys of the fitted data.
    fitted = set(zip(df.tool, df.chamber, strict=True))
    unseen_rows = ~pd.Series([k in fitted for k in zip(new.tool, new.chamber, strict=True)])
    expected = {"rows": int(unseen_rows.sum()),
                "by_column": {"tool": int((~new.tool.isin(set(df.tool))).sum()),
                              "chamber": int((~new.chamber.isin(set(df.chamber))).sum())}}
    assert expected["rows"] > expected["by_column"]["tool"] > 0
    manifest = json.loads((tmp_path / "o" / "_SUCCESS").read_text())
    assert manifest["unseen_keys"] == expected
    by = expected["by_column"]
    assert (f"warning: {expected['rows']:,} row(s) have a key of tool, chamber not seen at fit "
            f"time (values never seen, per column: tool {by['tool']:,}, chamber "
            f"{by['chamber']:,})") in err
    out = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "o").glob("*.parquet")))
    if unseen == "null":
        assert int(out["x"].isna().sum()) == expected["rows"]
