"""The report's figure of one feature: a static SVG drawn here, with no plotting library.

What is drawn, all in z (training σ from the training mean, see
:mod:`pipeline.summary`): the written values as a histogram of steps (share of
the non-missing values per bin, left axis), their cumulative share as a curve
(right axis), counts of values off either side of the plot, the written
data's mean, and the training statistics as a labelled reference: mean (z = 0),
±σ (z = ±1) and, for a global plan, the training range [min, max].  No
smoothing: a kernel density would widen peaks and invent values past the data.

Every number is printed with a fixed number of decimals, so the same summary
always gives the same bytes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from .progress import escape
from .summary import SPAN, STEP, Summary

WIDTH, HEIGHT = 600, 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 548, 28, 208  # the plot area, in pixels
_MAX_BINS = 90
_DATA, _DATA_EDGE, _CUMULATIVE = "#9ecae1", "#2171b5", "#08306b"
_TRAINING, _RANGE, _MEAN = "#444", "#eeeeee", "#d62728"


def view(summary: Summary) -> tuple[float, float, int]:
    """The plotted range [lo, hi) in z and its number of bins.

    At least [-4.5, 4.5], widened to the written data's 0.1 % and 99.9 %
    quantiles (never past ±SPAN); each bin a power-of-two number of fine bins,
    so every bar is an exact count.
    """
    lo, hi = -4.5, 4.5
    if summary.moments.count:
        lo = min(lo, summary.quantile(0.001))
        hi = max(hi, summary.quantile(0.999))
    lo, hi = max(lo, -SPAN), min(hi, SPAN)
    per = 1
    while (hi - lo) / (per * STEP) > _MAX_BINS:
        per *= 2
    width = per * STEP
    lo = math.floor(lo / width) * width
    hi = math.ceil(hi / width) * width
    return max(lo, -SPAN), min(hi, SPAN), round((min(hi, SPAN) - max(lo, -SPAN)) / width)


def feature_svg(name: str, summary: Summary, *, training_range: tuple[float, float] | None,
                title: str) -> str:
    """One feature's figure as a standalone ``<svg>`` element (see the module docstring).

    ``training_range`` is the training [min, max] in z (None: not drawn, e.g.
    per-key statistics); ``title`` is the caption drawn above the plot.
    """
    lo, hi, bins = view(summary)
    n = summary.moments.count
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10" '
           f'role="img"><title>{html.escape(escape(name))}</title>',
           f'<text x="{_LEFT}" y="12" font-size="11" font-weight="bold">'
           f"{html.escape(escape(title))}</text>"]
    x = _scale(lo, hi, _LEFT, _RIGHT)
    if training_range is not None:
        a, b = max(training_range[0], lo), min(training_range[1], hi)
        if b > a:
            out.append(f'<rect x="{x(a):.1f}" y="{_TOP}" width="{x(b) - x(a):.1f}" '
                       f'height="{_BOTTOM - _TOP}" fill="{_RANGE}"/>')
    counts, below, above = summary.regrid(lo, hi, bins) if n else ([0] * bins, 0, 0)
    top = _nice(max(max(counts) / n * 100 if n else 1.0, 1e-9) * 1.08)
    y = _scale(0.0, top, _BOTTOM, _TOP)
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    if n:
        steps = "".join(f"V{y(c / n * 100):.1f}H{x(edges[i + 1]):.1f}"
                        for i, c in enumerate(counts))
        out.append(f'<path d="M{x(lo):.1f},{_BOTTOM}{steps}V{_BOTTOM}Z" fill="{_DATA}" '
                   f'stroke="{_DATA_EDGE}" stroke-width="0.7"/>')
        cum, points = below, [f"{x(lo):.1f},{_cum_y(below / n)}"]
        for i, c in enumerate(counts):
            cum += c
            points.append(f"{x(edges[i + 1]):.1f},{_cum_y(cum / n)}")
        out.append(f'<polyline points="{" ".join(points)}" fill="none" '
                   f'stroke="{_CUMULATIVE}" stroke-width="1.3"/>')
    for z, dash, width in ((0.0, "", 1.2), (-1.0, "4,3", 0.9), (1.0, "4,3", 0.9)):
        if lo <= z <= hi:
            out.append(f'<line x1="{x(z):.1f}" x2="{x(z):.1f}" y1="{_TOP}" y2="{_BOTTOM}" '
                       f'stroke="{_TRAINING}" stroke-width="{width}"'
                       + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
    mean = summary.moments.mean
    if n and lo <= mean <= hi:
        out.append(f'<line x1="{x(mean):.1f}" x2="{x(mean):.1f}" y1="{_TOP}" y2="{_BOTTOM}" '
                   f'stroke="{_MEAN}" stroke-width="1.2"/>')
    out += _axes(lo, hi, top, x, y)
    if below:
        out.append(f'<text x="{_LEFT + 3}" y="{_TOP + 11}">◀ {below:,} below</text>')
    if above:
        out.append(f'<text x="{_RIGHT - 3}" y="{_TOP + 11}" text-anchor="end">'
                   f"{above:,} above ▶</text>")
    if not n:
        out.append(f'<text x="{(_LEFT + _RIGHT) / 2}" y="{(_TOP + _BOTTOM) / 2}" '
                   'text-anchor="middle">no values</text>')
    out.append(_legend(training_range is not None))
    return "".join(out) + "</svg>"


def _scale(a: float, b: float, pa: float, pb: float):  # noqa: ANN202 - a tiny closure
    k = (pb - pa) / (b - a)
    return lambda v: pa + (v - a) * k


def _cum_y(share: float) -> str:
    return f"{_BOTTOM - share * (_BOTTOM - _TOP):.1f}"


def _nice(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``v``."""
    power = 10.0 ** math.floor(math.log10(v))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= v * (1 - 1e-12))


