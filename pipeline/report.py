"""The run report: one static HTML page about the data that was written.

:func:`build` makes ``summary.json`` (what was counted while writing, see
:mod:`pipeline.summary`; ``zscore report`` draws the page again from it) and
``index.html``: no script, no external style, font or image, every figure an
inline SVG drawn by :mod:`pipeline.svg`, so the page opens offline and alike
everywhere.  In order:

1. the per-feature table of the written data, in z (standard units of the
   training statistics): count, missing %, mean and σ of z, quantiles, the
   share beyond ±4σ and a drift flag (``zscore diff``'s rule and default
   limits, :func:`pipeline.compose.drift`), next to the training statistics,
   labelled as the reference;
2. under ``--group-by``, the same per key;
3. a figure per feature (steps and cumulative curve, training overlay);
4. the manifest of the run and the statistics' provenance, last.

Nothing depends on the time: the same inputs give the same bytes.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from .artifact import FittedStats
from .choices import MODES
from .compose import MAX_RATIO, MAX_SHIFT, Drift, drift
from .errors import ArtifactError, InputError, exception_text
from .feature_stats import FeatureStats
from .progress import escape
from .redaction import redact
from .stats import Moments
from .storage import atomic_write
from .summary import BEYOND, QUANTILES, STEP, Summary
from .svg import feature_svg

SUMMARY_NAME = "summary.json"
INDEX_NAME = "index.html"
SUMMARY_FORMAT = 2  # 2: per-key moments as columns
_MAX_KEYS = 200  # rows of the per-key table; the rest are counted


def render(directory: str | os.PathLike[str], stats: FittedStats,
           summaries: Mapping[str, Summary], *, manifest: Mapping[str, Any] | None = None,
           mode: str = "standard", warn: Callable[[str], None] | None = None) -> list[str]:
    """Write the report into the local ``directory`` (created if needed).

    Parameters
    ----------
    directory : str or path
        A local directory; files of the same names are replaced, others left alone.
    stats : FittedStats
        The statistics the transform used (the reference).
    summaries : mapping of str to Summary
        Per transformed feature, what was written; each must be a feature of
        ``stats``.  Features of ``stats`` without one are listed as not written.
    manifest : mapping, optional
        The run's manifest (``_SUCCESS``); shown last, as given.
    mode : {"standard", "scale", "center"}
        The transform's mode.
    warn : callable, optional
        Told, in one line, about figures that could not be drawn (the page then
        lists them); default :func:`warnings.warn`.

    Returns
    -------
    list of str
        The names written, relative to ``directory``; ``index.html`` is last.

    Raises
    ------
    InputError
        Unknown ``mode``.
    ArtifactError
        A summary names a feature that ``stats`` does not have.

    Examples
    --------
    >>> render("out/_report", stats, summaries, manifest=manifest)  # doctest: +SKIP
    ['summary.json', 'index.html']
    """
    files = build(stats, summaries, manifest=manifest, mode=mode, warn=warn)
    for rel, data in files.items():
        atomic_write(os.path.join(os.fspath(directory), rel), data)
    return list(files)


def build(stats: FittedStats, summaries: Mapping[str, Summary], *,
          manifest: Mapping[str, Any] | None = None, mode: str = "standard",
          warn: Callable[[str], None] | None = None) -> dict[str, bytes]:
    """The report's files (name -> content, ``index.html`` last), as :func:`render` writes them.

    For callers that publish the files themselves (the run's commit protocol).
    A figure that cannot be drawn is left out with a warning naming it, never
    an error: the report must not cost the user their normalized data.
    """
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    for name in summaries:
        if name not in stats.features:
            raise ArtifactError(f"column '{name}' has a summary but is not in the statistics;"
                                " draw the report with the statistics the run used",
                                column=name)
    shown = {n: summaries[n] for n in stats.features if n in summaries}
    saved = {"format": SUMMARY_FORMAT, "features": {n: s.to_dict() for n, s in shown.items()}}
    files = {SUMMARY_NAME: (json.dumps(saved, indent=None, allow_nan=False) + "\n").encode()}
    figures, failed = _figures(stats, shown)
    if failed:
        _warn_failed(failed, warn)
    # redact: a hand-written artifact's input path is shown too, and may hold a password.
    page = _page(stats, shown, figures, failed, manifest, mode)
    files[INDEX_NAME] = redact(page).encode("utf-8")
    return files


def read_summaries(data: bytes, where: str) -> dict[str, Summary]:
    """The summaries in the bytes of a ``summary.json``; :class:`ArtifactError` if unusable."""
    try:
        raw = json.loads(data.decode("utf-8"))
        if raw.get("format") != SUMMARY_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {SUMMARY_FORMAT}")
        return {str(k): Summary.from_dict(v) for k, v in raw["features"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{where} is not a valid report summary ({exception_text(exc)}); "
                            "rerun the transform with the report on", path=where) from None


def feature_drift(name: str, s: Summary, constant: bool, ddof: int) -> Drift | None:
    """The drift of the written data (mean and σ of z) from the reference (0 and 1).

    ``constant``: the feature (or key) was constant in training; its z is then
    the value minus that constant (σ unit 1), judged as ``zscore diff`` judges
    a constant old fit.  None when nothing but missing values was written.
    """
    return _drift(name, s.moments, constant, ddof)


def _drift(name: str, m: Moments, constant: bool, ddof: int) -> Drift | None:
    if m.count == 0:
        return None
    return drift(name, 0.0, 0.0 if constant else 1.0, m.mean, m.std(ddof),
                 max_shift=MAX_SHIFT, max_ratio=MAX_RATIO)


def _figures(stats: FittedStats, shown: Mapping[str, Summary]
             ) -> tuple[dict[str, str], dict[str, str]]:
    figures: dict[str, str] = {}
    failed: dict[str, str] = {}
    grouped = stats.groups is not None
    for name, s in shown.items():
        fs = stats.features[name]
        band = None if grouped or fs.constant else _z_range(fs)
        missing = f", {s.moments.missing:,} missing" if s.moments.missing else ""
        try:
            figures[name] = feature_svg(name, s, training_range=band,
                                        title=f"{name}: {s.moments.count:,} values{missing}")
        except Exception as exc:  # noqa: BLE001 - a figure that fails only costs the figure
            failed[name] = f"{type(exc).__name__}: {exception_text(exc, 160)}"
    return figures, failed


def _z_range(fs: FeatureStats) -> tuple[float, float]:
    return (float(fs.min) - fs.mean) / fs.std, (float(fs.max) - fs.mean) / fs.std


def _warn_failed(failed: Mapping[str, str], warn: Callable[[str], None] | None) -> None:
    """One warning for every figure left out, naming them and the first reason."""
    import warnings

    names = list(failed)
    shown = ", ".join(f"'{n}'" for n in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    message = (f"the report leaves out the figures of {len(names)} feature(s) ({shown}{more}),"
               f" which could not be drawn ({next(iter(failed.values()))}); the output itself "
               "is complete")
    if warn is not None:
        warn(message)
    else:
        warnings.warn(message, UserWarning, stacklevel=4)


# --------------------------------------------------------------------- page
_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1400px;
padding:0 1em;color:#222}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12.5px}td,th{padding:.2em .5em;text-align:right;
vertical-align:top;border-bottom:1px solid #eee;font-variant-numeric:tabular-nums}
th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}.ref{background:#f3f3f8}
tr.drift td{background:#fff1f0}.flag{color:#b3261e;font-weight:bold}.note{color:#555}
.mono{font:12px monospace}.figures{display:flex;flex-wrap:wrap;gap:.5em 1.5em}
.manifest td,.manifest th{text-align:left}svg{max-width:100%;height:auto}"""


def _page(stats: FittedStats, shown: Mapping[str, Summary], figures: Mapping[str, str],
          failed: Mapping[str, str], manifest: Mapping[str, Any] | None, mode: str) -> str:
    e = _e
    where = (manifest or {}).get("input", {})
    source = e(str(where.get("path", ""))) if isinstance(where, Mapping) else ""
    drifts = {n: feature_drift(n, s, stats.features[n].constant, stats.ddof)
              for n, s in shown.items()}
    flagged = [n for n, d in drifts.items() if d is not None and d.flagged]
    command = e(str((manifest or {}).get("command", "")))
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
           f"<title>zscore report{' — ' + source if source else ''}</title>",
           f"<style>{_CSS}</style></head><body>\n<h1>zscore report</h1>",
           f'<p>{command + " of " if command else ""}<span class="mono">{source}</span>: '
           f"{len(shown)} feature(s) written, mode <b>{e(mode)}</b>. "
           + (f'<span class="flag">{len(flagged)} drifted</span>: '
              + ", ".join(f'<a href="#f{_index(stats, n)}">{e(n)}</a>' for n in flagged)
              if flagged else "No feature drifted.")
           + "</p>", _provenance(stats), _finishing(manifest or {}),
           f'<p class="note">{e(_NOTE)}</p>',
           "<h2>Features</h2>", _table(stats, shown, drifts)]
    if stats.groups is not None and any(s.keys for s in shown.values()):
        out += ["<h2>Per key</h2>", _keys_table(stats, shown)]
    if figures:
        out += ["<h2>Distributions</h2>", '<div class="figures">']
        out += [f'<figure id="f{_index(stats, n)}">{svg}</figure>' for n, svg in figures.items()]
        out.append("</div>")
    if failed:
        out += ["<h2>Not drawn</h2>", '<ul class="note">',
                *(f'<li><span class="mono">{e(n)}</span>: {e(why)}</li>'
                  for n, why in failed.items()), "</ul>"]
    fitted = {k: v for k, v in (("ddof", stats.ddof), ("inf", stats.inf),
                                ("created", stats.created), ("tool_version", stats.tool_version),
                                ("input", {k: v for k, v in stats.input.items()
                                           if k != "file_digests"}))  # one per file: too long
              if v or k == "ddof"}
    out += ["<h2>Manifest</h2>", _value(dict(manifest), "manifest") if manifest else
            '<p class="note">No manifest.</p>',
            "<h3>Training statistics (the reference)</h3>", _value(fitted, "manifest")]
    return "\n".join([*out, "</body></html>\n"])


