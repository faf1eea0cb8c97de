"""The prefix-LM attention rule and the per-token metadata it reads, in one place.

Each token carries c = cumulative sum of its auto-regressive flag (0 for image and
prefix tokens, 1 for suffix tokens). Query q may attend key k iff both are valid and
c[k] <= c[q]: image + prefix attend each other fully, the suffix is causal
(big_vision's ``make_attn_mask``).

Gemma 2's sliding window, when applied (transformers' semantics), is OR-ed with the
prefix block: a query in the prefix block (c[q] == 0) is never limited; any other query
sees only keys with q_pos - k_pos < window (prefix keys included).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from pgbench.model.array_types import Bool, In, Int


class SegmentInfo(NamedTuple):
    """Per-token attention metadata of a [B, N] sequence, the one argument that carries
    it through the model, the kernels and the KV cache.

    ar_cumsum: i32[B, N] running sum of the auto-regressive flags; valid: bool[B, N]
    (False: padding, or a cache slot not yet written); positions: i32[B, N] token
    positions (RoPE and the sliding window).
    """

    ar_cumsum: Int[In, "B N"]
    valid: Bool[In, "B N"]
    positions: Int[In, "B N"]

    @classmethod
    def from_masks(cls, valid, mask_ar, positions=None) -> "SegmentInfo":
        """From a validity mask and auto-regressive flags [B, N]; positions default to
        the sequence indices 0..N-1."""
        valid = jnp.asarray(valid).astype(bool)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(valid.shape[1], dtype=jnp.int32), valid.shape)
        return cls(ar_cumsum(mask_ar), valid, jnp.asarray(positions, jnp.int32))

    @classmethod
    def bidirectional(cls, batch: int, n: int) -> "SegmentInfo":
        """N valid tokens that all see each other (one prefix block: SigLIP)."""
        return cls(jnp.zeros((batch, n), jnp.int32), jnp.ones((batch, n), bool),
                   jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (batch, n)))


def prefix_lm_mask(q: SegmentInfo, k: SegmentInfo, *, window=None):
    """bool[B, Nq, Nk] attention mask of queries ``q`` over keys ``k``.

    window: None, a Python int, or a traced scalar (a huge value disables it); it reads
    the positions.
    """
    q_c, k_c = q.ar_cumsum[:, :, None], k.ar_cumsum[:, None, :]
    mask = (k_c <= q_c) & k.valid[:, None, :].astype(bool) & q.valid[:, :, None].astype(bool)
    if window is not None:
        in_window = (q.positions[:, :, None] - k.positions[:, None, :]) < window
        mask = mask & (in_window | (q_c == 0))
    return mask


def ar_cumsum(mask_ar):
    """i32[B, N] running sum of the auto-regressive flags."""
    return jnp.cumsum(jnp.asarray(mask_ar).astype(jnp.int32), axis=-1)
