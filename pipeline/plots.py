"""The report's pictures: smoothed before/after histograms and the variance chart.

matplotlib's object API only (a private ``Figure`` per image, never pyplot's
global state), so drawing is safe in threads; PNGs carry no software or time
metadata, so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from .artifact import FeatureStats
from .histogram import FeatureHistograms, Histogram
from .progress import escape

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGSIZE = (6.4, 3.2)  # inches; at DPI this is the 640x320 the page reserves
DPI = 100
_LABEL = 32  # characters of a feature name shown inside an image (the page shows all)
_COLOURS = {"before": ("#9ecae1", "#3182bd", "#08306b"),  # bars, bar edge, curve
            "after": ("#a1d99b", "#31a354", "#00441b")}
_MARK = "#d62728"  # mean and ±σ lines


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
    # Escaped: a control character has no glyph (matplotlib would warn on stderr), and
    # the picture must show the same name as the console does.
    name = escape(name)
    return name if len(name) <= _LABEL else name[:_LABEL - 1] + "…"


def feature_png(name: str, fs: FeatureStats, fh: FeatureHistograms, mode: str) -> bytes:
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
    # Python floats throughout: matplotlib refuses integers beyond int64 as limits
    # (variances of 1e19 and more), and a range must be finite to be drawn.
    mean, std = float(mean), float(std)
    if constant or not h.hi > h.lo or not _finite(h.lo, h.hi, h.hi - h.lo):
        # One value: a KDE would be a spike of arbitrary width, so draw one bar and say so.
        w = 0.05 * max(abs(h.lo), 1.0)
        ax.bar([h.lo], [inside], width=w, color=colours[0], edgecolor=colours[1])
        if _finite(h.lo - 10 * w, h.lo + 10 * w):
            ax.set_xlim(h.lo - 10 * w, h.lo + 10 * w)
        ax.set_ylim(0, max(inside, 1) * 1.25)
        ax.text(0.5, 0.92, f"constant: every value is {h.lo:.6g}", transform=ax.transAxes,
                ha="center", va="top", fontsize=7)
        ax.set_title(f"{title}: constant", fontsize=8, y=1.0, pad=4)
        return
    # An explicit y skips matplotlib's search for a title position above the tick labels,
    # a third of the drawing time; nothing is drawn above these axes.
    ax.set_title(f"{title}: mean {digits(mean, std)}, σ {std:.4g}", fontsize=8, y=1.0, pad=4)
    ax.stairs(h.counts, h.edges(), fill=True, facecolor=colours[0], edgecolor=colours[1],
              linewidth=0.6)
    if inside:
        grid, density = smooth(h, std, count, reflect=reflect)
        ax.plot(grid, density, color=colours[2], linewidth=1.2)
    else:
        ax.text(0.5, 0.5, "no values in range", transform=ax.transAxes, ha="center",
                fontsize=8)
    marks = [m for m in (mean, mean - std, mean + std) if _finite(m)]
    for i, m in enumerate(marks):
        ax.axvline(m, color=_MARK, linewidth=0.8 if i else 1.0, linestyle="--" if i else "-")
    # Keep the ±σ lines in view even where they fall outside the binned range.
    lo, hi = min([h.lo, *marks]), max([h.hi, *marks])
    pad = 0.02 * (hi - lo)
    if _finite(lo - pad, hi + pad):
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(0, None)
    corners: tuple[tuple[int, float, str], ...] = ((h.below, 0.02, f"◀ {h.below:,} below"),
                                                   (h.above, 0.98, f"{h.above:,} above ▶"))
    for n, at, text in corners:
        if n:
            ax.text(at, 0.97, text, transform=ax.transAxes, ha="left" if at < 0.5 else "right",
                    va="top", fontsize=6.5)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def digits(value: float, scale: float) -> str:
    """``value`` with enough digits to resolve ``scale`` (a mean of 1e9 + 2, σ 2: not 1e+09)."""
    if value == 0 or not scale > 0 or not math.isfinite(value):
        return f"{value:.4g}"
    digits = 4 + max(0, math.ceil(math.log10(abs(value) / scale)))
    return f"{value:.{min(digits, 17)}g}"


def variances_png(features: list[tuple[str, FeatureStats]], mode: str) -> bytes:
    from matplotlib.figure import Figure

    n = len(features)
    fig = Figure(figsize=(FIGSIZE[0], min(1.3 + 0.27 * n, 120.0)), dpi=DPI,
                 layout="constrained")
    ax = fig.subplots()
    y = np.arange(n, dtype=np.float64)
    with np.errstate(over="ignore"):  # σ > 1e154 squares to inf: not drawn
        before = np.array([float(fs.std) for _, fs in features], dtype=np.float64) ** 2
        after = np.array([float(after_moments(fs, mode)[1]) for _, fs in features],
                         dtype=np.float64) ** 2
    # A constant feature has variance 0, which a log axis cannot show: it gets a label.
    for values, offset, key in ((before, -0.2, "before"), (after, 0.2, "after")):
        ok = (values > 0) & np.isfinite(values)
        ax.barh(y[ok] + offset, values[ok], height=0.4, color=_COLOURS[key][0],
                edgecolor=_COLOURS[key][1], linewidth=0.6,
                label="before" if key == "before" else f"after ({mode})")
    for i, (_, fs) in enumerate(features):
        if fs.constant:
            ax.text(0.01, i, "constant (variance 0)", transform=ax.get_yaxis_transform(),
                    va="center", fontsize=7, style="italic")
    shown = np.concatenate([before, after])
    positive = shown[(shown > 0) & np.isfinite(shown)]
    lo, hi = (float(positive.min()), float(positive.max())) if positive.size else (1.0, 1.0)
    ax.set_xscale("log")
    # Floats: 10 ** 20 as a Python int is beyond what matplotlib accepts as a limit.
    ax.set_xlim(10.0 ** max(math.floor(math.log10(lo)) - 1, -320),
                10.0 ** min(math.ceil(math.log10(hi)) + 1, 308))
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
