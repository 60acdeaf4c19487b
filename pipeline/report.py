"""The run report: a static HTML page of per-feature distributions before and after.

:func:`render` writes ``histograms.json`` (so the page can be drawn again
without reading the data, see :func:`read_histograms`), one
``feature-<name>.png`` per feature (the "before" and "after" histograms side by
side, smoothed, mean and ±σ marked), ``variances.png`` (variance before and
after, log scale) and ``index.html`` (no scripts or external styles: the
images, a table of the fitted statistics and the run's manifest).

Only matplotlib's object API is used (a private ``Figure`` per image, never
pyplot's global state), so rendering is safe in threads.  Nothing depends on
the time or the matplotlib version: rendering the same inputs again with the same
libraries writes the same bytes.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .artifact import FeatureStats, FittedStats
from .commit import atomic_write
from .errors import ArtifactError, InputError
from .histogram import FeatureHistograms, Histogram
from .transform import MODES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HISTOGRAMS_NAME = "histograms.json"
INDEX_NAME = "index.html"
VARIANCES_NAME = "variances.png"
FIGSIZE = (6.4, 3.2)  # inches; at DPI this is the 640x320 the page reserves
DPI = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_STEM = 80  # characters; keeps file names far below the usual 255-byte limit
_LABEL = 32  # characters of a feature name shown inside an image (the page shows all)
_COLOURS = {"before": ("#9ecae1", "#3182bd", "#08306b"),  # bars, bar edge, curve
            "after": ("#a1d99b", "#31a354", "#00441b")}
_MARK = "#d62728"  # mean and ±σ lines


def available() -> bool:
    """True when matplotlib can be imported, i.e. :func:`render` can work."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def render(directory: str | os.PathLike[str], stats: FittedStats,
           histograms: Mapping[str, FeatureHistograms], *,
           manifest: Mapping[str, Any] | None = None, mode: str = "standard") -> list[str]:
    """Write the report into the local ``directory`` (created if needed).

    Parameters
    ----------
    directory : str or path
        A local directory; files of the same names are replaced, others left alone.
    stats : FittedStats
        The statistics the transform used.
    histograms : mapping of str to FeatureHistograms
        Per transformed feature; each must be a feature of ``stats``.  Features of
        ``stats`` without one appear in the table only.
    manifest : mapping, optional
        The run's manifest (``_SUCCESS``); shown as given, whatever keys it has.
    mode : {"standard", "scale", "center"}
        The transform's mode, which decides where the "after" mean and σ lie.

    Returns
    -------
    list of str
        The names written, relative to ``directory``; ``index.html`` is last.

    Raises
    ------
    InputError
        Unknown ``mode``, or matplotlib is not installed.
    ArtifactError
        A histogram names a feature that ``stats`` does not have.

    Examples
    --------
    >>> render("out/_report", stats, histograms, manifest=manifest)  # doctest: +SKIP
    ['histograms.json', 'feature-f00.png', ..., 'variances.png', 'index.html']
    """
    files = build(stats, histograms, manifest=manifest, mode=mode)
    for rel, data in files.items():
        atomic_write(os.path.join(os.fspath(directory), rel), data)
    return list(files)


def build(stats: FittedStats, histograms: Mapping[str, FeatureHistograms], *,
          manifest: Mapping[str, Any] | None = None, mode: str = "standard"
          ) -> dict[str, bytes]:
    """The report's files (name -> content, ``index.html`` last), as :func:`render` writes them.

    For callers that publish the files themselves (the run's commit protocol).
    """
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if not available():
        raise InputError("the report needs matplotlib; install it with "
                         "'pip install \"zscore[report]\"' or run without the report")
    for name in histograms:
        if name not in stats.features:
            raise ArtifactError(f"column '{name}' has a histogram but is not in the statistics;"
                                " render the report with the statistics the run used",
                                column=name)
    plotted = [n for n in stats.features if n in histograms]
    stems = file_stems(plotted)
    images = {n: f"feature-{stems[n]}.png" for n in plotted}
    saved = {n: histograms[n].to_dict() for n in plotted}
    files = {HISTOGRAMS_NAME: (json.dumps(saved, indent=1, allow_nan=False) + "\n").encode()}
    for name in plotted:
        files[images[name]] = _feature_png(name, stats.features[name], histograms[name], mode)
    if plotted:
        files[VARIANCES_NAME] = _variances_png(
            [(n, stats.features[n]) for n in plotted], mode)
    # The page goes last, so it never points at an image that is not there yet.
    files[INDEX_NAME] = _page(stats, images, manifest, mode).encode("utf-8")
    return files


