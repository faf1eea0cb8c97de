"""Gemma 1 / Gemma 2 decoder with an explicit KV cache.

Weights are stored as plain ``[out, in]`` matrices (q, k, v, output, gate, up, down),
so every projection is one 2-D matmul (``ops.dense``) with no copy or slice of a weight
at run time. The layers are stacked (one ``DecoderBlocks`` with a leading [L] axis, run with
``lax.scan``) or per layer (a tuple of them, an unrolled loop), same math; see
``layer_forms.py`` (``run_layers`` runs either). Gemma 2's alternating local/global
layers' windows are an array indexed by the scanned layer number in the stacked form
and a per-layer constant in the other. big_vision's names map onto
these fields in ``params.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pgbench.config import GemmaConfig
from pgbench.model.attention import attention
from pgbench.model.cpu_paths import cpu_or_default
from pgbench.model.layer_forms import run_layers
from pgbench.model.masks import SegmentInfo
from pgbench.model.ops import dense, gelu, rms_norm, rope, softcap
from pgbench.model.quantize import Int8Weight, embedding_rows

NO_WINDOW = np.iinfo(np.int32).max


class DecoderBlocks(eqx.Module):
    """Decoder block weights; stacked, every array has a leading [L] axis as well.

    Every projection is an ``[out, in]`` matrix (see ``ops.dense``); query heads are laid
    out head-major along the output axis (``[H * hd, D]``), K/V likewise with the KV heads.
    """

    pre_attention_norm: jax.Array  # [D]
    q: jax.Array  # [H * hd, D]
    k: jax.Array  # [KVH * hd, D]
    v: jax.Array  # [KVH * hd, D]
    attn_out: jax.Array  # [D, H * hd]
    pre_ffw_norm: jax.Array  # [D]
    gate: jax.Array  # [F, D] (GELU branch)
    up: jax.Array  # [F, D]
    down: jax.Array  # [D, F]
    post_attention_norm: jax.Array | None  # [D], Gemma 2 only
    post_ffw_norm: jax.Array | None  # [D], Gemma 2 only

    def weights(self) -> "DecoderBlocks":
        """The weights a layer computes with: these (``pgbench.lora.LoraBlocks`` merges its
        adapters in here, inside the layer, so one layer's merged weights exist at a time)."""
        return self


class Gemma(eqx.Module):
    input_embedding: jax.Array  # [V, D], tied with the output layer (or its quantize.Int8Weight)
    blocks: DecoderBlocks | tuple  # stacked, or one DecoderBlocks per layer
    final_norm: jax.Array  # [D]
    cfg: GemmaConfig = eqx.field(static=True)


class KVCache(NamedTuple):
    """Keys/values of every layer plus each slot's attention metadata.

    k, v: [L, B, S, KVH, hd] (keys already rotated), in the cache dtype;
    segment_info: SegmentInfo of [B, S] (slots not yet written are invalid).
    """

    k: jax.Array
    v: jax.Array
    segment_info: SegmentInfo

    @property
    def size(self) -> int:
        return self.k.shape[2]


def empty_cache(cfg: GemmaConfig, batch: int, size: int, dtype=jnp.float32) -> KVCache:
    """An all-invalid cache of ``size`` slots."""
    shape = (cfg.depth, batch, size, cfg.num_kv_heads, cfg.head_dim)
    info = SegmentInfo(ar_cumsum=jnp.zeros((batch, size), jnp.int32),
                       valid=jnp.zeros((batch, size), bool),
                       positions=jnp.zeros((batch, size), jnp.int32))
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), segment_info=info)


def embed_tokens(model: Gemma, tokens):
    """i32[B, T] -> [B, T, D]: embedding rows times sqrt(D) (big_vision's text scale,
    computed in float32 and then cast to the table's dtype)."""
    if isinstance(model.input_embedding, Int8Weight):
        x = embedding_rows(model.input_embedding, tokens).astype(model.final_norm.dtype)
    elif model.input_embedding.dtype == jnp.float32:
        x = _rows(model.input_embedding, tokens)
    else:
        x = cpu_or_default(_cpu_low_precision_rows, _rows, model.input_embedding, tokens)
    return x * jnp.sqrt(jnp.float32(model.cfg.width)).astype(x.dtype)


def _rows(table, tokens):
    """[..., D]: the rows ``tokens`` (i32[...]) of ``table`` [V, D]."""
    return jnp.take(table, tokens, axis=0)


