"""The prefix-LM attention rule, in one place.

Each token carries c = cumulative sum of its auto-regressive flag (0 for image and
prefix tokens, 1 for suffix tokens). Query q may attend key k iff both are valid and
c[k] <= c[q]: image + prefix attend each other fully, the suffix is causal
(big_vision's ``make_attn_mask``).

Gemma 2's sliding window, when applied (transformers' semantics), is OR-ed with the
prefix block: a query in the prefix block (c[q] == 0) is never limited; any other query
sees only keys with q_pos - k_pos < window (prefix keys included).
"""

from __future__ import annotations

import jax.numpy as jnp


def prefix_lm_mask(q_ar_cumsum, q_valid, k_ar_cumsum, k_valid, *, q_positions=None,
                   k_positions=None, window=None):
    """bool[B, Nq, Nk] attention mask.

    q_ar_cumsum, q_valid: i32/bool[B, Nq]; k_ar_cumsum, k_valid: i32/bool[B, Nk];
    q_positions, k_positions: i32[B, Nq] / i32[B, Nk] token positions (needed only
    with ``window``); window: None, a Python int, or a traced scalar (a huge value
    disables it).
    """
    q_c, k_c = q_ar_cumsum[:, :, None], k_ar_cumsum[:, None, :]
    mask = (k_c <= q_c) & k_valid[:, None, :].astype(bool) & q_valid[:, :, None].astype(bool)
    if window is not None:
        in_window = (q_positions[:, :, None] - k_positions[:, None, :]) < window
        mask = mask & (in_window | (q_c == 0))
    return mask


def ar_cumsum(mask_ar):
    """i32[B, N] running sum of the auto-regressive flags."""
    return jnp.cumsum(mask_ar.astype(jnp.int32), axis=-1)