def read_histograms(directory: str | os.PathLike[str]) -> dict[str, FeatureHistograms]:
    """The histograms a previous :func:`render` saved; :class:`ArtifactError` if unusable."""
    path = os.path.join(os.fspath(directory), HISTOGRAMS_NAME)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
        return {str(k): FeatureHistograms.from_dict(v) for k, v in data.items()}
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist; rerun the transform with the report "
                            "enabled", path=path) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path} is not a valid histograms file ({exc}); rerun the "
                            "transform with the report enabled", path=path) from None


def file_stems(names: Iterable[str]) -> dict[str, str]:
    """A distinct, file-name-safe stem per feature name, independent of their order.

    Characters outside ``[A-Za-z0-9_.-]`` become ``_``.  Names that then clash
    (ignoring case, for case-insensitive file systems) all get a suffix from a
    hash of the original name, so adding a feature never renames another's
    file unless it clashes with it.
    """
    unique = list(dict.fromkeys(names))
    base = {n: _sanitize(n) for n in unique}
    clashes = Counter(s.casefold() for s in base.values())
    stems = {n: s if clashes[s.casefold()] == 1 else f"{s}-{_digest(n)}"
             for n, s in base.items()}
    # A literal name can still equal another's suffixed stem; settle it in sorted order.
    seen: set[str] = set()
    for name in sorted(unique):
        stem, k = stems[name], 1
        while stem.casefold() in seen:
            k += 1
            stem = f"{stems[name]}-{k}"
        seen.add(stem.casefold())
        stems[name] = stem
    return stems


def _sanitize(name: str) -> str:
    stem = _UNSAFE.sub("_", name) or "_"
    if len(stem) > _MAX_STEM:
        stem = f"{stem[:_MAX_STEM]}-{_digest(name)}"
    return stem


