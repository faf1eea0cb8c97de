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
from pgbench.model.array_types import Array, Float
from pgbench.model.masks import SegmentInfo


def prefix_lm_decode_attention(q: Float[Array, "B Nq H D"], k_cache: Float[Array, "B S KVH D"],
                               v_cache: Float[Array, "B S KVH D"], q_info: SegmentInfo,
                               k_info: SegmentInfo, *, softcap=None, window=None,
                               interpret=None, block_sizes: BlockSizes | None = None
                               ) -> Float[Array, "B Nq H D"]:
    """q: [B, Nq, H, D] (pre-scaled, Nq small); k_cache, v_cache: [B, S, KVH, D];
    q_info: SegmentInfo of [B, Nq]; k_info: SegmentInfo of [B, S].

    Same mask rule and result as ``general_attention`` (invalid queries get 0), with the
    query heads that share a KV head stacked into one tile. Differentiable.
    """
    b, nq, h, d = q.shape
    kvh = k_cache.shape[2]
    if k_cache.ndim != 4 or h % kvh:
        raise ValueError(f"k_cache {k_cache.shape} does not fit q {q.shape}")
    group = h // kvh
    # [B, Nq, KVH, G, D] -> [B, G*Nq, KVH, D]: rows (g, n) share KV head, metadata tiled G times
    qg = q.reshape(b, nq, kvh, group, d).transpose(0, 3, 1, 2, 4).reshape(b, group * nq, kvh, d)
    q_tiled = SegmentInfo(*(jnp.tile(x, (1, group)) for x in q_info))
    o = general_attention(qg, k_cache, v_cache, q_tiled, k_info, softcap=softcap, window=window,
                          interpret=interpret, block_sizes=block_sizes)
    return o.reshape(b, group, nq, kvh, d).transpose(0, 2, 3, 1, 4).reshape(b, nq, h, d)
