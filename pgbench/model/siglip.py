"""SigLIP ViT image encoder (So400m/14 and smaller) plus PaliGemma's linear projection.

Weights are ``[out, in]`` matrices (heads flattened head-major; the patch kernel stays
HWIO), so every projection is one 2-D matmul (``ops.dense``). Layers are stacked (leading ``depth`` axis, run with ``lax.scan``) or a
tuple of per-layer blocks (an unrolled loop); see ``layer_forms.py``. big_vision's
names map onto these fields in ``params.py``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from pgbench.config import SigLIPConfig
from pgbench.errors import InputError
from pgbench.model.attention import attention
from pgbench.model.layer_forms import run_layers
from pgbench.model.masks import SegmentInfo
from pgbench.model.ops import dense, gelu, layer_norm


class EncoderBlocks(eqx.Module):
    """Pre-LN transformer block weights; stacked, every array has a leading [L] axis too."""

    ln0_scale: jax.Array  # [C]
    ln0_bias: jax.Array  # [C]
    q_kernel: jax.Array  # [heads * head_dim, C] (every kernel [out, in], see ops.dense)
    q_bias: jax.Array  # [heads * head_dim]
    k_kernel: jax.Array
    k_bias: jax.Array
    v_kernel: jax.Array
    v_bias: jax.Array
    out_kernel: jax.Array  # [C, heads * head_dim]
    out_bias: jax.Array  # [C]
    ln1_scale: jax.Array
    ln1_bias: jax.Array
    mlp0_kernel: jax.Array  # [mlp, C]
    mlp0_bias: jax.Array  # [mlp]
    mlp1_kernel: jax.Array  # [C, mlp]
    mlp1_bias: jax.Array  # [C]


class SigLIP(eqx.Module):
    patch_kernel: jax.Array  # [P, P, 3, C] (HWIO)
    patch_bias: jax.Array  # [C]
    pos_embedding: jax.Array  # [1, N, C]
    blocks: EncoderBlocks | tuple  # stacked, or one EncoderBlocks per layer
    norm_scale: jax.Array  # [C]
    norm_bias: jax.Array  # [C]
    head_kernel: jax.Array  # [D_llm, C]
    head_bias: jax.Array  # [D_llm]
    cfg: SigLIPConfig = eqx.field(static=True)


def _block(x, p: EncoderBlocks, cfg: SigLIPConfig, impl: str):
    b, n, _ = x.shape
    heads = (b, n, cfg.num_heads, cfg.head_dim)
    h = layer_norm(x, p.ln0_scale, p.ln0_bias, cfg.layernorm_eps)
    q = (dense(h, p.q_kernel) + p.q_bias).reshape(heads)
    k = (dense(h, p.k_kernel) + p.k_bias).reshape(heads)
    v = (dense(h, p.v_kernel) + p.v_bias).reshape(heads)
    # Full bidirectional attention: one block (all flags 0), every patch valid.
    q = q / jnp.sqrt(jnp.float32(cfg.head_dim)).astype(q.dtype)  # flax divides by sqrt(hd)
    o = attention(q, k, v, SegmentInfo.bidirectional(b, n), impl=impl)
    x = x + dense(o.reshape(b, n, -1), p.out_kernel) + p.out_bias
    h = layer_norm(x, p.ln1_scale, p.ln1_bias, cfg.layernorm_eps)
    h = gelu(dense(h, p.mlp0_kernel) + p.mlp0_bias)
    return x + dense(h, p.mlp1_kernel) + p.mlp1_bias


def encode(model: SigLIP, images, *, impl: str = "xla"):
    """images f32[B, H, W, 3] in [-1, 1] -> projected image tokens f32[B, N, D_llm].

    Patchify (kernel = stride = patch, VALID) as a reshape + matmul, row-major patch order.
    """
    cfg = model.cfg
    b, hgt, wid, c = images.shape
    if (hgt, wid, c) != (cfg.image_size, cfg.image_size, 3):
        raise InputError(f"images are {hgt}x{wid}x{c}, the model expects "
                         f"{cfg.image_size}x{cfg.image_size}x3 (resize them first)")
    p, g = cfg.patch_size, cfg.grid
    x = images[:, : g * p, : g * p].astype(model.patch_kernel.dtype)
    x = x.reshape(b, g, p, g, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p * c)
    x = dense(x, model.patch_kernel.reshape(p * p * c, -1).T) + model.patch_bias
    x = x + model.pos_embedding

    x = run_layers(lambda x, layer, i: _block(x, layer, cfg, impl), x, model.blocks)
    x = layer_norm(x, model.norm_scale, model.norm_bias, cfg.layernorm_eps)
    return dense(x, model.head_kernel) + model.head_bias