def _finishing(manifest: Mapping[str, Any]) -> str:
    """The steps after scaling the run applied (:mod:`pipeline.finish`), with clipped counts."""
    clip, fill, clipped = (manifest.get(k) for k in ("clip", "fill_missing", "clipped"))
    said = [f"missing values filled with {fill:g} (counted as values below)"
            + (", indicator columns added" if manifest.get("missing_indicator") else "")
            if isinstance(fill, int | float) else ""]
    if isinstance(clip, int | float):
        counts = ", ".join(f'<span class="mono">{_e(str(n))}</span> {c:,}'
                           for n, c in (clipped or {}).items())
        said.append(f"values clipped to ±{clip:g}: {counts or 'none'}")
    said = [x for x in said if x]
    return f'<p class="clipped">After scaling: {"; ".join(said)}.</p>' if said else ""


def _provenance(stats: FittedStats) -> str:
    """Where the reference came from: the fit's input and its size."""
    src = stats.input if isinstance(stats.input, Mapping) else {}
    path, rows = src.get("path"), src.get("rows")
    what = "Reference: the training statistics" + (
        f' fitted on <span class="mono">{_e(str(path))}</span>' if path else "") + (
        f" ({rows:,} rows)" if isinstance(rows, int) else "") + (
        f", filtered by {_e(', '.join(map(str, src['filters'])))}" if src.get("filters") else "")
    return f"<p>{what}.</p>"