def _digest(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


# ------------------------------------------------------------------ numbers
def after_moments(fs: FeatureStats, mode: str) -> tuple[float, float]:
    """Mean and σ of the feature after the transform in ``mode`` (see :mod:`.transform`)."""
    if fs.constant:
        return (fs.mean, 0.0) if mode == "scale" else (0.0, 0.0)
    if mode == "standard":
        return 0.0, 1.0
    if mode == "scale":
        return fs.mean / fs.std, 1.0
    return 0.0, fs.std


def smooth(h: Histogram, std: float, count: int, *, reflect: bool = False,
           points: int = 241) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian-kernel smoothing of the bin counts, in rows per bin width.

    The bandwidth is Silverman's rule, ``0.9 * min(σ, IQR / 1.34) * n ** -0.2``
    (Silverman 1986, eq. 3.31), with the IQR read off the histogram, but never
    narrower than half a bin: the counts hold no finer detail, and a narrower
    kernel would draw each bin as a bump (at half a bin the ripple is about 1%).
    ``reflect`` mirrors the counts at both ends, for a range that is the data's
    true [min, max], so the curve does not sag where the kernel leaks outside.
    """
    edges = h.edges()
    width = edges[1] - edges[0]
    centres = (edges[:-1] + edges[1:]) / 2
    weights = np.asarray(h.counts, dtype=np.float64)
    iqr = _quantile(h, 0.75) - _quantile(h, 0.25)
    spread = min(std, iqr / 1.34) if iqr > 0 else std
    bandwidth = max(width / 2, 0.9 * spread * max(count, 1) ** -0.2)  # NaN-safe order
    if reflect:
        centres = np.concatenate([2 * h.lo - centres, centres, 2 * h.hi - centres])
        weights = np.concatenate([weights, weights, weights])
    x = np.linspace(h.lo, h.hi, points)
    z = (x[:, None] - centres[None, :]) / bandwidth
    y = np.exp(-0.5 * z * z) @ weights * (width / (bandwidth * math.sqrt(2 * math.pi)))
    return x, y


def _quantile(h: Histogram, q: float) -> float:
    """The ``q`` quantile of the finite values, interpolated within a bin."""
    counts = np.asarray(h.counts, dtype=np.float64)
    total = counts.sum() + h.below + h.above
    target = q * total - h.below
    if total == 0 or target <= 0:
        return h.lo
    cum = np.cumsum(counts)
    i = int(np.searchsorted(cum, target))
    if i >= len(counts):
        return h.hi
    width = (h.hi - h.lo) / len(counts)
    before = cum[i] - counts[i]
    return h.lo + width * (i + (target - before) / counts[i])


# ------------------------------------------------------------------- images
def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # Without "Software" (the matplotlib version) a rerun, even after an upgrade, matches.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _short(name: str) -> str:
    return name if len(name) <= _LABEL else name[:_LABEL - 1] + "…"


def _feature_png(name: str, fs: FeatureStats, fh: FeatureHistograms, mode: str) -> bytes:
    from matplotlib.figure import Figure

    # Fixed margins, not constrained layout: it would double the cost of each image, and
    # short tick labels (EngFormatter) make the space needed predictable.
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    fig.subplots_adjust(left=0.09, right=0.985, bottom=0.14, top=0.84, wspace=0.16)
    left, right = fig.subplots(1, 2)
    missing = f", {fs.missing:,} missing" if fs.missing else ""
    # parse_math=False: a '$' in a column name must not be read as TeX (or fail to parse).
    fig.suptitle(f"{_short(name)}  ({fs.count:,} values{missing})", fontsize=9,
                 parse_math=False)
    _panel(left, fh.before, fs.mean, fs.std, fs.count, constant=fs.constant,
           title="before", colours=_COLOURS["before"], reflect=True)
    mean, std = after_moments(fs, mode)
    _panel(right, fh.after, mean, std, fs.count, constant=fs.constant,
           title=f"after ({mode})", colours=_COLOURS["after"], reflect=False)
    left.set_ylabel("rows per bin", fontsize=8)
    return _png(fig)


def _panel(ax: Axes, h: Histogram, mean: float, std: float, count: int, *, constant: bool,
           title: str, colours: tuple[str, str, str], reflect: bool) -> None:
    from matplotlib.ticker import EngFormatter, MaxNLocator

    ax.tick_params(labelsize=7)
    # Few ticks: text is most of the drawing time, and the page shows the exact numbers.
    ax.xaxis.set_major_locator(MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.get_offset_text().set_fontsize(7)
    inside = sum(h.counts)
    if constant or not h.hi > h.lo:
        # One value: a KDE would be a spike of arbitrary width, so draw one bar and say so.
        w = 0.05 * max(abs(h.lo), 1.0)
        ax.bar([h.lo], [inside], width=w, color=colours[0], edgecolor=colours[1])
        ax.set_xlim(h.lo - 10 * w, h.lo + 10 * w)
        ax.set_ylim(0, max(inside, 1) * 1.25)
        ax.text(0.5, 0.92, f"constant: every value is {h.lo:.6g}", transform=ax.transAxes,
                ha="center", va="top", fontsize=7)
        ax.set_title(f"{title}: constant", fontsize=8)
        return
    ax.set_title(f"{title}: mean {_digits(mean, std)}, σ {std:.4g}", fontsize=8)
    ax.stairs(h.counts, h.edges(), fill=True, facecolor=colours[0], edgecolor=colours[1],
              linewidth=0.6)
    if inside:
        x, y = smooth(h, std, count, reflect=reflect)
        ax.plot(x, y, color=colours[2], linewidth=1.2)
    else:
        ax.text(0.5, 0.5, "no values in range", transform=ax.transAxes, ha="center",
                fontsize=8)
    ax.axvline(mean, color=_MARK, linewidth=1.0)
    for sign in (-1, 1):
        ax.axvline(mean + sign * std, color=_MARK, linewidth=0.8, linestyle="--")
    # Keep the ±σ lines in view even where they fall outside the binned range.
    lo, hi = min(h.lo, mean - std), max(h.hi, mean + std)
    pad = 0.02 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(0, None)
    for n, x, text in ((h.below, 0.02, f"◀ {h.below:,} below"),
                       (h.above, 0.98, f"{h.above:,} above ▶")):
        if n:
            ax.text(x, 0.97, text, transform=ax.transAxes, ha="left" if x < 0.5 else "right",
                    va="top", fontsize=6.5)


def _digits(value: float, scale: float) -> str:
    """``value`` with enough digits to resolve ``scale`` (a mean of 1e9 + 2, σ 2: not 1e+09)."""
    if value == 0 or not scale > 0 or not math.isfinite(value):
        return f"{value:.4g}"
    digits = 4 + max(0, math.ceil(math.log10(abs(value) / scale)))
    return f"{value:.{min(digits, 17)}g}"


def _variances_png(features: list[tuple[str, FeatureStats]], mode: str) -> bytes:
    from matplotlib.figure import Figure

    n = len(features)
    fig = Figure(figsize=(FIGSIZE[0], min(1.3 + 0.27 * n, 120.0)), dpi=DPI,
                 layout="constrained")
    ax = fig.subplots()
    y = np.arange(n, dtype=np.float64)
    before = np.array([fs.std ** 2 for _, fs in features])
    after = np.array([after_moments(fs, mode)[1] ** 2 for _, fs in features])
    # A constant feature has variance 0, which a log axis cannot show: it gets a label.
    for values, offset, key in ((before, -0.2, "before"), (after, 0.2, "after")):
        ok = values > 0
        ax.barh(y[ok] + offset, values[ok], height=0.4, color=_COLOURS[key][0],
                edgecolor=_COLOURS[key][1], linewidth=0.6,
                label="before" if key == "before" else f"after ({mode})")
    for i, (_, fs) in enumerate(features):
        if fs.constant:
            ax.text(0.01, i, "constant (variance 0)", transform=ax.get_yaxis_transform(),
                    va="center", fontsize=7, style="italic")
    positive = np.concatenate([before[before > 0], after[after > 0]])
    lo, hi = (positive.min(), positive.max()) if positive.size else (1.0, 1.0)
    ax.set_xscale("log")
    ax.set_xlim(10 ** (math.floor(math.log10(lo)) - 1), 10 ** (math.ceil(math.log10(hi)) + 1))
    ax.set_ylim(n - 0.5, -0.5)  # first feature on top, as in the table
    ax.set_yticks(y, labels=[_short(name) for name, _ in features], fontsize=7,
                  parse_math=False)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("variance (log scale)", fontsize=8)
    if mode != "center":
        ax.axvline(1.0, color="#888888", linewidth=0.8, linestyle=":")
    ax.grid(axis="x", which="major", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    fig.legend(loc="outside upper center", ncols=2, fontsize=7, frameon=False)
    return _png(fig)


# --------------------------------------------------------------------- page
_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1340px;
padding:0 1em;color:#222}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font:bold 13px monospace;margin:1.2em 0 .3em}table{border-collapse:collapse;font-size:13px}
td,th{padding:.2em .6em;text-align:left;vertical-align:top;border-bottom:1px solid #eee}
.stats :is(td,th)+*+*{text-align:right;font-variant-numeric:tabular-nums}
.stats :is(td,th):last-child{text-align:left}.constant{background:#fff7e0}.note{color:#666}
.mono{font:12px monospace}
img{max-width:100%;height:auto;border:1px solid #eee}.figures{display:flex;flex-wrap:wrap;
gap:0 1.5em}.figures section{width:642px;max-width:100%}"""
_NOTE = ("Bars: 60-bin histogram, before normalization over the fitted [min, max], after it "
         "over mean ± 4σ (rows outside are counted as below/above). Curve: Gaussian-kernel "
         "smoothing of the bars. Solid red line: mean; dashed: ± σ.")
_HEAD = ("feature", "dtype", "count", "missing", "mean", "σ", "min", "max", "constant")


def _page(stats: FittedStats, images: Mapping[str, str],
          manifest: Mapping[str, Any] | None, mode: str) -> str:
    e = html.escape
    where = (manifest or {}).get("input", stats.input)
    source = e(str(where.get("path", ""))) if isinstance(where, Mapping) else ""
    fitted = {k: v for k, v in (("ddof", stats.ddof), ("inf", stats.inf),
                                ("created", stats.created), ("tool_version", stats.tool_version),
                                ("input", stats.input)) if v or k == "ddof"}
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
           f"<title>zscore report{' — ' + source if source else ''}</title>",
           f"<style>{_CSS}</style></head><body>\n<h1>zscore report</h1>",
           f'<p class="note">{len(stats.features)} features · mode <b>{e(mode)}</b>'
           + (f' · input <span class="mono">{source}</span>' if source else "") + "</p>",
           "<h2>Run</h2>", _value(manifest) if manifest else '<p class="note">No manifest.</p>',
           "<h2>Fitted statistics</h2>", _value(fitted), _table(stats, images)]
    if images:
        out += ["<h2>Variance before and after</h2>",
                f'<img src="{VARIANCES_NAME}" alt="variance per feature, log scale">',
                f'<h2>Distributions</h2>\n<p class="note">{e(_NOTE)}</p>\n<div class="figures">']
        out += [f'<section id="{e(image[:-4])}"><h3>{e(name)}</h3><img src="{e(image)}" '
                f'width="640" height="320" alt="{e(name)}: before and after"></section>'
                for name, image in images.items()]
        out.append("</div>")
    return "\n".join([*out, "</body></html>\n"])


