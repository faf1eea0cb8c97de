"""Gemma 1 / Gemma 2 decoder with an explicit KV cache.

Layers are stacked (leading ``depth`` axis) and run with ``lax.scan``; Gemma 2's
alternating local/global layers are a scanned boolean, not a Python branch. Parameter
layouts are big_vision's (``llm/...``).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pgbench.config import GemmaConfig
from pgbench.model.attention import attention
from pgbench.model.ops import gelu, rms_norm, rope, softcap

NO_WINDOW = np.iinfo(np.int32).max


class DecoderBlocks(eqx.Module):
    """Stacked decoder blocks; every array has a leading [L] axis."""

    pre_attention_norm: jax.Array  # [L, D]
    q_einsum: jax.Array  # [L, H, D, hd]
    kv_einsum: jax.Array  # [L, 2, KVH, D, hd] (0: K, 1: V)
    attn_vec_einsum: jax.Array  # [L, H, hd, D]
    pre_ffw_norm: jax.Array  # [L, D]
    gating_einsum: jax.Array  # [L, 2, D, F] (0: GELU gate, 1: up)
    linear: jax.Array  # [L, F, D]
    post_attention_norm: jax.Array | None  # [L, D], Gemma 2 only
    post_ffw_norm: jax.Array | None  # [L, D], Gemma 2 only


class Gemma(eqx.Module):
    input_embedding: jax.Array  # [V, D], tied with the output layer
    blocks: DecoderBlocks
    final_norm: jax.Array  # [D]
    cfg: GemmaConfig = eqx.field(static=True)


class KVCache(NamedTuple):
    """Keys/values of every layer plus per-slot attention metadata.

    k, v: [L, B, S, KVH, hd] (already rotated keys); cumsum: i32[B, S] auto-regressive
    running sum; valid: bool[B, S]; pos: i32[B, S] RoPE positions.
    """

    k: jax.Array
    v: jax.Array
    cumsum: jax.Array
    valid: jax.Array
    pos: jax.Array


def empty_cache(cfg: GemmaConfig, batch: int, size: int, dtype=jnp.float32) -> KVCache:
    shape = (cfg.depth, batch, size, cfg.num_kv_heads, cfg.head_dim)
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                   cumsum=jnp.zeros((batch, size), jnp.int32),
                   valid=jnp.zeros((batch, size), bool), pos=jnp.zeros((batch, size), jnp.int32))


def embed_tokens(model: Gemma, tokens):
    """i32[B, T] -> [B, T, D]: embedding rows times sqrt(D) (big_vision's text scale)."""
    x = jnp.take(model.input_embedding, tokens, axis=0)
    return x * jnp.sqrt(jnp.float32(model.cfg.width)).astype(x.dtype)


def _layer_windows(cfg: GemmaConfig):
    """i32[L]: the window of each layer (NO_WINDOW where none applies)."""
    if not (cfg.apply_sliding_window and cfg.sliding_window):
        return None
    return jnp.asarray([cfg.sliding_window if cfg.layer_is_local(i) else NO_WINDOW
                        for i in range(cfg.depth)], jnp.int32)


def run_blocks(model: Gemma, x, *, q_pos, q_cumsum, q_valid, cache: KVCache | None = None,
               write_index=None, impl: str = "xla"):
    """Run every decoder block.

    x: [B, N, D]; q_pos, q_cumsum: i32[B, N]; q_valid: bool[B, N].
    Without a cache, the N tokens attend each other. With a cache whose metadata already
    describes slots [write_index, write_index + N), their K/V are written there and the
    tokens attend the whole cache. Returns (h [B, N, D], updated cache or None).
    """
    cfg = model.cfg
    windows = _layer_windows(cfg)

    def block(x, layer: DecoderBlocks, window, k_cache, v_cache):
        h = rms_norm(x, layer.pre_attention_norm, cfg.norm_eps)
        q = jnp.einsum("bnd,hdk->bnhk", h, layer.q_einsum)
        k = jnp.einsum("bnd,hdk->bnhk", h, layer.kv_einsum[0])
        v = jnp.einsum("bnd,hdk->bnhk", h, layer.kv_einsum[1])
        q = rope(q, q_pos, cfg.rope_base) * jnp.asarray(cfg.query_scale, q.dtype)
        k = rope(k, q_pos, cfg.rope_base)
        if k_cache is None:
            keys, values = k, v
            k_cumsum, k_valid, k_pos = q_cumsum, q_valid, q_pos
        else:
            k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), write_index, 1)
            v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), write_index, 1)
            keys, values = k_cache, v_cache
            k_cumsum, k_valid, k_pos = cache.cumsum, cache.valid, cache.pos
        o = attention(q, keys, values, q_cumsum=q_cumsum, q_valid=q_valid, k_cumsum=k_cumsum,
                      k_valid=k_valid, q_pos=q_pos, k_pos=k_pos,
                      softcap=cfg.attn_logits_softcap, window=window, impl=impl)
        o = jnp.einsum("bnhk,hkd->bnd", o.astype(x.dtype), layer.attn_vec_einsum)
        if layer.post_attention_norm is not None:
            o = rms_norm(o, layer.post_attention_norm, cfg.norm_eps)
        x = x + o
        h = rms_norm(x, layer.pre_ffw_norm, cfg.norm_eps)
        f = gelu(h @ layer.gating_einsum[0]) * (h @ layer.gating_einsum[1])
        f = f @ layer.linear
        if layer.post_ffw_norm is not None:
            f = rms_norm(f, layer.post_ffw_norm, cfg.norm_eps)
        return x + f, k_cache, v_cache

    def step(x, scanned):
        layer, window, k_cache, v_cache = scanned
        x, k_cache, v_cache = block(x, layer, window, k_cache, v_cache)
        return x, (k_cache, v_cache)

    xs = (model.blocks, windows,
          None if cache is None else cache.k, None if cache is None else cache.v)
    x, (k_new, v_new) = jax.lax.scan(step, x, xs)
    if cache is not None:
        cache = cache._replace(k=k_new, v=v_new)
    return x, cache


def logits(model: Gemma, x, *, final_softcap: bool = True):
    """[B, N, D] -> f32[B, N, V] (final norm, tied embedding, optional Gemma 2 soft-cap)."""
    h = rms_norm(x, model.final_norm, model.cfg.norm_eps)
    out = jnp.einsum("bnd,vd->bnv", h, model.input_embedding, preferred_element_type=jnp.float32)
    return softcap(out, model.cfg.final_logits_softcap) if final_softcap else out
