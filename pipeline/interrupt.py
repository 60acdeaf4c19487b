"""Stopping on a signal, truthfully, whatever the phase of the run.

SIGTERM (Airflow, Kubernetes, ``timeout``), SIGINT (Ctrl-C) and SIGHUP (a closed
terminal) stop a run: the command line installs :func:`install`, whose handler
raises :class:`~pipeline.errors.Interrupted` in the main thread; the run then
removes its staging area, releases its lock and exits ``128 + signal``, having
published nothing.  A signal that was ignored when zscore started (``nohup``,
a shell's background job) stays ignored.

Publication is the one moment a signal must not cut in two.  :func:`publishing`
wraps it (the atomic rename of the staging directory, or the final ``_SUCCESS``
on an object store): a signal arriving inside waits.  If publication then fails
the signal stops the run as usual; once it succeeded the run *is* published,
so a signal from then on is only noted: the run finishes (removing the old
copy, releasing its lock, saving ``--stats``) and exits 0, saying that the
signal came after publication.  What the exit code says therefore always
matches what is on disk.

A second signal while the first one's clean-up runs is ignored, so that the
clean-up is never cut short (it is bounded; SIGKILL remains for the impatient,
and the next run cleans up after a SIGKILL).

:func:`checkpoint` is a test hook (``ZSCORE_TEST_PAUSE``), documented there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import Interrupted

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP")
                if hasattr(signal, name))


class _State:
    """Process-wide: signals belong to the process, not to one run."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.critical = 0  # depth of publishing() sections
        self.published: str | None = None  # what was published, once it was
        self.pending: int | None = None  # a signal that arrived inside or after publication
        self.stop: int | None = None  # a signal that stops the run (Interrupted was raised)
        self.ignoring = False  # Interrupted was raised (its clean-up runs), or the end is near


_state = _State()


def _handler(signum: int, frame: Any) -> None:
    if _state.ignoring:
        return  # the first signal's clean-up is running, or the outcome is being reported
    if _state.critical or _state.published:
        if _state.pending is None:
            _state.pending = signum
        return
    _state.ignoring = True
    _state.stop = signum
    raise Interrupted(signum)


def check() -> None:
    """Raise :class:`Interrupted` if a signal stopped the run and the run went on regardless.

    Python runs a signal handler wherever the main thread happens to be, including
    a garbage collector callback or a ``__del__`` method, where an exception is
    printed as "ignored" and dropped: the run would go on, and publish.  Hence
    these checks where the run moves forward (each task result, each phase, and
    before publishing).
    """
    if _state.stop is not None and not _state.published:
        raise Interrupted(_state.stop)


def _unraisable(hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def quiet(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Interrupted):
            return  # dropped where it was raised; check() raises it again
        hook(unraisable)

    return quiet


def install() -> Callable[[], None]:
    """Handle SIGTERM, SIGINT and SIGHUP as described above; returns a function restoring
    the previous handlers.  A no-op outside the main thread (signals go to the main thread)."""
    _state.reset()
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(hook)
    previous = {}
    for sig in SIGNALS:
        old = signal.getsignal(sig)
        if old is signal.SIG_IGN:
            continue  # nohup, or a non-interactive shell's background job: keep it so
        previous[sig] = signal.signal(sig, _handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        sys.unraisablehook = hook

    return restore


@contextlib.contextmanager
def publishing() -> Iterator[None]:
    """The act of publication: a signal arriving inside waits until it is over.

    Call :func:`mark_published` inside, right after the step that made the
    result visible.  If the section ends without it (publication failed or was
    refused), a signal that waited now stops the run.
    """
    check()
    _state.critical += 1
    try:
        yield
    except BaseException:
        _state.critical -= 1
        if not _state.published and _state.pending is not None:
            _state.ignoring = True  # this failure stops the run; the signal adds nothing
        raise
    _state.critical -= 1
    if not _state.critical and not _state.published and _state.pending is not None:
        signum, _state.pending = _state.pending, None
        _state.ignoring = True
        raise Interrupted(signum)


def hold() -> None:
    """From now on signals are ignored: the outcome is known and being reported."""
    _state.ignoring = True


def mark_published(what: str) -> None:
    """``what`` is now visible to readers: from here on a signal no longer stops the run."""
    _state.published = what


def published() -> str | None:
    """What this process published (set by :func:`mark_published`), else None."""
    return _state.published


def late_signal() -> str | None:
    """The name of a signal that arrived during or after publication (it was deferred)."""
    return signal.Signals(_state.pending).name if _state.pending is not None else None


def checkpoint(phase: str) -> None:
    """Test hook: pause at ``phase`` when ``ZSCORE_TEST_PAUSE`` names it.

    Used by the test suite to land a real signal, or to look at the real
    process (its sockets, its files), at an exact phase of a real run without
    mocks or timing guesses.  ``ZSCORE_TEST_PAUSE`` is a comma-separated list of
    phases: ``startup`` (before the cluster starts), ``locked`` (the lock is
    taken, the staging directory made), ``footers``, ``fit`` and ``transform``
    (the pass's tasks are submitted and running), ``publish`` (everything is
    written, about to publish), ``published`` (just after the atomic swap,
    before the old copy is removed and the lock released).  The process writes
    ``zscore: test pause at PHASE`` to stderr, then waits until a signal arrives
    or the file named by ``ZSCORE_TEST_RESUME`` exists (at most 120 s).  Unset,
    it costs one dictionary lookup.
    """
    check()
    wanted = os.environ.get("ZSCORE_TEST_PAUSE")
    if not wanted or phase not in wanted.split(","):
        return
    resume = os.environ.get("ZSCORE_TEST_RESUME")
    print(f"zscore: test pause at {phase}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _state.pending is None:
        if resume and os.path.exists(resume):
            break
        time.sleep(0.01)  # a signal's handler runs here, in the main thread
        check()
