"""Plain-jnp prefix-LM attention: the independent reference the kernel tests use.

Materialises the full f32 score matrix; the mask is built directly from the rule
(not from the kernel's folded metadata). Rows that see no key return 0, the kernel's
convention (the model's ``xla`` path instead returns an average there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgbench.model.array_types import Array, Float
from pgbench.model.masks import SegmentInfo


def reference_mask(q_info: SegmentInfo, k_info: SegmentInfo, window=None):
    """bool[B, Nq, Nk]."""
    qc, kc = q_info.ar_cumsum[:, :, None], k_info.ar_cumsum[:, None, :]
    m = (kc <= qc) & q_info.valid[:, :, None] & k_info.valid[:, None, :]
    if window is not None:
        near = (q_info.positions[:, :, None] - k_info.positions[:, None, :]) < window
        m = m & (near | (qc == 0))
    return m


def reference_attention(q: Float[Array, "B Nq H D"], k: Float[Array, "B Nk KVH D"],
                        v: Float[Array, "B Nk KVH D"], q_info: SegmentInfo,
                        k_info: SegmentInfo | None = None, *, softcap=None,
                        window=None) -> Float[Array, "B Nq H D"]:
    """q: [B, Nq, H, D]; k, v: [B, Nk, KVH, D]; q_info / k_info (default q_info):
    SegmentInfo of [B, Nq] / [B, Nk] -> [B, Nq, H, D] (q's dtype)."""
    k_info = q_info if k_info is None else k_info
    h, kvh = q.shape[2], k.shape[2]
    kr = jnp.repeat(k, h // kvh, axis=2).astype(jnp.float32)
    vr = jnp.repeat(v, h // kvh, axis=2).astype(jnp.float32)
    s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), kr,
                   precision=jax.lax.Precision.HIGHEST)
    if softcap is not None:
        s = softcap * jnp.tanh(s / softcap)
    mask = reference_mask(q_info, k_info, window)[:, None]
    s = jnp.where(mask, s, -jnp.inf)
    any_ = jnp.any(mask, axis=-1, keepdims=True)
    p = jnp.exp(s - jnp.where(any_, jnp.max(s, axis=-1, keepdims=True), 0.0))
    p = jnp.where(mask, p, 0.0)
    p = p / jnp.where(any_, jnp.sum(p, axis=-1, keepdims=True), 1.0)
    o = jnp.einsum("bhqk,bkhd->bqhd", p, vr, precision=jax.lax.Precision.HIGHEST)
    return o.astype(q.dtype)
