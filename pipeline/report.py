"""The run report: a static HTML page of per-feature distributions before and after.

:func:`render` writes ``histograms.json`` (so the page can be drawn again
without reading the data, see :func:`read_histograms`), one
``feature-<name>.png`` per feature (the "before" and "after" histograms side by
side, smoothed, mean and ±σ marked), ``variances.png`` (variance before and
after, log scale) and ``index.html`` (no scripts or external styles: the
images, a table of the fitted statistics and the run's manifest).

The pictures come from :mod:`pipeline.plots` (matplotlib's object API, never
pyplot's global state), so rendering is safe in threads.  Nothing depends on
the time or the matplotlib version: rendering the same inputs again with the same
libraries writes the same bytes.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from .artifact import FittedStats
from .choices import MODES
from .errors import ArtifactError, InputError, exception_text
from .histogram import FeatureHistograms
from .plots import digits, feature_png, variances_png
from .redaction import redact
from .storage import atomic_write

HISTOGRAMS_NAME = "histograms.json"
INDEX_NAME = "index.html"
VARIANCES_NAME = "variances.png"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_STEM = 80  # characters; keeps file names far below the usual 255-byte limit


def available() -> bool:
    """True when matplotlib can be imported, i.e. :func:`render` can work."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def render(directory: str | os.PathLike[str], stats: FittedStats,
           histograms: Mapping[str, FeatureHistograms], *,
           manifest: Mapping[str, Any] | None = None, mode: str = "standard",
           warn: Callable[[str], None] | None = None) -> list[str]:
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
    warn : callable, optional
        Told, in one line, about each picture that could not be drawn (the page
        then says so in its place); default :func:`warnings.warn`.

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
    files = build(stats, histograms, manifest=manifest, mode=mode, warn=warn)
    for rel, data in files.items():
        atomic_write(os.path.join(os.fspath(directory), rel), data)
    return list(files)


def build(stats: FittedStats, histograms: Mapping[str, FeatureHistograms], *,
          manifest: Mapping[str, Any] | None = None, mode: str = "standard",
          warn: Callable[[str], None] | None = None) -> dict[str, bytes]:
    """The report's files (name -> content, ``index.html`` last), as :func:`render` writes them.

    For callers that publish the files themselves (the run's commit protocol).  A
    picture that cannot be drawn is left out with a warning naming it, never an
    error: the report must not cost the user their normalized data.
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
    saved = {n: histograms[n].to_dict() for n in plotted}
    files = {HISTOGRAMS_NAME: (json.dumps(saved, indent=1, allow_nan=False) + "\n").encode()}
    images: dict[str, str] = {}
    failed: dict[str, str] = {}  # feature ("" for the variance chart) -> why
    for name in plotted:
        drawn = _draw(partial(feature_png, name, stats.features[name], histograms[name], mode),
                      failed, name)
        if drawn is not None:
            images[name] = f"feature-{stems[name]}.png"
            files[images[name]] = drawn
    variances = None
    if plotted:
        variances = _draw(lambda: variances_png([(n, stats.features[n]) for n in plotted],
                                                mode), failed, "")
        if variances is not None:
            files[VARIANCES_NAME] = variances
    if failed:
        _warn_failed(failed, warn)
    # The page goes last, so it never points at an image that is not there yet.
    # redact: a hand-written artifact's input path is shown too, and may hold a password.
    files[INDEX_NAME] = redact(_page(stats, images, manifest, mode, failed,
                                     variances is not None)).encode("utf-8")
    return files


def _draw(draw: Callable[[], bytes], failed: dict[str, str], key: str) -> bytes | None:
    """``draw()``, or None (and why, in ``failed[key]``) when it fails."""
    import warnings

    try:
        with warnings.catch_warnings():
            # A glyph missing from the font and the like: noise on stderr, not our message.
            warnings.simplefilter("ignore")
            return draw()
    except Exception as exc:  # noqa: BLE001 - any drawing failure only costs a picture
        failed[key] = f"{type(exc).__name__}: {exception_text(exc, 160)}"
        return None


def _warn_failed(failed: Mapping[str, str], warn: Callable[[str], None] | None) -> None:
    """One warning for every picture left out, naming them and the first reason."""
    import warnings

    names = [n for n in failed if n]
    what = []
    if names:
        shown = ", ".join(f"'{n}'" for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        what.append(f"the histograms of {len(names)} feature(s) ({shown}{more})")
    if "" in failed:
        what.append("the variance chart")
    message = (f"the report leaves out {' and '.join(what)}, which could not be drawn "
               f"({next(iter(failed.values()))}); the output itself is complete")
    if warn is not None:
        warn(message)
    else:
        warnings.warn(message, UserWarning, stacklevel=4)


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
          manifest: Mapping[str, Any] | None, mode: str,
          failed: Mapping[str, str] | None = None, variances: bool = True) -> str:
    e = html.escape
    where = (manifest or {}).get("input", stats.input)
    source = e(str(where.get("path", ""))) if isinstance(where, Mapping) else ""
    fitted = {k: v for k, v in (("ddof", stats.ddof), ("inf", stats.inf),
                                ("created", stats.created), ("tool_version", stats.tool_version),
                                ("input", {k: v for k, v in stats.input.items()
                                           if k != "file_digests"}))  # one per file: too long
              if v or k == "ddof"}
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
           f"<title>zscore report{' — ' + source if source else ''}</title>",
           f"<style>{_CSS}</style></head><body>\n<h1>zscore report</h1>",
           f'<p class="note">{len(stats.features)} features · mode <b>{e(mode)}</b>'
           + (f' · input <span class="mono">{source}</span>' if source else "") + "</p>",
           "<h2>Run</h2>", _value(manifest) if manifest else '<p class="note">No manifest.</p>',
           "<h2>Fitted statistics</h2>", _value(fitted), _table(stats, images)]
    if failed:
        what = {n: f'feature <span class="mono">{e(n)}</span>' if n else "the variance chart"
                for n in failed}
        out += ["<h2>Not drawn</h2>", '<ul class="note">',
                *(f"<li>{what[n]}: {e(reason)}</li>" for n, reason in failed.items()), "</ul>"]
    if variances:
        out += ["<h2>Variance before and after</h2>",
                f'<img src="{VARIANCES_NAME}" alt="variance per feature, log scale">']
    if images:
        out += [f'<h2>Distributions</h2>\n<p class="note">{e(_NOTE)}</p>\n<div class="figures">']
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
        numbers = [(fs.mean, digits(fs.mean, fs.std)), (fs.std, f"{fs.std:.6g}")] + [
            (v, f"{v:,}" if isinstance(v, int) else digits(v, fs.std))
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
