"""Arrow columns as numpy arrays, zero-copy and without pandas; large arrays from Arrow's pool.

``pyarrow.Array.to_numpy`` and ``pa.scalar`` go through pyarrow's pandas shim,
which imports pandas (some 0.2 s in a fresh process) although the command line
never needs it; these read the buffers directly.  :func:`empty` is where the
kernels get the memory of their large results and temporaries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


def numpy_view(arr: Any) -> np.ndarray:
    """A zero-copy numpy view of a numeric Arrow array without nulls (its data buffer)."""
    t = arr.type
    kind = "f" if t.id in _FLOAT_IDS else "i" if t.id in _SIGNED_IDS else "u"
    dtype = np.dtype(f"{kind}{t.bit_width // 8}")
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset *
                         dtype.itemsize)


def one_array(arr: Any) -> Any:
    """An Arrow column as one array: a chunked array's only chunk as it is (``combine_chunks``
    copies even one chunk: 64 MB per file of the benchmark's size M), else the chunks joined."""
    if isinstance(arr, pa.ChunkedArray):
        return arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    return arr


def null_mask(arr: Any) -> np.ndarray:
    """True where an Arrow array is null, from its validity bitmap (no pandas on the way)."""
    if not arr.null_count:
        return np.zeros(len(arr), dtype=bool)
    bits = np.unpackbits(np.frombuffer(arr.buffers()[0], dtype=np.uint8), bitorder="little")
    return bits[arr.offset:arr.offset + len(arr)] == 0


# glibc's default mmap threshold: a larger malloc may be a fresh mapping of its own.
MMAP_THRESHOLD = 128 << 10


def empty(n: int, dtype: Any = np.float64) -> np.ndarray:
    """A new, uninitialised 1-d numpy array of ``n`` values; a large one from Arrow's pool.

    Dask's nanny starts each worker process with ``MALLOC_TRIM_THRESHOLD_=65536``
    (distributed's ``distributed.nanny.pre-spawn-environ``), which also pins
    glibc's mmap threshold at 128 KiB: every numpy array above it is then a
    fresh mapping whose pages are faulted in and zeroed, and unmapped when freed
    (a 512 KB array: 200 µs instead of 11, 129 page faults each time; see
    docs/benchmarks.md).  Arrow's default pool (mimalloc in the Linux wheels) keeps
    freed memory for the next array, whatever the environment.  The array owns a
    reference to its Arrow buffer (64-byte aligned, writable), so it is zero-copy
    when handed back to Arrow.
    """
    dtype = np.dtype(dtype)
    nbytes = n * dtype.itemsize
    if nbytes < MMAP_THRESHOLD:
        return np.empty(n, dtype=dtype)
    return np.frombuffer(pa.allocate_buffer(nbytes), dtype=dtype)


def cast(values: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """``values.astype(dtype)`` (numpy's same conversion), in memory from :func:`empty`."""
    out = empty(values.size, dtype)
    out[...] = values
    return out


def _type_ids() -> tuple[set[int], set[int]]:
    floats = {pa.float16().id, pa.float32().id, pa.float64().id}
    signed = {t().id for t in (pa.int8, pa.int16, pa.int32, pa.int64)}
    return floats, signed


_FLOAT_IDS, _SIGNED_IDS = _type_ids()
