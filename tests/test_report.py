"""The HTML report: every image there and readable, numbers faithful, reruns byte-identical."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pipeline import plots, report
from pipeline.artifact import FeatureStats, FittedStats
from pipeline.errors import ArtifactError, InputError
from pipeline.histogram import K_SIGMA, FeatureHistograms, Histogram
from pipeline.plan import Plan, scale_array
from pipeline.stats import Moments

pytestmark = pytest.mark.skipif(not report.available(), reason="matplotlib is not installed")

ROWS = 20_000
HOSTILE = "<b>x&y</b>"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    normal = rng.normal(1e6, 3.0, ROWS)
    normal[rng.random(ROWS) < 0.05] = np.nan
    return {
        "normal": normal,
        "skewed": rng.lognormal(0.0, 1.0, ROWS),
        "counts": rng.poisson(4.0, ROWS).astype(np.int64),
        "flat": np.full(ROWS, 0.1),
        "a/b": rng.normal(0.0, 1.0, ROWS),
        "a_b": rng.uniform(-1.0, 1.0, ROWS),
        HOSTILE: rng.normal(-5.0, 2.0, ROWS),
        "cost$^{$": rng.normal(0.0, 1.0, ROWS),  # broken TeX, if '$' were read as math
    }


def _after_range(fs: FeatureStats, mode: str) -> tuple[float, float]:
    """The image of mean ± K·σ under the transform, as the writer bins it."""
    lo, hi = fs.mean - K_SIGMA * fs.std, fs.mean + K_SIGMA * fs.std
    if fs.constant:
        return (lo, hi) if mode == "scale" else (0.0, 0.0)
    if mode == "standard":
        return -K_SIGMA, K_SIGMA
    if mode == "scale":
        return lo / fs.std, hi / fs.std
    return lo - fs.mean, hi - fs.mean


def _fit(columns: dict[str, np.ndarray], mode: str = "standard"
         ) -> tuple[FittedStats, dict[str, FeatureHistograms]]:
    features, histograms = {}, {}
    for name, values in columns.items():
        x = values.astype(np.float64)
        nan = np.isnan(x)
        finite = values[~nan] if values.dtype.kind == "f" else values
        fs = FeatureStats.from_moments(Moments.from_array(finite, missing=int(nan.sum())),
                                       str(values.dtype), 0)
        features[name] = fs
        before = Histogram.empty(fs.min, fs.max).add(x)
        after = Histogram.empty(*_after_range(fs, mode)).add(
            x, raw_lo=fs.mean - K_SIGMA * fs.std, raw_hi=fs.mean + K_SIGMA * fs.std)
        histograms[name] = FeatureHistograms(before, after)
    stats = FittedStats(features=features, created="2026-01-01T00:00:00+00:00",
                        tool_version="0.1.0", input={"path": "/data/in", "rows": ROWS})
    return stats, histograms


MANIFEST = {"run_id": "run-<1>", "tool_version": "0.1.0", "mode": "standard", "rows": ROWS,
            "input": {"path": "/data/in&out", "files": 3, "rows": ROWS},
            "files": [{"path": f"day={d}/part-0.parquet", "rows": 1} for d in range(3)]}


@pytest.fixture(scope="module")
def fitted() -> tuple[FittedStats, dict[str, FeatureHistograms]]:
    return _fit(_columns())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, fitted) -> tuple[Path, list[str]]:
    stats, histograms = fitted
    out = tmp_path_factory.mktemp("report")
    return out, report.render(out, stats, histograms, manifest=MANIFEST)


class _Page(HTMLParser):
    """Image sources and the cells of the statistics table."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self._in_stats = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"] or "")
        elif tag == "table" and a.get("class") == "stats":
            self._in_stats = True
        elif self._in_stats and tag == "tr":
            self.rows.append([])
        elif self._in_stats and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_stats = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _page(directory: Path) -> _Page:
    page = _Page()
    page.feed((directory / "index.html").read_text("utf-8"))
    return page


def test_every_feature_has_a_readable_png(rendered, fitted):
    import matplotlib.image

    out, names = rendered
    stats, _ = fitted
    assert names[0] == "histograms.json" and names[-1] == "index.html"
    assert sorted(names) == sorted(p.name for p in out.iterdir())
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == len(stats.features) + 1  # one per feature, plus variances.png
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        # No tool version in the metadata: an upgrade alone must not change the bytes.
        assert b"Software" not in data and b"atplotlib" not in data, name
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[1] == 640, name
        assert image.std() > 0.01, f"{name} is blank"
    assert matplotlib.image.imread(out / "feature-normal.png").shape[:2] == (320, 640)


