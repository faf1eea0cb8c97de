"""Decode: a few query tokens against a KV cache with its own metadata.

With one query per head the (batch, head, query tile) grid would have one live row
per tile. Instead the ``group = H // KVH`` query heads that share a KV head are
stacked into the rows of one tile (rows ordered head-major), so each KV head's cache
is streamed once per step for all its query heads (MQA: all of them), and the same
forward/backward kernels run unchanged with H' = KVH.
"""

from __future__ import annotations

import jax.numpy as jnp

from pgbench.kernels.attention import general_attention
from pgbench.kernels.blocks import BlockSizes


def prefix_lm_decode_attention(q, k_cache, v_cache, *, q_ar_cumsum, k_ar_cumsum, k_valid,
                               q_valid=None, q_pos=None, k_pos=None, softcap=None, window=None,
                               interpret=None, block_sizes: BlockSizes | None = None):
    """q: [B, Nq, H, D] (pre-scaled, Nq small); k_cache, v_cache: [B, S, KVH, D];
    q_ar_cumsum, q_valid, q_pos: [B, Nq]; k_ar_cumsum, k_valid, k_pos: [B, S].

    Same mask rule as ``prefix_lm_attention`` but with explicit positions (needed only
    with ``window``). Returns [B, Nq, H, D]; invalid queries get 0. Differentiable.
    """
    b, nq, h, d = q.shape
    kvh = k_cache.shape[2]
    if k_cache.ndim != 4 or h % kvh:
        raise ValueError(f"k_cache {k_cache.shape} does not fit q {q.shape}")
    group = h // kvh
    if q_valid is None:
        q_valid = jnp.ones((b, nq), bool)
    # [B, Nq, KVH, G, D] -> [B, G*Nq, KVH, D]: rows (g, n) share KV head, metadata tiled G times
    qg = q.reshape(b, nq, kvh, group, d).transpose(0, 3, 1, 2, 4).reshape(b, group * nq, kvh, d)

    def tile(x):
        return None if x is None else jnp.tile(x, (1, group))

    o = general_attention(qg, k_cache, v_cache, q_cumsum=tile(q_ar_cumsum), q_valid=tile(q_valid),
                          k_cumsum=k_ar_cumsum, k_valid=k_valid, q_pos=tile(q_pos), k_pos=k_pos,
                          softcap=softcap, window=window, interpret=interpret,
                          block_sizes=block_sizes)
    return o.reshape(b, group, nq, kvh, d).transpose(0, 2, 3, 1, 4).reshape(b, nq, h, d)
