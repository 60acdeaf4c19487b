"""Where data lives: local paths and fsspec URLs, resolved once, printed without secrets."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec

from .errors import InputError


@dataclass(frozen=True)
class Location:
    """A resolved path: the fsspec filesystem, the path inside it, and the URL as given.

    On local file systems ``path`` is the real path (symbolic links and ``..``
    resolved, as the kernel will): every overlap check, lock and staging
    directory is then about the place data really lands, whatever the spelling.
    ``display`` is the URL as given without any credentials, for messages and
    artifacts.
    """

    fs: Any
    path: str
    display: str

    @property
    def local(self) -> bool:
        return is_local(self.fs)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)


def is_local(fs: Any) -> bool:
    """True for filesystems with POSIX semantics (atomic rename, exclusive create)."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def resolve(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
            ) -> Location:
    """Resolve a local path or fsspec URL (``s3://bucket/prefix``) to a :class:`Location`."""
    text = os.fspath(url)
    try:
        fs, path = fsspec.core.url_to_fs(text, **(storage_options or {}))
    except ImportError as exc:
        raise InputError(f"cannot open {redact(text)}: {exc}; install the extra, "
                         "e.g. pip install 'zscore[s3]'") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot open {redact(text)}: {exc}") from None
    if is_local(fs):
        path = os.path.realpath(path)
    return Location(fs=fs, path=path.rstrip("/") or "/", display=redact(text))


def redact(url: str) -> str:
    """Drop ``user:password@`` from a URL so that it can be printed."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    return f"{scheme}://{netloc}{slash}{tail}"
