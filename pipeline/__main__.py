"""The ``zscore`` command (and ``python -m pipeline``): install the signal handlers, then run.

It installs zscore's signal handlers before anything heavy is imported, so that
a signal even during the imports that follow gets zscore's one-line message and
exit code (see :mod:`pipeline.interrupt`); only the interpreter's own start-up,
a few tens of milliseconds, remains under Python's default handling.  Embedded
``--processes`` workers import this module too, early, and ignore SIGINT here.
"""

from __future__ import annotations

import signal
import sys

_mp = sys.modules.get("multiprocessing.process")
if _mp is not None and getattr(_mp.current_process(), "_inheriting", False):
    # An embedded --processes worker: multiprocessing's spawn runs the parent's main module,
    # the zscore script, again in each new worker (as __mp_main__; "_inheriting" is how
    # multiprocessing.spawn itself tells that moment).  Ctrl-C reaches the terminal's whole
    # process group; the zscore process stops its workers itself, so a worker ignores SIGINT
    # rather than die of it with a KeyboardInterrupt traceback.  Ignored, it stays ignored:
    # neither Python nor asyncio installs a handler over SIG_IGN.  (Blocking SIGINT while
    # Dask spawns them does not work: its threads and the spawned interpreters start with
    # an empty signal mask.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main() -> int:
    """Entry point of the ``zscore`` console script; returns the exit code."""
    from . import interrupt
    from .errors import Interrupted

    try:
        interrupt.install()  # for the imports below; the command's main() installs them again
        from .cli import main as cli_main
    except Interrupted as exc:
        print(f"zscore: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
