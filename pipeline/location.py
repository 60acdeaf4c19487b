"""Where data lives: local paths and fsspec URLs, resolved once, printed without secrets."""

from __future__ import annotations

import os
import posixpath
import re
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
    """Resolve a local path or fsspec URL (``s3://bucket/prefix``) to a :class:`Location`.

    Credentials found in ``url`` or among ``storage_options`` are remembered, so
    that :func:`redact` removes them from any text printed later.

    Raises
    ------
    InputError
        An unknown protocol, a missing extra, or credentials in the URL of a store
        that does not read them from there (S3, GCS, Azure: they would be taken for
        part of the bucket name).
    """
    text = os.fspath(url)
    if not text.strip():
        raise InputError("a path is empty; give a file or directory path or a URL")
    remember_options(storage_options or {})
    scheme, userinfo = _userinfo(text)
    if userinfo:
        remember_secret(userinfo)
        remember_secret(userinfo.partition(":")[2])
        if scheme in _NO_URL_CREDENTIALS and ":" in userinfo:
            raise InputError(f"cannot open {redact(text)}: {scheme}:// URLs cannot carry "
                             "credentials; pass them as storage options (for S3: "
                             "--storage-option key=ID --storage-option secret=SECRET) or "
                             "through the store's standard environment variables")
    try:
        fs, path = fsspec.core.url_to_fs(text, **(storage_options or {}))
    except ImportError as exc:
        raise InputError(f"cannot open {redact(text)}: {redact(str(exc))}; install the extra, "
                         "e.g. pip install 'zscore[s3]'") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot open {redact(text)}: {redact(str(exc))}") from None
    if is_local(fs):
        path = os.path.realpath(path)
    return Location(fs=fs, path=path.rstrip("/") or "/", display=redact(text))


# ------------------------------------------------------------------ secrets
# Object stores whose fsspec drivers take everything before '/' for the bucket or
# container: a user:password@ there is a mistake that ends up in their error messages.
_NO_URL_CREDENTIALS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl"})
# Query parameters that carry a credential: AWS/GCS presigned URLs, Azure SAS, tokens.
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:[\w.-]*(?:sig|signature|token|secret|passw(?:or)?d|pwd|key|credential|"
    r"auth)[\w.-]*)=)[^&#\s'\"]*")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"?#]*:[^/\s@'\"?#]*@")
_SECRET_OPTION = re.compile(r"(?i)sig|token|secret|passw|pwd|key|credential|auth|sas")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY",
               "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
               "AZURE_STORAGE_CONNECTION_STRING", "AZURE_CLIENT_SECRET")
_MIN_SECRET = 6  # shorter values would blank out ordinary words; the patterns still apply
_secrets: set[str] = set()
MASK = "***"


def _userinfo(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", ""
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return scheme.lower(), netloc.rpartition("@")[0]


def remember_secret(value: Any) -> None:
    """Have :func:`redact` blank out ``value`` wherever it appears from now on."""
    if isinstance(value, str) and len(value) >= _MIN_SECRET:
        _secrets.add(value)


def remember_options(options: dict[str, Any]) -> None:
    """Remember the values of storage options whose names say they are credentials."""
    for key, value in options.items():
        if isinstance(value, dict):
            remember_options(value)  # client_kwargs, a service-account token ...
        elif _SECRET_OPTION.search(str(key)):
            remember_secret(value)


def redact(text: str) -> str:
    """``text`` without credentials, ready to be printed, logged or stored.

    Removes ``user:password@`` from URLs (``s3://***@bucket/x``), the values of
    query parameters that carry credentials (``?sig=``, ``&X-Amz-Signature=``,
    ``token=``, ``access_key=`` ...), and every credential seen so far by
    :func:`resolve` (in URLs and storage options) or held in the standard
    secret environment variables, wherever it appears: exceptions of fsspec,
    s3fs or botocore quote them in their own ways ("Invalid bucket name
    \"KEY:SECRET@bucket\"").
    """
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, text)
    known = set(_secrets)
    known.update(v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= _MIN_SECRET)
    for secret in sorted(known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text
