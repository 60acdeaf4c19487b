"""Arrow columns as numpy arrays, zero-copy and without pandas.

``pyarrow.Array.to_numpy`` and ``pa.scalar`` go through pyarrow's pandas shim,
which imports pandas (some 0.2 s in a fresh process) although the command line
never needs it; these read the buffers directly.
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


def _type_ids() -> tuple[set[int], set[int]]:
    floats = {pa.float16().id, pa.float32().id, pa.float64().id}
    signed = {t().id for t in (pa.int8, pa.int16, pa.int32, pa.int64)}
    return floats, signed


_FLOAT_IDS, _SIGNED_IDS = _type_ids()
