"""Credentials never printed: what :func:`redact` removes from every text zscore shows.

Kept apart from :mod:`pipeline.storage` (which remembers the credentials it is
given) so that :mod:`pipeline.errors` can redact without importing storage.
"""

from __future__ import annotations

import os
import re
from typing import Any

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
