"""The one attention entry point. ``impl`` picks the implementation:

- ``xla``: plain einsum + mask (the reference; materialises the [Nq, Nk] scores); a
  decode step (one query per row against a cache) on one CPU device runs it in the form
  XLA's CPU backend is fast at, ``_cpu_one_query``,
- ``pallas``: the fused prefix-LM flash-attention kernels in ``pgbench.kernels``
  (``prefix_lm_attention`` for self-attention, ``prefix_lm_decode_attention`` for
  queries against a KV cache); under a mesh in context (``jax.set_mesh``) they run per
  device over its examples (``sharding.batch_parallel``),
- ``cudnn``: ``jax.nn.dot_product_attention`` with an explicit mask (no soft-cap
  support there, so soft-capped models fall back to ``xla``).

Which query may see which key is decided in one place, ``masks.prefix_lm_mask``, from
the tokens' ``SegmentInfo``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from pgbench.model.array_types import Array, Float
from pgbench.model.cpu_paths import cpu_or_default
from pgbench.model.masks import SegmentInfo, prefix_lm_mask
from pgbench.model.ops import softcap as apply_softcap

MASK_VALUE = -2.3819763e38  # big_vision's fill value for masked logits
IMPLS = ("xla", "pallas", "cudnn")
# A batch-1 decode step takes the CPU's one-query form only up to this many KV heads: with 8
# (Gemma 2 9B) or 16 (27B) the grouped form was faster at one row and slower at 8 and 32
# (benchmarks/results/decode_attention_*.md).
ONE_QUERY_MAX_KV_HEADS_AT_ONE_ROW = 4


def attention(q: Float[Array, "B Nq H D"], k: Float[Array, "B Nk KVH D"],
              v: Float[Array, "B Nk KVH D"], segment_info: SegmentInfo, *,
              kv_segment_info: SegmentInfo | None = None, softcap=None, window=None,
              impl: str = "xla") -> Float[Array, "B Nq H D"]:
    """Prefix-LM attention with grouped KV heads.

    q: [B, Nq, H, hd], already scaled; k, v: [B, Nk, KVH, hd] with H % KVH == 0
    (query head n reads KV head n // (H // KVH); K/V are never repeated in memory).
    segment_info: the queries' metadata ([B, Nq]); kv_segment_info: the keys' ([B, Nk]),
    by default the queries' (self-attention, Nq == Nk). softcap: ``softcap * tanh(s /
    softcap)`` on the logits before masking. window: sliding window on the positions,
    which limits only queries outside the prefix block (see ``prefix_lm_mask``); a
    Python int, a traced scalar or None.

    Logits and softmax in float32. Returns [B, Nq, H, hd] in q's dtype. Rows with no
    visible key (padding queries) hold the average of V (``xla``) or 0 (``pallas``)
    and are never meant to be read.
    """
    q_info = segment_info
    k_info = segment_info if kv_segment_info is None else kv_segment_info
    if kv_segment_info is None and q.shape[1] != k.shape[1]:
        raise ValueError(f"self-attention needs as many queries as keys, got {q.shape[1]} and "
                         f"{k.shape[1]}; pass kv_segment_info for the keys")
    if impl == "xla":
        if kv_segment_info is not None and q.shape[1] == 1 and (
                k.shape[2] <= ONE_QUERY_MAX_KV_HEADS_AT_ONE_ROW or q.shape[0] > 1):
            return cpu_or_default(partial(_cpu_one_query, softcap=softcap, window=window),
                                  partial(_xla, softcap=softcap, window=window),
                                  q, k, v, q_info, k_info)
        return _xla(q, k, v, q_info, k_info, softcap, window)
    if impl == "pallas":
        from pgbench import kernels  # lazily: the model must not need Pallas to import
        from pgbench.sharding import batch_parallel  # XLA cannot split a Pallas call: shard_map
        if kv_segment_info is None:
            return batch_parallel(kernels.prefix_lm_attention, q, k, v, q_info, softcap=softcap,
                                  window=window)
        # queries against a cache: the query heads sharing a KV head go in one tile
        return batch_parallel(kernels.prefix_lm_decode_attention, q, k, v, q_info, k_info,
                              softcap=softcap, window=window)
    if impl == "cudnn":
        if softcap is not None:
            return _xla(q, k, v, q_info, k_info, softcap, window)
        mask = prefix_lm_mask(q_info, k_info, window=window)
        # A fully masked row may come back as NaN from fused kernels, and 0 * NaN would
        # leak into later layers through that position's K/V: let padding queries see
        # every key instead (their outputs are never read).
        mask = mask | ~q_info.valid[:, :, None]
        use_cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=1.0,
                                            implementation="cudnn" if use_cudnn else None)
    raise ValueError(f"unknown attention implementation {impl!r}; expected one of {IMPLS}")


def _xla(q, k, v, q_info: SegmentInfo, k_info: SegmentInfo, softcap, window):
    b, nq, h, d = q.shape
    kvh = k.shape[2]
    qg = q.reshape(b, nq, kvh, h // kvh, d)  # group query heads by their KV head: no K/V copy
    logits = apply_softcap(jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32),
                           softcap)
    mask = prefix_lm_mask(q_info, k_info, window=window)
    logits = jnp.where(mask[:, None, None], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, nq, h, d).astype(q.dtype)


def _cpu_one_query(q, k, v, q_info: SegmentInfo, k_info: SegmentInfo, softcap, window):
    """``_xla`` for one query per row ([B, 1, H, hd]) on one CPU device, as decoding asks.

    XLA's CPU backend runs the grouped form's batched products (B x KVH blocks of H / KVH
    rows each, over a cache whose KV heads are interleaved) through copies and small-block
    kernels: 23-28 ms per layer at Gemma 2 2B's shapes with batch 32 (8 query heads over 4 KV
    heads, 282 slots, bf16) in two runs of the benchmark below. Here every query head is scored against every key of every KV
    head in one product per row (the cache read as its natural [B, S * KVH, hd] matrix,
    no copy), the other heads' scores are masked out before the softmax, and the
    probabilities (exact zeros on the other heads) multiply the values the same way: KVH
    times the FLOPs of a step that reads the cache once, 4-5 ms per layer there
    (benchmarks/results/decode_attention_*.md). Same logits and probabilities as ``_xla``;
    only the float32 sums' order differs. A query with no visible key gets the average of
    its own KV head's values, as in ``_xla``.
    """
    b, nq, h, d = q.shape
    s, kvh = k.shape[1], k.shape[2]
    logits = apply_softcap(jnp.einsum("bqhd,bnd->bqhn", q, k.reshape(b, s * kvh, d),
                                      preferred_element_type=jnp.float32), softcap)
    visible = prefix_lm_mask(q_info, k_info, window=window)[:, :, None, :, None]
    own_head = (jnp.arange(h)[:, None] // (h // kvh)) == jnp.arange(kvh)[None, :]
    logits = logits.reshape(b, nq, h, s, kvh)
    # -inf on other heads (not MASK_VALUE), so that a row with no visible key still
    # averages only its own head's values
    logits = jnp.where(own_head[None, None, :, None, :],
                       jnp.where(visible, logits, MASK_VALUE), -jnp.inf)
    probs = jax.nn.softmax(logits.reshape(b, nq, h, s * kvh), axis=-1).astype(v.dtype)
    out = jnp.einsum("bqhn,bnd->bqhd", probs, v.reshape(b, s * kvh, d),
                     preferred_element_type=jnp.float32)
    return out.astype(q.dtype)
