"""Prefill + cached decoding: greedy, sampling (temperature / top-k / top-p) and beam search.

The prompt batch is left-aligned (real tokens first, padding on the right). Prefill
writes image + prompt into cache slots [0, S0); generated token i goes to slot S0 + i
for every row, with RoPE position = (real prompt length of that row) + i, so padding is
never attended and a padded batch gives the same tokens as each example alone. The
loop runs on device (``lax.while_loop``) and is compiled once per (batch, prompt length,
max_new_tokens, sampler) — the jitted functions below are module-level and cached by jax.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pgbench.model import gemma
from pgbench.model.masks import ar_cumsum
from pgbench.model.paligemma import PaliGemma, embed_inputs, full_masks


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How the next token is chosen. temperature 0 (the default) is greedy argmax."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __call__(self, logits, key):
        """logits f32[B, V] -> i32[B]."""
        if self.temperature == 0.0:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        logits = logits / self.temperature
        if self.top_k is not None:
            kth = jax.lax.top_k(logits, self.top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        if self.top_p is not None:
            order = jnp.argsort(-logits, axis=-1)
            sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
            probs = jax.nn.softmax(sorted_logits, axis=-1)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < self.top_p
            keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
            logits = jnp.where(keep, logits, -jnp.inf)
        return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


GREEDY = Sampler()


def prefill(model: PaliGemma, images, tokens, input_mask, mask_ar, *, cache_size: int,
            cache_dtype=jnp.float32, attn_impl: str = "xla"):
    """Run image + prompt through the model and fill a KV cache.

    Returns (logits f32[B, V] of each row's last real token — without the final soft-cap,
    as big_vision's prefill —, cache, next_pos i32[B], next_cumsum i32[B]).
    """
    x, zimg = embed_inputs(model, images, tokens, attn_impl=attn_impl)
    b, s0, _ = x.shape
    valid, ar = full_masks(zimg.shape[1], input_mask, mask_ar)
    cumsum = ar_cumsum(ar)
    pos = jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1
    cache = gemma.empty_cache(model.llm.cfg, b, cache_size, cache_dtype)
    cache = cache._replace(cumsum=cache.cumsum.at[:, :s0].set(cumsum),
                           valid=cache.valid.at[:, :s0].set(valid), pos=cache.pos.at[:, :s0].set(pos))
    h, cache = gemma.run_blocks(model.llm, x, q_pos=pos, q_cumsum=cumsum, q_valid=valid,
                                cache=cache, write_index=0, impl=attn_impl)
    length = jnp.sum(valid, axis=1, dtype=jnp.int32)
    last = jnp.take_along_axis(h, (length - 1)[:, None, None], axis=1)
    logits = gemma.logits(model.llm, last, final_softcap=False)[:, 0]
    last_cumsum = jnp.max(jnp.where(valid, cumsum, 0), axis=1)
    return logits, cache, length, last_cumsum + 1


def extend(model: PaliGemma, tokens, cache: gemma.KVCache, *, slot, pos, cumsum,
           attn_impl: str = "xla"):
    """Feed one token per row (i32[B]) at cache ``slot`` -> (logits f32[B, V], cache)."""
    x = gemma.embed_tokens(model.llm, tokens[:, None])
    b = tokens.shape[0]
    cache = cache._replace(
        cumsum=jax.lax.dynamic_update_slice_in_dim(cache.cumsum, cumsum[:, None], slot, 1),
        valid=jax.lax.dynamic_update_slice_in_dim(cache.valid, jnp.ones((b, 1), bool), slot, 1),
        pos=jax.lax.dynamic_update_slice_in_dim(cache.pos, pos[:, None], slot, 1))
    h, cache = gemma.run_blocks(model.llm, x, q_pos=pos[:, None], q_cumsum=cumsum[:, None],
                                q_valid=jnp.ones((b, 1), bool), cache=cache, write_index=slot,
                                impl=attn_impl)
    return gemma.logits(model.llm, h)[:, 0], cache


def mask_after_eos(tokens, eos_id: int):
    """Replace everything after each row's first EOS by -1 (EOS itself is kept)."""
    seen = jnp.cumsum(tokens == eos_id, axis=1) - (tokens == eos_id)
    return jnp.where(seen > 0, -1, tokens)


@functools.partial(jax.jit, static_argnames=("max_new_tokens", "eos_id", "sampler", "cache_dtype", "attn_impl"))
def _decode(model, images, tokens, input_mask, mask_ar, key, *, max_new_tokens, eos_id, sampler,
            cache_dtype, attn_impl):
    s0 = model.cfg.num_image_tokens + tokens.shape[1]
    logits, cache, pos, cumsum = prefill(model, images, tokens, input_mask, mask_ar,
                                         cache_size=s0 + max_new_tokens, cache_dtype=cache_dtype,
                                         attn_impl=attn_impl)
    b = tokens.shape[0]
    key, sub = jax.random.split(key)
    first = sampler(logits, sub)
    out = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(first)

    def cond(state):
        i, _, _, done, _ = state
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(state):
        i, out, cache, done, key = state
        logits, cache = extend(model, out[:, i - 1], cache, slot=s0 + i - 1, pos=pos + i - 1,
                               cumsum=cumsum + i - 1, attn_impl=attn_impl)
        key, sub = jax.random.split(key)
        nxt = sampler(logits, sub)
        return i + 1, out.at[:, i].set(nxt), cache, done | (nxt == eos_id), key

    state = (jnp.int32(1), out, cache, first == eos_id, key)
    _, out, _, _, _ = jax.lax.while_loop(cond, body, state)
    return mask_after_eos(out, eos_id)


def decode(model: PaliGemma, images, tokens, input_mask, mask_ar, *, max_new_tokens: int,
           eos_id: int = 1, sampler: Sampler = GREEDY, key=None, cache_dtype=jnp.float32,
           attn_impl: str = "xla"):
    """Generate up to ``max_new_tokens`` per row -> i32[B, max_new_tokens], -1 after EOS.

    Stops once every row has produced EOS (big_vision's rule). ``key`` seeds sampling
    (ignored by greedy). cache_dtype float32 by default; big_vision's own default is bfloat16.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    return _decode(model, jnp.asarray(images, jnp.float32), jnp.asarray(tokens, jnp.int32),
                   jnp.asarray(input_mask, bool), jnp.asarray(mask_ar, jnp.int32), key,
                   max_new_tokens=max_new_tokens, eos_id=eos_id, sampler=sampler,
                   cache_dtype=jnp.dtype(cache_dtype), attn_impl=attn_impl)


def greedy_decode(model, images, tokens, input_mask, mask_ar, *, max_new_tokens: int,
                  eos_id: int = 1, cache_dtype=jnp.float32, attn_impl: str = "xla"):
    """Greedy decoding (argmax at every step); see ``decode``."""
    return decode(model, images, tokens, input_mask, mask_ar, max_new_tokens=max_new_tokens,
                  eos_id=eos_id, cache_dtype=cache_dtype, attn_impl=attn_impl)
