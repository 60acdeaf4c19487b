"""Storage: where data lives, and the few ways zscore touches it outside the data passes.

* :class:`Location` and :func:`resolve`: local paths and fsspec URLs, resolved once,
  printed without secrets (:func:`redact`);
* small files (artifacts, manifests, cache entries, the report): :func:`read_bytes`,
  :func:`write_bytes`, :func:`atomic_write`;
* :func:`open_parquet`, the one way a data file is opened, and :func:`hidden`, the one
  rule for which files are not data;
* the names of the files zscore writes next to the data (:data:`SUCCESS`, ...).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fsspec

from .errors import InputError, option, storage_error
from .redaction import redact, remember_options, remember_secret

if TYPE_CHECKING:
    import pyarrow.parquet as pq

# The files of an output besides its data (hidden from readers by their leading '_').
SUCCESS = "_SUCCESS"  # the manifest, written last
STATS_NAME = "_stats.json"
REPORT_DIR = "_report"
MARKER = "_zscore_output.json"  # object stores: "this prefix is a zscore output"


def hidden(rel: str) -> bool:
    """True when any component of ``rel`` starts with ``.`` or ``_``.

    Parquet readers (pyarrow, Dask, Spark) ignore such files: they are not data,
    and zscore neither reads nor checks them.
    """
    return any(part.startswith((".", "_")) for part in rel.split("/"))


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
            how = option("storage_options", {"key": "ID", "secret": "SECRET"},
                         cli="key=ID --storage-option secret=SECRET")
            raise InputError(f"cannot open {redact(text)}: {scheme}:// URLs cannot carry "
                             f"credentials; pass them as storage options (for S3: {how}) or "
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


# Object stores whose fsspec drivers take everything before '/' for the bucket or
# container: a user:password@ there is a mistake that ends up in their error messages.
_NO_URL_CREDENTIALS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl"})
def _userinfo(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", ""
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return scheme.lower(), netloc.rpartition("@")[0]



# -------------------------------------------------------------- small files
def write_bytes(url: str, data: bytes, storage_options: dict | None = None) -> None:
    """Write a small file; on local disks atomically (temporary name, fsync, rename)."""
    loc = resolve(url, storage_options)
    try:
        if loc.local:
            atomic_write(loc.path, data)
        else:
            loc.fs.pipe_file(loc.path, data)
    except Exception as exc:  # noqa: BLE001 - object stores raise their own exception types
        raise storage_error(exc, "cannot write", loc.display) from None


def read_bytes(url: str, storage_options: dict | None = None) -> bytes:
    """Read a small file; FileNotFoundError passes through, other failures become errors."""
    loc = resolve(url, storage_options)
    try:
        with loc.fs.open(loc.path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - object stores raise their own exception types
        raise storage_error(exc, "cannot read", loc.display) from None


def atomic_write(path: str, data: bytes) -> None:
    """Write a local file through a temporary name, fsync, rename: all of it or nothing."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def local_tempfile(suffix: str = ".parquet") -> Iterator[str]:
    """A temporary local file for an upload, removed afterwards."""
    fd, path = tempfile.mkstemp(prefix="zscore-", suffix=suffix)
    os.close(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def open_parquet(fs: Any, path: str) -> pq.ParquetFile:
    """Open one Parquet file for reading, natively for local paths.

    A local file is read without pyarrow's pre-buffering (pyarrow's default):
    pre-buffering hands each read to Arrow's I/O threads and waits
    for them, some 150 µs per row group read even for a 100-row file, while zscore
    already reads in its own worker threads, one row group at a time
    (``use_threads=False``); see docs/benchmarks.md, "Reading without pre-buffering".
    Remote files keep it: there it coalesces ranged requests.
    """
    import pyarrow.parquet as pq

    if is_local(fs):
        return pq.ParquetFile(path, memory_map=False, pre_buffer=False)
    return pq.ParquetFile(fs.open(path, "rb", cache_type="none"), pre_buffer=True)