_NOTE = (f"z = (written value − training mean) / training σ, both after the transform (in "
         f"standard mode z is the written value). Mean and σ of z are exact (σ with the "
         f"statistics' ddof); quantiles are read off bins 1/{round(1 / STEP)} σ wide (2.2 % "
         f"of |z| past ±16σ), so each is right to within one bin. Drift: |mean z| > "
         f"{MAX_SHIFT:g} or σ z outside [1/{MAX_RATIO:g}, {MAX_RATIO:g}], zscore diff's "
         "default limits. Training statistics are in the input's units.")
_HEAD = ("count", "missing", "mean z", "σ z", *(f"{q * 100:g} %" for q in QUANTILES),
         f"beyond ±{BEYOND:g}σ", "drift")
_REF = ("count", "mean", "σ")


def _index(stats: FittedStats, name: str) -> int:
    return list(stats.features).index(name)


def _table(stats: FittedStats, shown: Mapping[str, Summary],
           drifts: Mapping[str, Drift | None]) -> str:
    e = _e
    rows = ['<table class="stats"><tr><th rowspan="2">feature</th>'
            f'<th colspan="{len(_HEAD)}">written data, in z</th>'
            f'<th colspan="{len(_REF)}" class="ref">training statistics (reference)</th></tr>',
            "<tr>" + "".join(f"<th>{h}</th>" for h in _HEAD)
            + "".join(f'<th class="ref">{h}</th>' for h in _REF) + "</tr>"]
    for name, fs in stats.features.items():
        s, d = shown.get(name), drifts.get(name)
        link = f'<a href="#f{_index(stats, name)}">{e(name)}</a>' if s is not None else e(name)
        cells = _cells(s, d, stats.ddof) if s is not None else \
            [f'<td colspan="{len(_HEAD)}" class="note">not written</td>']
        ref = [f"{fs.count:,}", _digits(fs.mean, fs.std), f"{fs.std:.6g}"]
        rows.append(('<tr class="drift">' if d is not None and d.flagged else "<tr>")
                    + f'<td class="mono">{link}</td>' + "".join(cells)
                    + "".join(f'<td class="ref">{e(v)}</td>' for v in ref) + "</tr>")
    return "\n".join([*rows, "</table>"])


