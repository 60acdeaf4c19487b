"""The report tells the truth about the data written, as one offline, well-formed HTML page.

Every number on the page is checked against a reference computed independently
from the written Parquet files (exact rationals for mean and σ, numpy for
quantiles and counts), never against the report's own helpers.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import report
from pipeline.artifact import FittedStats
from pipeline.cli import main
from pipeline.compose import MAX_RATIO, MAX_SHIFT, diff
from pipeline.errors import ArtifactError, InputError
from pipeline.summary import STEP, Reference
from pipeline.tally import Tally

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HOSTILE = "<b>x&y</b>\x07"  # markup, and a control character (XML forbids it raw)
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}


class _Page(HTMLParser):
    """Checks nesting; collects the feature table's cells (text, title) and every attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self.rows: dict[str, list[tuple[str, str]]] = {}
        self._row: list[tuple[str, str]] | None = None
        self._cell: tuple[list[str], str] | None = None
        self._in_stats = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.attributes += [(tag, k, v) for k, v in a.items()]
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table" and a.get("class") == "stats":
            self._in_stats = True
        elif self._in_stats and tag == "tr":
            self._row = []
        elif self._row is not None and tag == "td":
            self._cell = ([], a.get("title", ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += [(tag, k, v or "") for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append(("".join(self._cell[0]).strip(), self._cell[1]))
            self._cell = None
        elif tag == "tr" and self._row:
            self.rows[self._row[0][0]] = self._row[1:]
            self._row = None
        elif tag == "table":
            self._in_stats = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)


def _page(out: Path) -> tuple[str, _Page]:
    text = (out / "_report" / "index.html").read_text("utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    return text, page


def _written(out: Path, name: str) -> np.ndarray:
    """Feature ``name`` of every written file, as stored, nulls as NaN (pyarrow only)."""
    parts = [pq.read_table(p, columns=[name]).column(name).to_numpy(zero_copy_only=False)
             for p in sorted(out.rglob("*.parquet"))]
    return np.concatenate(parts).astype(np.float64)


def _exact(values: np.ndarray, ddof: int = 0) -> tuple[float, float]:
    xs = [Fraction(float(v)) for v in values]
    mean = sum(xs, Fraction(0)) / len(xs)
    return float(mean), math.sqrt(sum(((x - mean) ** 2 for x in xs), Fraction(0)) /
                                  (len(xs) - ddof))


def _write(root: Path, frames: dict[str, dict[str, np.ndarray]]) -> Path:
    for rel, columns in frames.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), root / rel)
    return root


def _split(columns: dict[str, np.ndarray], parts: int) -> dict[str, dict[str, np.ndarray]]:
    n = len(next(iter(columns.values())))
    cuts = np.linspace(0, n, parts + 1).astype(int)
    return {f"part-{i}.parquet": {k: v[a:b] for k, v in columns.items()}
            for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))}


