"""The exceptions zscore raises, and the exit code each one maps to.

Every error carries the offending ``path`` and/or ``column`` as typed fields and a
one-line message that says what to do.  They are raised on Dask workers too, so
they must survive a pickle round trip (see ``__reduce__``).

Exit codes (the contract schedulers script against):

* ``2`` -- :class:`InputError` and subclasses: usage errors, bad input, bad data,
  bad artifacts.  Retrying will not help.
* ``1`` -- every other :class:`ZscoreError`: infrastructure (cluster lost, disk
  full, a lock held by another run).  A retry may help.
* ``3`` -- ``zscore diff`` found drift.
* ``128 + N`` -- :class:`Interrupted`: stopped by signal N before publishing.

Messages speak the library's language: an option is named through
:func:`option`, which keeps it as data; ``str(error)`` names it as a Python
keyword (``inf='null'``), :meth:`ZscoreError.render` with ``cli=True`` as a flag
(``--inf null``), and ``error.options`` lists the options named.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

EXIT_OTHER = 1  # infrastructure: a retry may help
EXIT_INPUT = 2  # bad input, data, usage or artifact: do not retry
EXIT_DRIFT = 3  # zscore diff: a feature drifted past the limits

# Python keywords whose command-line flag is not simply --keyword-with-dashes.
_FLAGS = {"filters": "--filter", "storage_options": "--storage-option",
          "stats_path": "--stats"}
_OPTION = re.compile("\x1f([^\x1e\x1f]*)\x1e([^\x1e\x1f]*)\x1e([^\x1e\x1f]*)\x1f")
_NO_VALUE = object()


def option(name: str, value: Any = _NO_VALUE, *, cli: str | None = None) -> str:
    """An option named inside an error message, kept as data until the message is shown.

    ``name`` is the Python keyword (``group_by``); ``value`` (optional) what to pass.
    On the command line it reads ``--group-by VALUE`` (``cli``: the value as it must
    be typed there, default the value quoted for a shell, a comma inside a name
    written ``\\,``); in Python ``group_by='VALUE'``, or the bare keyword without a value.
    """
    if value is _NO_VALUE:
        return f"\x1f{name}\x1e\x1e\x1f"
    if cli is None:
        cli = shlex.quote(str(value).replace(",", "\\,")) if isinstance(value, str) \
            else str(value)
    return f"\x1f{name}\x1e{cli}\x1e{value!r}\x1f"


def render(message: str, *, cli: bool = False) -> str:
    """``message`` with its options named as flags (``cli``) or as Python keywords."""
    def one(m: re.Match[str]) -> str:
        name, typed, python = m.groups()
        if cli:
            flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
            return f"{flag} {typed}" if typed else flag
        return f"{name}={python}" if python else name

    return _OPTION.sub(one, message)


def options_in(message: str) -> list[str]:
    """The Python keywords of the options a message names, in order."""
    return [m.group(1) for m in _OPTION.finditer(message)]


class ZscoreError(Exception):
    """Base class of every error zscore reports to the user.

    Parameters
    ----------
    message : str
        One line: what is wrong, naming the file and/or column, and what to do.
    path : str, optional
        The file (relative to the dataset root where there is one) at fault.
    column : str, optional
        The column at fault.
    """

    exit_code = EXIT_OTHER

    def __init__(self, message: str, *, path: str | None = None, column: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.column = column

    @property
    def options(self) -> list[str]:
        """The options (Python keywords) the message tells the user to change or pass."""
        return options_in(self.message)

    def render(self, *, cli: bool = False) -> str:
        """The message, naming options as command-line flags (``cli``) or Python keywords."""
        return render(self.message, cli=cli)

    def __str__(self) -> str:
        return render(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields are not restored by the default Exception pickling.
        return (_rebuild, (type(self), self.message, self.path, self.column, self.__dict__))


def _rebuild(cls: type[ZscoreError], message: str, path: str | None, column: str | None,
             state: dict[str, Any]) -> ZscoreError:
    err = cls.__new__(cls)
    ZscoreError.__init__(err, message, path=path, column=column)
    err.__dict__.update(state)
    return err


class InputError(ZscoreError):
    """Bad input, bad data or bad usage: exit code 2, do not retry."""

    exit_code = EXIT_INPUT


class DataError(InputError):
    """A data file is unreadable, or its schema or values cannot be used."""


class ArtifactError(InputError):
    """A statistics artifact is malformed or does not fit the data."""


class OutputError(InputError):
    """The output location is unusable (exists, overlaps the input, ...)."""


class LockedError(ZscoreError):
    """Another run holds the output's lock: exit code 1, retry later."""


class ClusterError(ZscoreError):
    """The Dask cluster failed or was lost: exit code 1, a retry may help."""


class StorageError(ZscoreError):
    """Writing failed for an infrastructure reason (disk full, permissions): exit 1."""


class Interrupted(BaseException):  # noqa: N818 - it is a signal, not a failure
    """The run was stopped by a signal before it published anything.

    A ``BaseException``, as ``KeyboardInterrupt`` is: no ``except Exception`` on
    the way (ours, Dask's, fsspec's) may swallow it.  ``exit_code`` is 128 + the
    signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
    """

    def __init__(self, signum: int = 15):
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        self.message = f"stopped by {signal.Signals(signum).name}; nothing was published"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (Interrupted, (self.signum,))


def os_error_text(exc: OSError) -> str:
    """The OS's words for an error ("No space left on device"), also when Arrow wrapped it."""
    import os
    import re

    if exc.errno:
        return os.strerror(exc.errno)
    match = re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)
    if match:
        return os.strerror(int(match.group(1)))
    return exc.strerror or exception_text(exc)


def exception_text(exc: BaseException, limit: int = 200) -> str:
    """A library exception's message on one line, without credentials, at most ``limit`` long.

    Credentials are removed before the text is cut, so that no prefix of a secret
    survives the cut.
    """
    from .redaction import redact

    text = redact(" ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


_BAD_CREDENTIALS = ("Credential", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "InvalidToken")


# botocore's words for a URL or an option it cannot use: retrying will not help.
_BAD_SETTINGS = ("ParamValidationError", "EndpointResolutionError", "InvalidEndpointError")


def storage_error(exc: BaseException, action: str, display: str) -> ZscoreError:
    """Turn a filesystem or object-store exception into a one-line :class:`ZscoreError`.

    Missing paths, a directory where a file belongs (or the reverse) and unusable
    credentials or settings are bad input (exit 2: retrying will not help);
    anything else, a permission refused, a connection reset or a full disk
    included, is exit 1.  ``display`` must already be free of secrets.
    """
    if isinstance(exc, ZscoreError):
        return exc
    text = exception_text(exc)
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{display} does not exist", path=display)
    if isinstance(exc, IsADirectoryError | NotADirectoryError):
        return InputError(f"{action} {display}: {os_error_text(exc)}; give the path of a "
                          "file", path=display)
    if type(exc).__name__ in _BAD_SETTINGS:
        return InputError(f"{action} {display}: {type(exc).__name__}: {text}; check the URL "
                          "and the storage options", path=display)
    if any(d in type(exc).__name__ + text for d in _BAD_CREDENTIALS):
        return InputError(f"{action} {display}: bad credentials ({text}); check the AWS_* "
                          f"environment variables, profiles, or {option('storage_options')}",
                          path=display)
    if isinstance(exc, OSError):
        return StorageError(f"{action} {display}: {os_error_text(exc)}", path=display)
    return StorageError(f"{action} {display}: {type(exc).__name__}: {text}", path=display)
