"""Reordering a parameter array inside its own memory (one small block of scratch).

The big_vision layout differs from the model's ([in, out] kernels, a [L, 2, D, F] gating
array); converting a multi-GB checkpoint with plain transposes would hold each array
twice. These do it in the reader's buffer, which the model then adopts.
"""

from __future__ import annotations

import numpy as np


def transpose_in_place(a: np.ndarray) -> np.ndarray:
    """Transpose every [m, n] block of a C-contiguous [..., m, n] array in its own memory
    (one block of scratch at a time: each block keeps its place in the buffer) and
    return the C-contiguous [..., n, m] view."""
    m, n = a.shape[-2:]
    blocks, flat = a.reshape(-1, m, n), a.reshape(-1, m * n)
    scratch = np.empty((n, m), a.dtype)
    for i in range(blocks.shape[0]):
        for r in range(0, m, 64):  # row panels: ~5x faster than one strided .T copy
            scratch[:, r:r + 64] = blocks[i, r:r + 64].T
        flat[i] = scratch.reshape(-1)
    return flat.reshape(*a.shape[:-2], n, m)


def pairs_first(a: np.ndarray) -> np.ndarray:
    """Reorder a C-contiguous [L, 2, ...] array to [2, L, ...] in its own memory (one
    block of scratch, following the permutation's cycles), so its two halves are each
    contiguous without a second copy of the array. Returns the [2, L, ...] view."""
    L = a.shape[0]
    blocks = a.reshape(2 * L, -1)  # block 2 * i + j holds (layer i, half j)
    done = np.zeros(2 * L, bool)
    for start in range(2 * L):
        if done[start]:
            continue
        scratch = blocks[start].copy()
        q = start
        while True:  # fill slot q = j * L + i with block 2 * i + j
            p = 2 * (q % L) + q // L
            done[q] = True
            if p == start:
                blocks[q] = scratch
                break
            blocks[q] = blocks[p]
            q = p
    return a.reshape(2, L, *a.shape[2:])