def test_page_shows_every_image_and_each_count(rendered, fitted):
    out, names = rendered
    stats, _ = fitted
    page = _page(out)
    assert all((out / src).is_file() for src in page.images), page.images
    assert set(page.images) == {n for n in names if n.endswith(".png")}
    table = {row[0]: row for row in page.rows if row}
    assert set(table) == set(stats.features)
    for name, fs in stats.features.items():
        assert table[name][2] == f"{fs.count:,}"
        assert table[name][3] == f"{fs.missing:,}"
    assert table["flat"][-1] == "constant" and table["normal"][-1] == ""
    assert table["normal"][3] == f"{int(np.isnan(_columns()['normal']).sum()):,}"


def test_page_shows_the_manifest_escaped(rendered):
    text = (rendered[0] / "index.html").read_text("utf-8")
    assert "run-&lt;1&gt;" in text and "/data/in&amp;out" in text
    assert "day=2/part-0.parquet" in text
    assert "<script" not in text and "<link" not in text and "http" not in text


def test_hostile_feature_name_is_escaped(rendered):
    out, names = rendered
    text = (out / "index.html").read_text("utf-8")
    assert HOSTILE not in text
    assert "&lt;b&gt;x&amp;y&lt;/b&gt;" in text
    assert "feature-_b_x_y__b_.png" in names


def test_histograms_json_round_trips(rendered, fitted):
    out, _ = rendered
    _, histograms = fitted
    assert report.read_histograms(out) == histograms
    raw = json.loads((out / "histograms.json").read_text())
    assert raw == {name: h.to_dict() for name, h in histograms.items()}


def test_histograms_account_for_every_row(fitted):
    _, histograms = fitted
    for name, fh in histograms.items():
        for h in (fh.before, fh.after):
            assert sum(h.counts) + h.below + h.above + h.missing == ROWS, name
        assert fh.before.below == fh.before.above == 0  # "before" spans [min, max]


def test_after_histogram_is_centred_in_standard_mode(fitted):
    stats, histograms = fitted
    for name in ("normal", "a/b", HOSTILE):
        after = histograms[name].after
        assert (after.lo, after.hi) == (-K_SIGMA, K_SIGMA)
        assert abs(after.mean()) < 0.05, name
        assert abs(histograms[name].before.mean() - stats.features[name].mean) < 0.05 * (
            stats.features[name].std)


def test_rendering_twice_is_byte_identical(tmp_path, rendered, fitted):
    stats, histograms = fitted
    out, names = rendered
    again = report.render(tmp_path, stats, histograms, manifest=MANIFEST)
    assert again == names
    for name in names:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.parametrize("mode", ["standard", "scale", "center"])