def _cpu_low_precision_rows(table, tokens):
    """``_rows`` of a bf16 / f16 table on one CPU device. XLA's CPU backend gathers bf16 rows
    out of a float32 conversion of the table; inside a decode loop that conversion is
    loop-invariant and is hoisted: a float32 copy of the whole table (2 GB at Gemma 2B),
    written once per decode call on the caller's thread, which doubled the bf16 batch-1
    decode step. Tied to the tokens by an optimisation barrier, the table is no longer
    loop-invariant and the gather converts only its rows (tests/model/test_gemma.py)."""
    tokens, table = jax.lax.optimization_barrier((tokens, table))
    return _rows(table, tokens)


def layer_window(cfg: GemmaConfig, i: int) -> int | None:
    """Layer i's sliding window, or None (a global layer, or the window is off, which is
    big_vision's semantics)."""
    on = cfg.apply_sliding_window and cfg.sliding_window and cfg.layer_is_local(i)
    return cfg.sliding_window if on else None


def _layer_windows(cfg: GemmaConfig):
    """i32[L]: every layer's window (NO_WINDOW on global layers) for the scanned form, or
    None when the sliding window is off."""
    if not (cfg.apply_sliding_window and cfg.sliding_window):
        return None
    return jnp.asarray([layer_window(cfg, i) or NO_WINDOW for i in range(cfg.depth)], jnp.int32)


def run_blocks(model: Gemma, x, segment_info: SegmentInfo, *, cache: KVCache | None = None,
               write_index=None, attend_cache: bool = False, impl: str = "xla",
               dropout: float = 0.0, dropout_key=None, remat: str | None = None):
    """Run every decoder block over x: [B, N, D] whose tokens are described by
    ``segment_info`` ([B, N]; its positions drive RoPE).

    - no cache: the N tokens attend each other (scoring / training forward);
    - cache, ``attend_cache=False`` (prefill): K/V are also written to cache slots
      [write_index, write_index + N) and the tokens attend each other through the
      cache dtype (as big_vision reads prefill K/V back from its cache);
    - cache, ``attend_cache=True`` (extend): K/V are written there and the tokens
      attend the whole cache, whose metadata must already describe the new slots.

    Training switches (no cache): ``dropout`` > 0 with a ``dropout_key`` drops the attention
    and MLP outputs of every block where big_vision's Gemma does (each layer its own key);
    ``remat`` names a ``jax.checkpoint_policies`` policy (big_vision trains with
    ``"nothing_saveable"``) to recompute each block in the backward pass.

    Returns (h [B, N, D] before the final norm, the updated cache or None).
    """
    cfg = model.cfg
    if cache is not None and write_index is None:
        raise ValueError("write_index is required with a cache")
    if dropout and dropout_key is None:
        raise ValueError("dropout needs a dropout_key")
    policy = _remat_policy(remat)
    layer_keys = (jax.random.split(dropout_key, cfg.depth) if dropout else None)
    b, n, _ = x.shape
    H, K, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    windows = _layer_windows(cfg)

    def block(carry, layer: DecoderBlocks, i):
        # k_cache, v_cache: every layer's cache [L, B, S, KVH, hd] (or None), written in
        # place at layer i and read there: never sliced out and stacked again.
        x, k_cache, v_cache = carry
        if isinstance(i, int):  # per layer: the window is a static constant
            window = layer_window(cfg, i)
        else:
            window = None if windows is None else windows[i]
        key = None if layer_keys is None else layer_keys[i]
        layer = layer.weights()
        h = rms_norm(x, layer.pre_attention_norm, cfg.norm_eps)
        q = dense(h, layer.q).reshape(b, n, H, hd)
        k = dense(h, layer.k).reshape(b, n, K, hd)
        v = dense(h, layer.v).reshape(b, n, K, hd)
        q = rope(q, segment_info.positions, cfg.rope_base) * jnp.asarray(cfg.query_scale, q.dtype)
        k = rope(k, segment_info.positions, cfg.rope_base)
        if k_cache is not None:
            k_cache, v_cache = _write_kv(k_cache, k, write_index, i), _write_kv(v_cache, v, write_index, i)
        if not attend_cache:
            if k_cache is not None:  # round through the cache dtype
                k, v = k.astype(k_cache.dtype).astype(x.dtype), v.astype(v_cache.dtype).astype(x.dtype)
            o = attention(q, k, v, segment_info, softcap=cfg.attn_logits_softcap, window=window,
                          impl=impl)
        else:
            o = attention(q, k_cache[i].astype(x.dtype), v_cache[i].astype(x.dtype), segment_info,
                          kv_segment_info=cache.segment_info, softcap=cfg.attn_logits_softcap,
                          window=window, impl=impl)
        o = dense(o.astype(x.dtype).reshape(b, n, H * hd), layer.attn_out)
        if layer.post_attention_norm is not None:
            o = rms_norm(o, layer.post_attention_norm, cfg.norm_eps)
        if dropout:  # as big_vision: after the post-attention norm, before the post-FFW norm
            attn_key, ffw_key = jax.random.split(key)
            o = drop(o, dropout, attn_key)
        x = x + o
        h = rms_norm(x, layer.pre_ffw_norm, cfg.norm_eps)
        f = dense(gelu(dense(h, layer.gate)) * dense(h, layer.up), layer.down)
        if dropout:
            f = drop(f, dropout, ffw_key)
        if layer.post_ffw_norm is not None:
            f = rms_norm(f, layer.post_ffw_norm, cfg.norm_eps)
        return x + f, k_cache, v_cache

    x, k_new, v_new = run_layers(block, (x, None if cache is None else cache.k,
                                         None if cache is None else cache.v),
                                 model.blocks, remat_policy=policy)
    return x, None if cache is None else cache._replace(k=k_new, v=v_new)


