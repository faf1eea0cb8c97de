"""The one attention entry point. ``impl`` picks the implementation:

- ``xla``: plain einsum + mask (the reference; materialises the scores),
- ``pallas``: the fused flash-attention kernel in ``pgbench.kernels``,
- ``cudnn``: ``jax.nn.dot_product_attention`` with an explicit mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgbench.model.masks import prefix_lm_mask

MASK_VALUE = -2.3819763e38  # big_vision's fill value for masked logits
IMPLS = ("xla", "pallas", "cudnn")


def attention(q, k, v, *, q_cumsum, q_valid, k_cumsum, k_valid, q_pos=None, k_pos=None,
              softcap=None, window=None, impl="xla"):
    """Prefix-LM attention with grouped KV heads.

    q: [B, Nq, H, D], already scaled; k, v: [B, Nk, KVH, D] with H % KVH == 0 (query
    head n reads KV head n // (H // KVH)); masks as in ``prefix_lm_mask``.
    Logits, soft-cap (``softcap * tanh(s / softcap)``, before masking) and softmax in
    float32. Returns [B, Nq, H, D] in q's dtype. Rows with no visible key (padding
    queries) hold the average of V and are never meant to be read.
    """
    if impl == "xla":
        return _xla(q, k, v, q_cumsum, q_valid, k_cumsum, k_valid, q_pos, k_pos, softcap, window)
    if impl == "pallas":
        self_attn = q.shape[1] == k.shape[1] and q_cumsum is k_cumsum and q_valid is k_valid
        from pgbench import kernels
        if self_attn and window is None:
            return kernels.prefix_lm_attention(q, k, v, ar_cumsum=q_cumsum, valid=q_valid,
                                               softcap=softcap)
        if hasattr(kernels, "prefix_lm_decode_attention"):
            return kernels.prefix_lm_decode_attention(
                q, k, v, q_ar_cumsum=q_cumsum, q_valid=q_valid, k_ar_cumsum=k_cumsum,
                k_valid=k_valid, q_pos=q_pos, k_pos=k_pos, softcap=softcap, window=window)
        return _xla(q, k, v, q_cumsum, q_valid, k_cumsum, k_valid, q_pos, k_pos, softcap, window)
    if impl == "cudnn":
        mask = prefix_lm_mask(q_cumsum, q_valid, k_cumsum, k_valid, q_pos=q_pos, k_pos=k_pos,
                              window=window)
        if softcap is not None:  # cuDNN has no soft-cap: fall back to the reference
            return _xla(q, k, v, q_cumsum, q_valid, k_cumsum, k_valid, q_pos, k_pos, softcap, window)
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=1.0)
    raise ValueError(f"unknown attention implementation {impl!r}; expected one of {IMPLS}")


def _xla(q, k, v, q_cumsum, q_valid, k_cumsum, k_valid, q_pos, k_pos, softcap, window):
    b, nq, h, d = q.shape
    kvh = k.shape[2]
    qg = q.reshape(b, nq, kvh, h // kvh, d)  # group query heads by their KV head: no K/V copy
    logits = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32)
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    mask = prefix_lm_mask(q_cumsum, q_valid, k_cumsum, k_valid, q_pos=q_pos, k_pos=k_pos,
                          window=window)
    logits = jnp.where(mask[:, None, None], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, nq, h, d).astype(q.dtype)