def test_after_moments_agree_with_the_transform(mode):
    stats, _ = _fit(_columns(), mode)
    plan = Plan.build(stats, mode=mode)
    for column, values in zip(plan.columns, _columns().values(), strict=True):
        fs = stats.features[column.name]
        y = scale_array(values.astype(np.float64), column, mode)
        mean, std = plots.after_moments(fs, mode)
        y = y[~np.isnan(y)]
        assert mean == pytest.approx(float(y.mean()), abs=1e-9 * max(1.0, abs(mean)))
        assert std == pytest.approx(float(y.std()), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("mode", ["scale", "center"])
def test_other_modes_render(tmp_path, mode):
    columns = {k: v for k, v in _columns().items() if k in ("normal", "flat")}
    stats, histograms = _fit(columns, mode)
    names = report.render(tmp_path, stats, histograms, mode=mode)
    assert {"feature-normal.png", "feature-flat.png", "variances.png"} <= set(names)
    assert f"mode <b>{mode}</b>" in (tmp_path / "index.html").read_text("utf-8")


def test_feature_without_histogram_is_listed_but_not_drawn(tmp_path, fitted):
    stats, histograms = fitted
    some = {"normal": histograms["normal"]}
    names = report.render(tmp_path, stats, some)
    assert [n for n in names if n.startswith("feature-")] == ["feature-normal.png"]
    page = _page(tmp_path)
    assert {row[0] for row in page.rows if row} == set(stats.features)
    assert report.read_histograms(tmp_path) == some


def test_bad_arguments_are_refused(tmp_path, fitted):
    stats, histograms = fitted
    with pytest.raises(InputError, match="unknown mode 'zscore'"):
        report.render(tmp_path, stats, histograms, mode="zscore")
    with pytest.raises(ArtifactError, match="column 'ghost'"):
        report.render(tmp_path, stats, {**histograms, "ghost": histograms["normal"]})
    with pytest.raises(ArtifactError, match="histograms.json does not exist"):
        report.read_histograms(tmp_path / "nowhere")


def test_file_stems_are_safe_distinct_and_order_independent():
    names = ["plain", "a/b", "a_b", "a:b", "A_B", "", "é", "x" * 300, "dots.and-dashes_ok"]
    stems = report.file_stems(names)
    assert stems == report.file_stems(reversed(names))
    assert len({s.casefold() for s in stems.values()}) == len(names)
    assert all(s and set(s) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789_.-") for s in stems.values())
    assert stems["plain"] == "plain" and stems["dots.and-dashes_ok"] == "dots.and-dashes_ok"
    assert stems["é"].startswith("_-") and stems[""].startswith("_-")  # both sanitize to "_"
    assert len(stems["x" * 300]) < 100
    # Adding an unrelated feature renames nothing.
    assert report.file_stems([*names, "new"])["a/b"] == stems["a/b"]


def test_smoothing_keeps_the_mass_and_the_edges():
    rng = np.random.default_rng(7)
    x = rng.uniform(0.0, 1.0, 50_000)
    h = Histogram.empty(0.0, 1.0).add(x)
    grid, y = plots.smooth(h, float(x.std()), x.size, reflect=True)
    width = (h.hi - h.lo) / len(h.counts)
    mass = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(grid))) / width
    assert mass == pytest.approx(x.size, rel=0.01)
    per_bin = x.size / len(h.counts)
    assert y[0] == pytest.approx(per_bin, rel=0.1) and y[-1] == pytest.approx(per_bin, rel=0.1)


# ------------------------------------------------------------ through a run
def test_run_writes_a_report_whose_numbers_add_up(datasets, tmp_path):
    import json

    from pipeline.cli import main

    src = datasets.sample()
    out = tmp_path / "out"
    assert main(["run", str(src), str(out), "--exclude", "id,label", "-q"]) == 0
    manifest = json.loads((out / "_SUCCESS").read_text())
    stats = json.loads((out / "_stats.json").read_text())["features"]
    hist = json.loads((out / "_report" / "histograms.json").read_text())
    assert set(hist) == set(stats) == set(manifest["features"])
    for name, h in hist.items():
        for side in ("before", "after"):
            total = sum(h[side]["counts"]) + h[side]["below"] + h[side]["above"] + \
                h[side]["missing"]
            assert total == manifest["rows"], (name, side)
        assert h["before"]["below"] == h["before"]["above"] == 0  # fitted on these rows
        assert h["before"]["missing"] == stats[name]["missing"]
        after = Histogram.from_dict(h["after"])
        if not stats[name]["constant"] and after.below + after.above < 0.002 * manifest["rows"]:
            assert abs(after.mean()) < 0.05, name  # (a long tail past 4σ would bias it)
    page = (out / "_report" / "index.html").read_text()
    images = sorted(p.name for p in (out / "_report").glob("*.png"))
    assert len(images) == len(stats) + 1 and all(f'src="{i}"' in page for i in images)

    before = {p.name: p.read_bytes() for p in (out / "_report").iterdir()}
    (out / "_report" / "index.html").unlink()
    assert main(["report", str(out)]) == 0
    again = {p.name: p.read_bytes() for p in (out / "_report").iterdir()}
    assert again == before  # drawn again from the saved histograms, identically

    assert main(["run", str(src), str(tmp_path / "bare"), "--no-report", "-q"]) == 0
    assert not (tmp_path / "bare" / "_report").exists()