def drop(x, rate: float, key):
    """Inverted dropout: each element zeroed with probability ``rate``, the rest scaled by
    1 / (1 - rate) (flax ``nn.Dropout``; its random bits are not reproduced)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def _remat_policy(name: str | None):
    """A ``jax.checkpoint_policies`` policy by name, or None (no rematerialisation)."""
    if name is None or name == "none":
        return None
    policy = getattr(jax.checkpoint_policies, name, None)
    if policy is None or not callable(policy):
        raise ValueError(f"unknown remat policy {name!r}; use 'none' or a name in "
                         "jax.checkpoint_policies (e.g. 'nothing_saveable', 'dots_saveable')")
    return policy


def _write_kv(cache, new, index, layer):
    """Write new [B, N, KVH, hd] at slots [index, index + N) of layer ``layer`` (an int or
    a traced scalar) of the stacked cache [L, B, S, KVH, hd].

    Writing into the stacked cache directly, rather than slicing a layer out and
    stacking the layers again, lets XLA update it in place instead of copying the whole
    cache on every decode step."""
    zero = jnp.zeros((), jnp.int32)
    return jax.lax.dynamic_update_slice(
        cache, new.astype(cache.dtype)[None],
        (jnp.asarray(layer, jnp.int32), zero, jnp.asarray(index, jnp.int32), zero, zero))


def prefill(model: Gemma, x, segment_info: SegmentInfo, *, cache_size: int,
            cache_dtype=jnp.float32, impl: str = "xla"):
    """Process a prompt and build a cache of ``cache_size`` slots (prompt in [0, N)).

    x: [B, N, D]; segment_info: SegmentInfo of [B, N]. Returns (h [B, N, D], cache).
    """
    b, n, _ = x.shape
    if cache_size < n:
        raise ValueError(f"cache_size {cache_size} is smaller than the prompt ({n} tokens)")
    cache = empty_cache(model.cfg, b, cache_size, cache_dtype)
    cache = _set_slots(cache, 0, segment_info)
    return run_blocks(model, x, segment_info, cache=cache, write_index=0, impl=impl)


def extend(model: Gemma, cache: KVCache, x, segment_info: SegmentInfo, *, write_index,
           impl: str = "xla"):
    """Append N (usually 1) tokens at slots [write_index, write_index + N) and run them
    against everything cached. x: [B, N, D]; segment_info: SegmentInfo of [B, N];
    write_index: i32 scalar (same slot for every row). Returns (h [B, N, D], cache)."""
    cache = _set_slots(cache, write_index, segment_info)
    return run_blocks(model, x, segment_info, cache=cache, write_index=write_index,
                      attend_cache=True, impl=impl)


def _set_slots(cache: KVCache, index, segment_info: SegmentInfo) -> KVCache:
    def put(a, new):
        return jax.lax.dynamic_update_slice_in_dim(a, new.astype(a.dtype), index, 1)
    return cache._replace(segment_info=SegmentInfo(*map(put, cache.segment_info, segment_info)))


def logits(model: Gemma, x, *, final_softcap: bool = True):
    """[B, N, D] -> f32[B, N, V] (final norm, tied embedding, optional Gemma 2 soft-cap)."""
    h = rms_norm(x, model.final_norm, model.cfg.norm_eps)
    out = dense(h, model.input_embedding, out_dtype=jnp.float32)
    return softcap(out, model.cfg.final_logits_softcap) if final_softcap else out