def _cells(s: Summary, d: Drift | None, ddof: int) -> list[str]:
    m = s.moments
    rows = m.count + m.missing
    missing = f"{100 * m.missing / rows:.2f} %" if rows else "—"
    if not m.count:
        return [f"<td>{m.count:,}</td>", f'<td title="{m.missing:,}">{missing}</td>',
                f'<td colspan="{len(_HEAD) - 2}" class="note">no values</td>']
    numbers = [(m.mean, f"{m.mean:.4f}"), (m.std(ddof), f"{m.std(ddof):.4f}")]
    numbers += [(q, f"{q + 0.0:.2f}".replace("-0.00", "0.00"))
                for q in (s.quantile(p) for p in QUANTILES)]
    beyond = f"{100 * s.beyond / m.count:.3f} %"
    flag = "—" if d is None or not d.flagged else \
        f'<span class="flag">DRIFT</span> ({_why(d)})'
    return ([f"<td>{m.count:,}</td>", f'<td title="{m.missing:,}">{missing}</td>']
            + [f'<td title="{v!r}">{t}</td>' for v, t in numbers]
            + [f'<td title="{s.beyond:,}">{beyond}</td>', f"<td>{flag}</td>"])


def _why(d: Drift) -> str:
    """What crossed a limit: the mean, σ or both."""
    parts = (["mean"] if abs(d.shift) > MAX_SHIFT else []) + \
        (["σ"] if not 1 / MAX_RATIO <= d.ratio <= MAX_RATIO else [])
    return ", ".join(parts)


def _keys_table(stats: FittedStats, shown: Mapping[str, Summary]) -> str:
    """Per key: rows written, features whose z drifted within the key, the worst of them."""
    e = _e
    assert stats.groups is not None
    keyed = list(stats.groups.keys)  # looked up only for the keys shown (100,000: 4 s)
    labels = {len(keyed): "unseen keys (global statistics)", -1: "unseen keys (made missing)"}
    seen = sorted(set().union(*(s.keys for s in shown.values() if s.keys)))
    indices = [k for k in seen if k >= 0] + [k for k in seen if k < 0]  # unseen (-1) last
    by = e(", ".join(stats.groups.by))
    rows = [f"<table><tr><th>{by}</th><th>rows</th><th>drifted features</th>"
            "<th>largest |mean z|</th><th>σ z range</th></tr>"]
    for k in indices[:_MAX_KEYS]:
        per = {n: s.keys[k] for n, s in shown.items() if s.keys and k in s.keys}
        found = [_drift(n, m, _constant(stats, keyed, k, n), stats.ddof)
                 for n, m in per.items()]
        drifts = [d for d in found if d is not None]
        bad = [d.feature for d in drifts if d.flagged]
        worst = max(drifts, key=lambda d: abs(d.shift), default=None)
        ratios = [d.ratio for d in drifts]
        rows.append(("<tr class=\"drift\">" if bad else "<tr>")
                    + f'<td class="mono">{e(_key_label(keyed, labels, k))}</td>'
                    + f"<td>{max(m.count + m.missing for m in per.values()):,}</td>"
                    + f"<td>{e(', '.join(bad)) if bad else '—'}</td>"
                    + (f"<td>{abs(worst.shift):.3g} ({e(worst.feature)})</td>" if worst
                       else "<td>—</td>")
                    + (f"<td>{min(ratios):.3g} – {max(ratios):.3g}</td>" if ratios
                       else "<td>—</td>") + "</tr>")
    if len(indices) > _MAX_KEYS:
        rows.append(f'<tr><td colspan="5" class="note">… and {len(indices) - _MAX_KEYS:,} '
                    "more keys (all in summary.json)</td></tr>")
    return "\n".join([*rows, "</table>"])


def _key_label(keys: list[Any], special: Mapping[int, str], index: int) -> str:
    if index in special:
        return special[index]
    return ", ".join(map(str, keys[index])) if 0 <= index < len(keys) else str(index)


def _constant(stats: FittedStats, keys: list[Any], index: int, name: str) -> bool:
    """Whether feature ``name`` was constant in key ``index`` (the global fit for others)."""
    assert stats.groups is not None
    features = stats.groups.keys[keys[index]] if 0 <= index < len(keys) else {}
    return features.get(name, stats.features[name]).constant


def _e(text: str) -> str:
    """``text`` for HTML: control characters shown as escapes (the console's), then quoted."""
    return html.escape(escape(text))


def _digits(value: float, scale: float) -> str:
    """``value`` with enough digits to resolve ``scale`` (a mean of 1e9 + 2, σ 2: not 1e+09)."""
    if value == 0 or not scale > 0 or not math.isfinite(value):
        return f"{value:.4g}"
    digits = 4 + max(0, math.ceil(math.log10(abs(value) / scale)))
    return f"{value:.{min(digits, 17)}g}"


def _value(v: Any, cls: str = "") -> str:
    """Any JSON-like value as HTML: objects as key/value tables, long lists folded."""
    e = _e
    if isinstance(v, Mapping):
        attr = f' class="{cls}"' if cls else ""
        return f"<table{attr}>" + "".join(
            f'<tr><th class="mono">{e(str(k))}</th><td>{_value(x)}</td></tr>'
            for k, x in v.items()) + "</table>"
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