def test_small_batches_buffered_in_a_tally_count_like_one_big_one():
    from pipeline.histogram import HistogramSpec

    rng = np.random.default_rng(2)
    y = rng.normal(size=100_000)
    y[::9] = np.nan
    spec = HistogramSpec(Histogram.empty(-5, 5, 60), Histogram.empty(-4, 4, 60), -4.0, 4.0)
    small, big = spec.tally(), spec.tally()
    for i in range(0, y.size, 100):
        chunk = y[i:i + 100].copy()
        small.add(chunk)
        chunk[:] = 99.0  # the caller reuses its buffer: the tally kept a copy
    big.add(y)
    assert small.result() == big.result()
    assert big.result().after.counts == tuple(np.histogram(y[~np.isnan(y)], 60, (-4, 4))[0])


# ------------------------------------------------ a report never fails a run
def test_huge_variances_give_a_correct_report_and_exit_0(tmp_path, capsys):
    """0/1e20 (scikit-learn's stability data) and int64 epoch nanoseconds: variance >= 1e19."""
    from fractions import Fraction

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.cli import main

    src = tmp_path / "in"
    src.mkdir()
    ns = 1_700_000_000_000_000_000 + np.arange(1000, dtype=np.int64) * 7_000_000_000
    pq.write_table(pa.table({"big": np.tile([0.0, 1e20], 500), "ns": ns}), src / "a.parquet")
    code = main(["run", str(src), str(tmp_path / "out"), "-q", "--features", "big,ns"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "warning" not in err
    out = tmp_path / "out" / "_report"
    stats = json.loads((tmp_path / "out" / "_stats.json").read_text())["features"]
    exact = {"big": [Fraction(v) for v in np.tile([0.0, 1e20], 500)],
             "ns": [Fraction(int(v)) for v in ns]}
    page = _page(out)
    table = {row[0]: row for row in page.rows if row}
    for name, values in exact.items():
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / len(values)
        assert stats[name]["mean"] == pytest.approx(float(mean), rel=1e-15)
        assert stats[name]["std"] ** 2 == pytest.approx(float(var), rel=1e-12)
        assert float(table[name][5]) == pytest.approx(stats[name]["std"], rel=1e-5)
    assert sorted(page.images) == ["feature-big.png", "feature-ns.png", "variances.png"]
    import matplotlib.image

    for src_name in page.images:
        image = matplotlib.image.imread(out / src_name)
        assert image.shape[1] == 640 and image.std() > 0.01, src_name


def test_pictures_that_cannot_be_drawn_cost_only_the_pictures(datasets, tmp_path):
    """A real matplotlib failure: a matplotlibrc asking for TeX where there is no LaTeX."""
    import shutil

    from procs import run_zscore

    if shutil.which("latex"):
        pytest.skip("LaTeX is installed: usetex would work here")
    rc = tmp_path / "mplrc"
    rc.mkdir()
    (rc / "matplotlibrc").write_text("text.usetex: True\n")
    src = datasets.sample()
    r = run_zscore("run", src, tmp_path / "out", "--exclude", "id,label", "-q",
                   env={"MATPLOTLIBRC": str(rc)})
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [line for line in r.stderr.splitlines()
                                     if "zscore: warning:" in line]
    warned = [line for line in r.stderr.splitlines() if "report" in line]
    assert len(warned) == 1 and warned[0].endswith(
        "zscore: warning: the report leaves out the histograms of 8 feature(s) ('f_normal', "
        "'f_skewed', 'f_float32_offset', 'f_large_offset', 'f_with_nan' and 3 more) and the "
        "variance chart, which could not be drawn (RuntimeError: Failed to process string with "
        "tex because latex could not be found); the output itself is complete")
    out = tmp_path / "out"
    assert (out / "_SUCCESS").exists() and len(list(out.rglob("*.parquet"))) == 6
    page = (out / "_report" / "index.html").read_text()
    assert "<h2>Not drawn</h2>" in page and "<img" not in page
    assert not list((out / "_report").glob("*.png"))


def test_a_report_that_cannot_be_built_costs_only_the_report(fitted):
    from pipeline.jobs import _report_files

    stats, histograms = fitted
    told: list[str] = []
    bad = {**histograms, "ghost": histograms["normal"]}  # a feature the statistics lack
    assert _report_files(stats, bad, MANIFEST, "standard", told.append) == {}
    assert told == ["no report was written (ArtifactError: column 'ghost' has a histogram but "
                    "is not in the statistics; render the report with the statistics the run "
                    "used); the output itself is complete"]
    with pytest.raises(ArtifactError):
        _report_files(stats, bad, MANIFEST, "standard")
