"""The one attention entry point. ``impl`` picks the implementation:

- ``xla``: plain einsum + mask (the reference; materialises the [Nq, Nk] scores),
- ``pallas``: the fused prefix-LM flash-attention kernels in ``pgbench.kernels``
  (``prefix_lm_attention`` for self-attention, ``prefix_lm_decode_attention`` for
  queries against a KV cache),
- ``cudnn``: ``jax.nn.dot_product_attention`` with an explicit mask (no soft-cap
  support there, so soft-capped models fall back to ``xla``).

Which query may see which key is decided in one place, ``masks.prefix_lm_mask``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgbench.model.masks import prefix_lm_mask

MASK_VALUE = -2.3819763e38  # big_vision's fill value for masked logits
IMPLS = ("xla", "pallas", "cudnn")


def attention(q, k, v, *, ar_cumsum, valid, q_ar_cumsum=None, q_valid=None, softcap=None,
              window=None, q_positions=None, k_positions=None, impl: str = "xla"):
    """Prefix-LM attention with grouped KV heads.

    q: [B, Nq, H, hd], already scaled; k, v: [B, Nk, KVH, hd] with H % KVH == 0
    (query head n reads KV head n // (H // KVH); K/V are never repeated in memory).
    ar_cumsum: i32[B, Nk] running sum of the auto-regressive flags of the keys;
    valid: bool[B, Nk]. ``q_ar_cumsum`` / ``q_valid`` ([B, Nq]) default to the keys'
    (self-attention, Nq == Nk). softcap: ``softcap * tanh(s / softcap)`` on the logits
    before masking. window: sliding window on positions (``q_positions`` /
    ``k_positions``, i32[B, Nq] / [B, Nk]; sequence indices when omitted), which limits
    only queries outside the prefix block (see ``prefix_lm_mask``); a Python int, a
    traced scalar or None.

    Logits and softmax in float32. Returns [B, Nq, H, hd] in q's dtype. Rows with no
    visible key (padding queries) hold the average of V and are never meant to be read.
    """
    self_attn = q_ar_cumsum is None
    if self_attn:
        if q.shape[1] != k.shape[1]:
            raise ValueError(f"self-attention needs as many queries as keys, got "
                             f"{q.shape[1]} and {k.shape[1]}; pass q_ar_cumsum/q_valid")
        q_ar_cumsum, q_valid = ar_cumsum, valid
    elif q_valid is None:
        raise ValueError("q_valid is required together with q_ar_cumsum")
    if window is not None and (q_positions is None or k_positions is None):
        q_positions = _indices(q_ar_cumsum) if q_positions is None else q_positions
        k_positions = _indices(ar_cumsum) if k_positions is None else k_positions

    if impl == "xla":
        return _xla(q, k, v, q_ar_cumsum, q_valid, ar_cumsum, valid, q_positions, k_positions,
                    softcap, window)
    if impl == "pallas":
        from pgbench import kernels  # lazily: the model must not need Pallas to import
        if self_attn:
            # The kernel windows on sequence indices; in every self-attention call here
            # (scoring forward, right-aligned prefill) real tokens are contiguous, so
            # index differences equal position differences.
            return kernels.prefix_lm_attention(q, k, v, ar_cumsum=ar_cumsum, valid=valid,
                                               softcap=softcap, window=window)
        return kernels.prefix_lm_decode_attention(
            q, k, v, q_ar_cumsum=q_ar_cumsum, k_ar_cumsum=ar_cumsum, k_valid=valid,
            q_valid=q_valid, q_pos=q_positions, k_pos=k_positions, softcap=softcap,
            window=window)
    if impl == "cudnn":
        if softcap is not None:
            return _xla(q, k, v, q_ar_cumsum, q_valid, ar_cumsum, valid, q_positions,
                        k_positions, softcap, window)
        mask = prefix_lm_mask(q_ar_cumsum, q_valid, ar_cumsum, valid, q_positions=q_positions,
                              k_positions=k_positions, window=window)
        # A fully masked row may come back as NaN from fused kernels, and 0 * NaN would
        # leak into later layers through that position's K/V: let padding queries see
        # every key instead (their outputs are never read).
        mask = mask | ~q_valid[:, :, None]
        use_cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=1.0,
                                            implementation="cudnn" if use_cudnn else None)
    raise ValueError(f"unknown attention implementation {impl!r}; expected one of {IMPLS}")


def _indices(ref):
    return jnp.broadcast_to(jnp.arange(ref.shape[1], dtype=jnp.int32), ref.shape)


def _xla(q, k, v, q_cumsum, q_valid, k_cumsum, k_valid, q_pos, k_pos, softcap, window):
    b, nq, h, d = q.shape
    kvh = k.shape[2]
    qg = q.reshape(b, nq, kvh, h // kvh, d)  # group query heads by their KV head: no K/V copy
    logits = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32)
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    mask = prefix_lm_mask(q_cumsum, q_valid, k_cumsum, k_valid, q_positions=q_pos,
                          k_positions=k_pos, window=window)
    logits = jnp.where(mask[:, None, None], logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, nq, h, d).astype(q.dtype)