def _data(rows: int, seed: int, shift: float = 0.0, spread: float = 1.0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    b = rng.normal(-3.0, 0.2, rows)
    b[rng.random(rows) < 0.05] = np.nan
    return {"a": rng.normal(100.0 + 5.0 * shift, 5.0 * spread, rows),
            "b": b,  # not shifted
            "n": rng.poisson(20, rows).astype(np.int64),
            "h": rng.normal(1e4, 1.0, rows).astype(np.float32),  # float32 written
            HOSTILE: rng.standard_t(3, rows)}  # heavy tails, beyond ±16σ too


@pytest.fixture(scope="module")
def validation(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The issue's case: fit on 142,523 rows, transform 57,005 shifted and wider ones."""
    root = tmp_path_factory.mktemp("validation")
    train = _write(root / "train", _split(_data(142_523, 1), 3))
    val = _write(root / "val", _split(_data(57_005, 2, shift=0.665, spread=1.42), 2))
    assert main(["run", str(train), str(root / "train_z"), "-q"]) == 0
    assert main(["transform", str(val), str(root / "val_z"), "--stats",
                 str(root / "train_z" / "_stats.json"), "-q"]) == 0
    return root / "train_z", root / "val_z", root / "train_z" / "_stats.json"


@pytest.mark.parametrize("which", ["train_z", "val_z"])
def test_every_number_is_that_of_the_written_data(validation, which):
    out = validation[0] if which == "train_z" else validation[1]
    stats = FittedStats.load(validation[2])
    _, page = _page(out)
    assert set(page.rows) == {n.replace("\x07", "\\x07") for n in stats.features}
    for name, fs in stats.features.items():
        z = _written(out, name)
        finite = z[~np.isnan(z)]
        cells = page.rows[name.replace("\x07", "\\x07")]
        assert cells[0][0] == f"{finite.size:,}", name  # count written, not fitted
        assert cells[1] == (f"{100 * (z.size - finite.size) / z.size:.2f} %",
                            f"{z.size - finite.size:,}")
        mean, std = _exact(finite, stats.ddof)
        assert abs(float(cells[2][1]) - mean) <= 1e-12 * std, name
        assert abs(float(cells[3][1]) - std) <= 1e-12 * std, name
        assert cells[2][0] == f"{mean:.4f}" and cells[3][0] == f"{std:.4f}"
        for (text, exact), q in zip(cells[4:11], QUANTILES, strict=True):
            want = float(np.quantile(finite, q))
            # Bins are STEP wide to ±16σ, then 2.2 % of |z|.
            assert abs(float(exact) - want) <= max(STEP, 0.022 * abs(want)) + 1e-12, (name, q)
            assert abs(float(text.replace("−", "-")) - float(exact)) <= 0.005
        beyond = int(np.count_nonzero(np.abs(finite) > 4))
        assert cells[11] == (f"{100 * beyond / finite.size:.3f} %", f"{beyond:,}")
        ref = [c[0] for c in cells[-3:]]  # the training statistics, as the reference
        assert ref[0] == f"{fs.count:,}" and float(ref[2]) == pytest.approx(fs.std, rel=1e-5)
        drifted = abs(mean) > MAX_SHIFT or not 1 / MAX_RATIO <= std <= MAX_RATIO
        assert cells[12][0].startswith("DRIFT") == drifted, (name, mean, std)


def test_the_validation_shift_is_shown_and_flagged(validation):
    _, val, _ = validation
    text, page = _page(val)
    a = page.rows["a"]
    assert a[0][0] == "57,005"
    assert float(a[2][0]) == pytest.approx(0.665, abs=0.02)
    assert float(a[3][0]) == pytest.approx(1.42, abs=0.02)
    assert a[12][0] == "DRIFT (mean)" and page.rows["b"][12][0] == "—"
    assert a[-3][0] == "142,523"  # the training count, as the labelled reference
    assert "training statistics (reference)" in text
    _, train_page = _page(validation[0])
    assert all(cells[12][0] == "—" for cells in train_page.rows.values())


def test_drift_uses_zscore_diffs_rule_and_limits():
    """The page's flag and ``zscore diff`` agree on the same mean and σ (one source)."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=20_000)
    base = (base - base.mean()) / base.std()
    old = FittedStats.from_dict({"format_version": 1, "ddof": 0, "inf": "error", "features": {
        "x": {"dtype": "float64", "count": 2, "missing": 0, "mean": 0.0, "std": 1.0,
              "min": -1.0, "max": 1.0, "constant": False}}})
    for mean, std in ((0.49, 1.0), (0.51, 1.0), (0.0, 1.49), (0.0, 1.51), (0.0, 0.67),
                      (0.0, 0.66), (-0.6, 1.0)):
        tally = Tally(Reference(np.zeros(1), np.ones(1)))
        tally.add(base * std + mean)
        s = tally.result()
        new = FittedStats.from_dict({**old.to_dict(), "features": {"x": {
            **old.to_dict()["features"]["x"], "mean": s.moments.mean, "std": s.moments.std()}}})
        got = report.feature_drift("x", s, False, 0)
        assert got is not None and got.flagged == diff(old, new)[0].flagged, (mean, std)


def test_page_is_well_formed_self_contained_and_offline(validation):
    text, page = _page(validation[1])
    assert page.errors == [] and page.stack == []
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text
    assert not page.tags & {"script", "link", "img", "iframe", "object", "embed", "style"} - \
        {"style"}
    # The only URL is the SVG namespace, an identifier that is never fetched.
    urls = [(t, k, v) for t, k, v in page.attributes if "://" in v or k in ("src", "srcset")]
    assert {(t, k, v) for t, k, v in urls} == {("svg", "xmlns", "http://www.w3.org/2000/svg")}
    assert all(v.startswith("#") for t, k, v in page.attributes if k == "href")
    assert "url(" not in text and "@import" not in text and "<script" not in text
    sections = re.findall(r"<h2>([^<]+)</h2>", text)
    assert sections[0] == "Features" and sections[-1] == "Manifest"
    assert sections.index("Distributions") < sections.index("Manifest")
    svgs = re.findall(r"<svg.*?</svg>", text, re.S)
    assert len(svgs) == 5
    for svg in svgs:
        ET.fromstring(svg)  # each figure is well-formed XML on its own


def test_figure_is_steps_and_a_cumulative_curve_with_exact_counts(validation):
    text, _ = _page(validation[1])
    svg = ET.fromstring(re.search(r'<figure id="f0">(<svg.*?</svg>)', text, re.S).group(1))
    ns = {"s": "http://www.w3.org/2000/svg"}
    steps = [p.get("d") for p in svg.iterfind("s:path", ns) if p.get("fill") != "none"][0]
    assert set(re.sub(r"[\d.,-]", "", steps)) <= {"M", "V", "H", "Z"}  # steps, no curves
    curve = svg.find("s:polyline", ns).get("points").split()
    ys = [float(p.split(",")[1]) for p in curve]
    assert ys == sorted(ys, reverse=True)  # a cumulative share never falls (y grows down)
    # The bars are exact counts of the written z (summary.json holds them).
    summary = report.read_summaries((validation[1] / "_report" / "summary.json").read_bytes(),
                                    "summary.json")["a"]
    z = _written(validation[1], "a")
    z = z[~np.isnan(z)]
    counts, below, above = summary.regrid(-6.0, 8.0, 56)
    want = np.histogram(z, bins=np.linspace(-6.0, 8.0, 57))[0]
    assert counts.tolist() == want.tolist()
    assert below == np.count_nonzero(z < -6) and above == np.count_nonzero(z >= 8)
    assert "training mean" in text and "training ±σ" in text and "training range" in text


def test_redrawing_gives_the_same_bytes(validation, tmp_path, capsys):
    import shutil

    out = Path(shutil.copytree(validation[1], tmp_path / "copy"))
    before = (out / "_report" / "index.html").read_bytes()
    (out / "_report" / "index.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "_report" / "index.html").read_bytes() == before
    (out / "_report" / "summary.json").write_text('{"format": 2, "features": {"a": 3}}')
    assert main(["report", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"zscore: error: {out}/_report/summary.json is not a valid report summary ('int' object "
        "is not subscriptable); rerun the transform with the report on")


def test_hostile_names_are_escaped(validation):
    text, page = _page(validation[1])
    assert "<b>x" not in text and "\x07" not in text
    assert "&lt;b&gt;x&amp;y&lt;/b&gt;\\x07" in text  # as the console shows it
    assert "<b>x&y</b>\\x07" in page.rows


def test_per_key_summary_under_group_by(tmp_path):
    rng = np.random.default_rng(3)

    def frame(rows: int, b_shift: float) -> dict[str, np.ndarray]:
        tool = rng.choice(np.array(["A", "B", "C"]), rows)
        x = rng.normal(10.0, 2.0, rows) + np.where(tool == "B", 5.0 + b_shift * 2.0, 0.0)
        return {"tool": tool, "x": x, "flat": np.where(tool == "C", 1.0, rng.normal(size=rows))}

    train = _write(tmp_path / "train", {"p.parquet": frame(6000, 0.0)})
    val = _write(tmp_path / "val", {"p.parquet": frame(3000, 1.0)})  # B moved by 1σ
    assert main(["run", str(train), str(tmp_path / "tz"), "--group-by", "tool", "-q"]) == 0
    assert main(["transform", str(val), str(tmp_path / "vz"), "--stats",
                 str(tmp_path / "tz" / "_stats.json"), "-q"]) == 0
    text = (tmp_path / "vz" / "_report" / "index.html").read_text()
    table = text.split("<h2>Per key</h2>")[1].split("</table>")[0]
    rows = {m[0]: m[1:] for m in re.findall(
        r'<tr(?: class="drift")?><td class="mono">([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>',
        table)}
    tools = pq.read_table(val / "p.parquet").column("tool").to_numpy(zero_copy_only=False)
    for key in "ABC":
        assert rows[key][0] == f"{int(np.count_nonzero(tools == key)):,}"
    assert rows["B"][1] == "x" and rows["A"][1] == "—" and rows["C"][1] == "—"
    train_text = (tmp_path / "tz" / "_report" / "index.html").read_text()
    assert "<h2>Per key</h2>" in train_text and 'class="drift"' not in train_text


def test_tally_counts_small_batches_like_one_big_one_and_merges_exactly():
    rng = np.random.default_rng(2)
    y = rng.standard_t(2, 100_000)
    y[::9] = np.nan
    y[:4] = [4.0, -4.0, 16.0, -16.0]  # on the edges of "beyond" and of the fine bins
    ref = Reference(np.zeros(1), np.ones(1))
    small, big, halves = Tally(ref), Tally(ref), [Tally(ref), Tally(ref)]
    for i in range(0, y.size, 100):
        chunk = y[i:i + 100].copy()
        small.add(chunk)
        chunk[:] = 99.0  # the caller reuses its buffer: the tally kept a copy
    big.add(y)
    halves[0].add(y[:50_001])
    halves[1].add(y[50_001:])
    merged = halves[0].result().merge(halves[1].result())
    finite = y[~np.isnan(y)]
    mean, std = _exact(finite)
    for s in (small.result(), big.result(), merged):
        d = s.to_dict()
        assert d["fine"] == big.result().to_dict()["fine"] and d["low"] == d["low"]
        assert s.moments.count == finite.size and s.moments.missing == y.size - finite.size
        assert abs(s.moments.mean - mean) <= 1e-12 * std
        assert abs(s.moments.std() - std) <= 1e-12 * std
        assert s.beyond == np.count_nonzero(np.abs(finite) > 4)
        for q in (0.001, *QUANTILES, 0.999):
            want = float(np.quantile(finite, q))
            assert abs(s.quantile(q) - want) <= max(STEP, 0.022 * abs(want)), q


def test_a_report_failure_never_fails_the_run(datasets, tmp_path, capsys, monkeypatch):
    src = datasets.sample()

    def broken(name, *args, **kwargs):
        if name == "f_normal":
            raise ZeroDivisionError("a bug in the drawing")
        return real(name, *args, **kwargs)

    real = report.feature_svg
    monkeypatch.setattr(report, "feature_svg", broken)
    assert main(["run", str(src), str(tmp_path / "a"), "--exclude", "id,label", "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [e for e in err if "report" in e] == [
        err[-1]] and err[-1].endswith(
        "zscore: warning: the report leaves out the figures of 1 feature(s) ('f_normal'), "
        "which could not be drawn (ZeroDivisionError: a bug in the drawing); the output "
        "itself is complete")
    text = (tmp_path / "a" / "_report" / "index.html").read_text()
    assert "<h2>Not drawn</h2>" in text and text.count("<svg") == 7
    monkeypatch.setattr(report, "build", lambda *a, **k: 1 / 0)
    assert main(["run", str(src), str(tmp_path / "b"), "--exclude", "id,label", "-q"]) == 0
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "zscore: warning: no report was written (ZeroDivisionError: division by zero); the "
        "output itself is complete")
    assert (tmp_path / "b" / "_SUCCESS").exists() and not (tmp_path / "b" / "_report").exists()
    assert len(list((tmp_path / "b").rglob("*.parquet"))) == 6


def test_bad_arguments_are_refused(validation, tmp_path):
    stats = FittedStats.load(validation[2])
    summaries = report.read_summaries(
        (validation[1] / "_report" / "summary.json").read_bytes(), "summary.json")
    with pytest.raises(InputError, match="unknown mode 'zscore'"):
        report.render(tmp_path, stats, summaries, mode="zscore")
    with pytest.raises(ArtifactError, match="column 'ghost' has a summary"):
        report.render(tmp_path, stats, {**summaries, "ghost": summaries["a"]})
    assert report.render(tmp_path, stats, {"a": summaries["a"]}) == ["summary.json",
                                                                     "index.html"]
    page = _Page()
    page.feed((tmp_path / "index.html").read_text("utf-8"))
    assert len(page.rows) == len(stats.features)  # every feature listed, drawn or not
    assert page.rows["b"][0][0] == "not written" and page.rows["a"][0][0] == "57,005"


def test_no_plotting_library_anywhere():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    deps = project["project"]["dependencies"] + [
        d for extra in project["project"]["optional-dependencies"].values() for d in extra]
    assert not [d for d in deps if re.match(r"(matplotlib|plotly|bokeh|seaborn)\b", d)]
    code = ("import sys, pipeline.report, pipeline.jobs, pipeline.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'PIL', 'plotly')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("mode", ["scale", "center"])
def test_other_modes_report_z_in_training_units(tmp_path, mode):
    """z is (written - training mean after the transform) / training σ after it, in every mode."""
    data = _data(5000, 4, shift=0.3)
    src = _write(tmp_path / "in", {"p.parquet": {k: v for k, v in data.items() if k in "abn"}})
    assert main(["run", str(src), str(tmp_path / "out"), "--mode", mode, "-q"]) == 0
    stats = FittedStats.load(tmp_path / "out" / "_stats.json")
    _, page = _page(tmp_path / "out")
    for name, fs in stats.features.items():
        w = _written(tmp_path / "out", name)
        w = w[~np.isnan(w)]
        z = w - fs.mean / fs.std if mode == "scale" else w / fs.std
        cells = page.rows[name]
        assert float(cells[2][1]) == pytest.approx(float(z.mean()), abs=1e-9)
        assert float(cells[3][1]) == pytest.approx(float(z.std()), rel=1e-9)
        assert abs(float(cells[7][1]) - float(np.median(z))) <= STEP + 1e-9
        assert cells[12][0] == "—"  # the training data itself has not drifted
