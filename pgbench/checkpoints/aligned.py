"""Host buffers that ``jax.device_put`` adopts without copying."""

from __future__ import annotations

import numpy as np

_ALIGN = 64  # jax.device_put adopts 64-byte-aligned host buffers on CPU without copying


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary.

    Readers fill such arrays and hand them to ``jax.device_put``, which then shares the
    memory instead of copying it: loading never holds a parameter twice.
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + _ALIGN, np.uint8)
    off = (-raw.ctypes.data) % _ALIGN
    return raw[off:off + n].view(dtype).reshape(shape)
