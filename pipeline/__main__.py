"""The ``zscore`` command (and ``python -m pipeline``): install the signal handlers, then run.

This module is imported before anything heavy, by the console script and by
every embedded ``--processes`` worker (multiprocessing's spawn runs the
parent's main module again in each new worker, as ``__mp_main__``).  In the
command it installs zscore's signal handlers first, so that a signal even
during the imports that follow gets zscore's one-line message and exit code
(see :mod:`pipeline.interrupt`); only the interpreter's own start-up, a few
tens of milliseconds, remains under Python's default handling.
"""

from __future__ import annotations

import signal
import sys

_mp = sys.modules.get("multiprocessing.process")
if _mp is not None and getattr(_mp.current_process(), "_inheriting", False):
    # (multiprocessing's own test for "a spawned child preparing to run", as in
    # multiprocessing.spawn._check_not_importing_main; sys.argv is the parent's by now.)
    # An embedded --processes worker.  Ctrl-C reaches the terminal's whole process group;
    # the zscore process stops its workers itself, so a worker ignores SIGINT rather than
    # die of it with a KeyboardInterrupt traceback.  Ignored, it stays ignored: neither
    # Python nor asyncio installs a handler over SIG_IGN.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main() -> int:
    """Entry point of the ``zscore`` console script; returns the exit code."""
    from . import interrupt
    from .errors import Interrupted

    restore = interrupt.install()
    try:
        from .cli import main as cli_main
    except Interrupted as exc:
        print(f"zscore: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:
        restore()
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
