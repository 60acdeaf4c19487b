"""What zscore tells the person (or the log) watching it.

On a terminal: a progress bar per pass, redrawn in place.  Anywhere else
(Airflow and Kubernetes logs): plain, timestamped, greppable lines, one every
few seconds per pass.  Everything goes to stderr; results go to stdout.

Whatever reaches a terminal or a log goes through :func:`printable`: column and
file names are data, and a name holding an escape sequence, a newline or a
bidirectional override must neither drive the terminal nor forge log lines.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

LOG_EVERY = 5.0  # seconds between progress lines in logs


# C0 controls (newline and tab included), DEL, C1 controls, the bidirectional
# embeddings, overrides, isolates and marks, the line and paragraph separators, and
# lone surrogates (the undecodable bytes of a non-UTF-8 file name).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                          "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    code = ord(c)
    if c in _NAMED:
        return _NAMED[c]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character shown as a Python-style escape (``\\x1b``).

    Backslashes are left alone, so ordinary Windows-style names stay readable.
    """
    return _UNPRINTABLE.sub(_escape, text)


def printable(text: str) -> str:
    """``text`` as it may be written to a terminal or a log: one line, no secrets.

    Credentials are removed first (:func:`pipeline.redaction.redact`), then control
    characters escaped (:func:`escape`).
    """
    from .redaction import redact

    return escape(redact(text))


def scrub_log_records() -> None:
    """Make every log record of this process printable (Dask's own logs, under ``--verbose``).

    A record factory, not a handler filter: it also covers the handlers that Dask
    and tornado install later.  Tracebacks attached to a record are formatted and
    scrubbed here too.  For the command line only: a library must not change the
    logging of the program that imports it.
    """
    import logging
    import traceback

    make = logging.getLogRecordFactory()
    if getattr(make, "zscore_scrubbed", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            record.msg, record.args = printable(record.getMessage()), None
        except Exception:  # noqa: BLE001 - a record that cannot even format stays as it is
            return record
        if record.exc_info and record.exc_info[1] is not None:
            lines = traceback.format_exception(*record.exc_info)
            record.exc_text = "\n".join(printable(line) for line in "".join(lines).splitlines())
        return record

    factory.zscore_scrubbed = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


class Console:
    """Messages and progress on stderr; ``quiet`` silences all but errors and warnings."""

    def __init__(self, *, quiet: bool = False, verbose: bool = False,
                 stream: TextIO | None = None, python_warnings: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.verbose = verbose
        self.python_warnings = python_warnings
        # Each finished pass with bytes: (label, bytes, seconds), the numbers its last
        # progress line showed, so the summary line repeats them (see rate()).
        self.passes: list[tuple[str, float, float]] = []
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    @classmethod
    def library(cls) -> Console:
        """For the Python API: silent, and warnings go through :mod:`warnings`."""
        return cls(quiet=True, python_warnings=True)

    def _line(self, text: str) -> None:
        prefix = "" if self.tty else f"{_stamp()} "
        print(f"{prefix}zscore: {printable(text)}", file=self.stream, flush=True)

    def info(self, text: str) -> None:
        if not self.quiet:
            self._line(text)

    def warn(self, text: str) -> None:
        from .errors import render

        # A warning may name an option (errors.option): a flag here, a keyword in Python.
        text = render(text, cli=not self.python_warnings)
        if self.python_warnings:
            import warnings

            warnings.warn(printable(text), UserWarning, stacklevel=3)
            return
        self._line(f"warning: {text}")

    def progress(self, label: str, total: int, total_bytes: int = 0, unit: str = "files",
                 total_rows: int = 0) -> Progress:
        return Progress(self, label, total, total_bytes, unit, total_rows)


class Progress:
    """Progress of one pass: items done, bytes, throughput and ETA."""

    def __init__(self, console: Console, label: str, total: int, total_bytes: int, unit: str,
                 total_rows: int = 0):
        self.console = console
        self.label = label
        self.total = total
        self.total_bytes = total_bytes
        self.total_rows = total_rows
        self.unit = unit
        self.done = 0
        self.done_bytes = 0
        self.done_rows = 0
        self.start = time.monotonic()
        self.finished: float | None = None  # when close() froze the elapsed time
        self._last = self.start
        self._drawn = False  # a bar is on the terminal's current line

    def update(self, items: int, nbytes: int = 0, rows: int = 0) -> None:
        self.done += items
        self.done_bytes += nbytes
        self.done_rows += rows
        now = time.monotonic()
        if self.console.quiet:
            return
        if self.console.tty:
            if now - self._last >= 0.1 or self.done == self.total:
                self._last = now
                # Marked first: a signal's Interrupted raised inside write() or flush()
                # (the main thread) must still find the line to end (see abort).
                self._drawn = True
                self.console.stream.write("\r" + self._text(bar=True) + "\x1b[K")
                self.console.stream.flush()
        elif now - self._last >= LOG_EVERY and self.done < self.total:
            self._last = now
            self.console._line(self._text(bar=False))

    def abort(self) -> None:
        """The pass failed or was stopped: end the bar's line, so the error has its own."""
        if self._drawn:
            self.console.stream.write("\n")
            self.console.stream.flush()
            self._drawn = False

    def close(self) -> None:
        self.finished = time.monotonic()
        if self.total_bytes:
            self.console.passes.append((self.label, self._done_bytes(1.0),
                                        self.finished - self.start))
        if self.console.quiet:
            return
        if self.console.tty:
            self.console.stream.write("\r" + self._text(bar=True) + "\x1b[K\n")
            self.console.stream.flush()
        else:
            self.console._line(self._text(bar=False))

    def _text(self, *, bar: bool) -> str:
        elapsed = (self.finished or time.monotonic()) - self.start
        frac = self.done / self.total if self.total else 1.0
        parts = [f"{self.label:<9}"]
        if bar:
            width = 24
            filled = int(frac * width)
            parts.append("[" + "#" * filled + "-" * (width - filled) + "]")
        parts.append(f"{self.done}/{self.total} {self.unit}")
        if self.total_rows:
            parts.append(f"{self.done_rows:,}/{self.total_rows:,} rows")
        if self.total_bytes:
            done_b = self._done_bytes(frac)
            parts.append(f"{human_bytes(done_b)}/{human_bytes(self.total_bytes)}")
            parts.append(rate(done_b, elapsed))
        if 0 < frac < 1:
            parts.append(f"ETA {elapsed * (1 - frac) / frac:.0f}s")
        else:
            parts.append(f"{elapsed:.1f}s")
        return "  ".join(parts)

    def _done_bytes(self, frac: float) -> float:
        return self.total_bytes * frac if not self.done_bytes else self.done_bytes


def rate(nbytes: float, seconds: float) -> str:
    """Throughput as the progress lines and the summary line both print it (``48.6 MB/s``)."""
    return f"{human_bytes(nbytes / max(seconds, 1e-9))}/s"
