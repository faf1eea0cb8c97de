"""Small numerical building blocks shared by the image and text towers."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dense(x, w):
    """x[..., K] @ w[K, N] -> [..., N] in x's dtype, accumulated in float32.

    Asking for a float32 result is what lets XLA's CPU backend use the native bf16
    matrix instructions (a bf16-out dot runs several times slower); for float32 inputs
    it is the plain matmul.
    """
    return jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype)


def layer_norm(x, scale, bias, eps=1e-6):
    """flax LayerNorm with its "fast variance" E[x^2] - E[x]^2, statistics in float32."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.maximum(jnp.mean(xf * xf, axis=-1, keepdims=True) - mean * mean, 0.0)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale + bias).astype(x.dtype)


def rms_norm(x, scale, eps=1e-6):
    """Gemma RMSNorm, scaled by (1 + scale); statistics in float32."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (y * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


def gelu(x):
    """GELU, tanh approximation (as both towers were trained)."""
    return jax.nn.gelu(x, approximate=True)


def rope(x, positions, base=10_000.0):
    """Split-half rotary embedding. x: [B, N, H, D]; positions: i32[B, N]."""
    d = x.shape[-1]
    # Exponents as (2 / d) * i, the order of operations of big_vision's float32 RoPE.
    freq = base ** ((2.0 / d) * jnp.arange(d // 2, dtype=jnp.float32))
    angle = positions[..., None].astype(jnp.float32) / freq  # [B, N, D/2]
    sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def softcap(x, cap):
    return x if cap is None else cap * jnp.tanh(x / cap)