def _ticks(lo: float, hi: float, most: int) -> list[float]:
    step = _nice((hi - lo) / most)
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def _axes(lo: float, hi: float, top: float, x, y) -> list[str]:  # noqa: ANN001
    grey = 'stroke="#999" stroke-width="0.6"'
    out = [f'<path d="M{_LEFT},{_TOP}V{_BOTTOM}H{_RIGHT}V{_TOP}" fill="none" {grey}/>']
    for z in _ticks(lo, hi, 10):
        out.append(f'<line x1="{x(z):.1f}" x2="{x(z):.1f}" y1="{_BOTTOM}" y2="{_BOTTOM + 3}" '
                   f'{grey}/><text x="{x(z):.1f}" y="{_BOTTOM + 13}" text-anchor="middle">'
                   f"{_label(z)}</text>")
    for v in _ticks(0.0, top, 4):
        out.append(f'<text x="{_LEFT - 4}" y="{y(v) + 3:.1f}" text-anchor="end">'
                   f"{_label(v)}%</text>")
    for share in (0, 25, 50, 75, 100):
        out.append(f'<text x="{_RIGHT + 4}" y="{float(_cum_y(share / 100)) + 3:.1f}" '
                   f'fill="{_CUMULATIVE}">{share}%</text>')
    out.append(f'<text x="{(_LEFT + _RIGHT) / 2}" y="{_BOTTOM + 26}" text-anchor="middle">'
               "z = (value − training mean) / training σ</text>")
    return out


def _label(v: float) -> str:
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text.replace("-", "−")


def _legend(with_range: bool) -> str:
    items: Sequence[tuple[str, str]] = (
        (f'<rect width="10" height="8" y="-7" fill="{_DATA}" stroke="{_DATA_EDGE}"/>',
         "written, % per bin"),
        (f'<line x2="12" y1="-3" y2="-3" stroke="{_CUMULATIVE}" stroke-width="1.3"/>',
         "cumulative"),
        (f'<line x2="12" y1="-3" y2="-3" stroke="{_MEAN}" stroke-width="1.2"/>', "mean"),
        (f'<line x2="12" y1="-3" y2="-3" stroke="{_TRAINING}" stroke-width="1.2"/>',
         "training mean"),
        (f'<line x2="12" y1="-3" y2="-3" stroke="{_TRAINING}" stroke-dasharray="4,3"/>',
         "training ±σ"),
    )
    if with_range:
        items = (*items, (f'<rect width="10" height="8" y="-7" fill="{_RANGE}" '
                          'stroke="#ccc"/>', "training range"))
    out, at = [], 10.0
    for mark, text in items:
        out.append(f'<g transform="translate({at:.1f},{HEIGHT - 4})">{mark}'
                   f'<text x="15" y="0">{text}</text></g>')
        at += 26 + 5.5 * len(text)
    return "".join(out)