def _table(stats: FittedStats, images: Mapping[str, str]) -> str:
    e = html.escape
    rows = ['<table class="stats"><tr>' + "".join(f"<th>{h}</th>" for h in _HEAD) + "</tr>"]
    for name, fs in stats.features.items():
        link = f'<a href="#{e(images[name][:-4])}">{e(name)}</a>' if name in images else e(name)
        numbers = [(fs.mean, _digits(fs.mean, fs.std)), (fs.std, f"{fs.std:.6g}")] + [
            (v, f"{v:,}" if isinstance(v, int) else _digits(v, fs.std))
            for v in (fs.min, fs.max)]
        rows.append(("<tr class=constant>" if fs.constant else "<tr>")
                    + f'<td class="mono">{link}</td><td>{e(fs.dtype)}</td>'
                    f"<td>{fs.count:,}</td><td>{fs.missing:,}</td>"
                    + "".join(f'<td title="{e(repr(v))}">{e(t)}</td>' for v, t in numbers)
                    + f"<td>{'constant' if fs.constant else ''}</td></tr>")
    return "\n".join([*rows, "</table>"])


def _value(v: Any) -> str:
    """Any JSON-like value as HTML: objects as key/value tables, long lists folded."""
    e = html.escape
    if isinstance(v, Mapping):
        return "<table>" + "".join(f'<tr><th class="mono">{e(str(k))}</th><td>{_value(x)}</td>'
                                   "</tr>" for k, x in v.items()) + "</table>"
    if isinstance(v, list | tuple):
        if len(v) <= 20 and not any(isinstance(x, Mapping | list | tuple) for x in v):
            return e(", ".join(map(str, v)))
        items = "".join(f"<li>{e(json.dumps(x, default=str))}</li>" for x in v[:200])
        more = f"<li>… and {len(v) - 200:,} more</li>" if len(v) > 200 else ""
        return (f'<details><summary>{len(v):,} items</summary><ol class="mono">{items}{more}'
                "</ol></details>")
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return e(f"{v:.6g}" if isinstance(v, float) else str(v))
