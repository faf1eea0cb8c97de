"""Cached decoding: prefill image + prefix in one pass, then one token per step from a
KV cache, the loop on device (``lax.while_loop``).

Semantics are big_vision's (``predict_fns._decode_with_logp`` over ``gemma_bv``):

- the prompt batch is left-aligned (real tokens first, right padding); each row is
  rolled so its real tokens sit at the right end of the prompt window, and positions
  are ``cumsum(valid) - 1`` (the index among real tokens; rolled padding gets -1 and is
  never attended);
- the cache has ``N_img + T + max_new_tokens`` slots; generated token i is written to
  slot ``N_img + T + i`` at position ``seq_len + i`` and sees every real slot before it;
- the first token comes from the prefill logits of the last real position WITHOUT the
  final soft-cap; later tokens from logits WITH it (Gemma 2);
- decoding stops once every row has produced EOS, or after ``max_new_tokens``; the
  result holds -1 after each row's first EOS (EOS itself kept).

``greedy_decode`` / ``sample_decode`` / ``beam_decode`` are compiled once per (model
structure, batch, prompt length, max_new_tokens, cache dtype, sampler settings or beam
size) and reused, not re-traced, per call (EOS id, PRNG key and length penalty are
traced arguments).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pgbench.errors import InputError
from pgbench.model import gemma
from pgbench.model.array_types import Array, Bool, Float, In, Int
from pgbench.model.masks import SegmentInfo, ar_cumsum
from pgbench.model.paligemma import PaliGemma, embed_inputs, full_masks


class Sampler(NamedTuple):
    """How the next token is picked from the logits. ``kind``: "greedy" (argmax) or
    "sample" (temperature, then top-k (0: off), then top-p / nucleus (1.0: off))."""

    kind: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


class DecodeOutput(NamedTuple):
    tokens: jax.Array  # i32[B, K], -1 after the first EOS
    logp: jax.Array  # f32[B, K] log-softmax of the step's logits at the chosen token (0 after EOS)
    num_steps: jax.Array  # i32 scalar: tokens actually generated (early stop when all hit EOS)


class PrefillState(NamedTuple):
    """What decoding needs after the prompt. cache: the KV cache; logits: f32[B, V] of the
    last real prompt token (no final soft-cap); seq_len: i32[B] real prompt tokens;
    next_cumsum: i32[B] auto-regressive running sum for the first generated token;
    write_index: i32 first free cache slot (same for every row)."""

    cache: gemma.KVCache
    logits: jax.Array
    seq_len: jax.Array
    next_cumsum: jax.Array
    write_index: jax.Array


def _roll_rows(a, shift):
    """Roll each row of a [B, N, ...] left by shift[b]."""
    return jax.vmap(lambda row, s: jnp.roll(row, -s, axis=0))(a, shift)


def prefill(model: PaliGemma, images: Float[In, "B H W 3"], tokens: Int[In, "B T"],
            input_mask: Bool[In, "B T"], mask_ar: Int[In, "B T"], *, max_new_tokens: int,
            cache_dtype=jnp.float32, attn_impl: str = "xla") -> PrefillState:
    """Run image + prompt through the model and fill the cache (right-aligned, as big_vision).

    images f32[B, H, W, 3]; tokens i32[B, T] left-aligned; input_mask bool[B, T];
    mask_ar i32[B, T] (0 on the prompt).
    """
    x, zimg = embed_inputs(model, images, tokens, attn_impl=attn_impl)
    valid, ar = full_masks(zimg.shape[1], input_mask, mask_ar)
    cumsum = ar_cumsum(ar)
    seq_len = jnp.sum(valid, axis=1, dtype=jnp.int32)
    x, valid, cumsum = (_roll_rows(a, seq_len) for a in (x, valid, cumsum))
    positions = jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1
    n = x.shape[1]
    h, cache = gemma.prefill(model.llm, x, SegmentInfo(cumsum, valid, positions),
                             cache_size=n + max_new_tokens, cache_dtype=cache_dtype,
                             impl=attn_impl)
    logits = gemma.logits(model.llm, h[:, -1:], final_softcap=False)[:, 0]
    next_cumsum = jnp.max(jnp.where(valid, cumsum, 0), axis=1) + 1
    return PrefillState(cache=cache, logits=logits, seq_len=seq_len, next_cumsum=next_cumsum,
                        write_index=jnp.asarray(n, jnp.int32))


def step(model: PaliGemma, state: PrefillState, token: Int[Array, " B"], *, i,
         attn_impl: str = "xla") -> tuple[Float[Array, "B V"], gemma.KVCache]:
    """Feed generated token number i (i32[B], i = 0, 1, ...) and return
    (logits f32[B, V] with the final soft-cap, the new cache)."""
    x = gemma.embed_tokens(model.llm, token[:, None])
    b = token.shape[0]
    info = SegmentInfo(ar_cumsum=(state.next_cumsum + i)[:, None], valid=jnp.ones((b, 1), bool),
                       positions=(state.seq_len + i)[:, None])
    h, cache = gemma.extend(model.llm, state.cache, x, info, write_index=state.write_index + i,
                            impl=attn_impl)
    return gemma.logits(model.llm, h, final_softcap=True)[:, 0], cache


def _select(logits, key, sampler: Sampler):
    """-> (token i32[B], log-prob f32[B] under the unmodified logits' softmax)."""
    log_norm = jax.nn.logsumexp(logits, axis=-1)  # no [B, V] log-prob array: one pass less
    if sampler.kind == "greedy":
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        z = logits / jnp.float32(sampler.temperature)
        if sampler.top_k:
            kth = jax.lax.top_k(z, sampler.top_k)[0][:, -1:]
            z = jnp.where(z < kth, -jnp.inf, z)
        if sampler.top_p < 1.0:
            order = jnp.argsort(-z, axis=-1)
            sorted_z = jnp.take_along_axis(z, order, axis=-1)
            probs = jax.nn.softmax(sorted_z, axis=-1)
            # keep the smallest prefix whose mass reaches top_p (the top token always)
            before = jnp.cumsum(probs, axis=-1) - probs
            keep_sorted = before < jnp.float32(sampler.top_p)
            keep = jnp.zeros_like(keep_sorted).at[
                jnp.arange(z.shape[0])[:, None], order].set(keep_sorted)
            z = jnp.where(keep, z, -jnp.inf)
        tok = jax.random.categorical(key, z, axis=-1).astype(jnp.int32)
    return tok, jnp.take_along_axis(logits, tok[:, None], axis=-1)[:, 0] - log_norm


@partial(jax.jit, static_argnames=("max_new_tokens", "cache_dtype", "attn_impl", "sampler"))
def _decode(model, images, tokens, input_mask, mask_ar, key, eos_id, *, max_new_tokens,
            cache_dtype, attn_impl, sampler):
    state = prefill(model, images, tokens, input_mask, mask_ar, max_new_tokens=max_new_tokens,
                    cache_dtype=jnp.dtype(cache_dtype), attn_impl=attn_impl)
    b = tokens.shape[0]
    key, sub = jax.random.split(key)
    tok, lp = _select(state.logits, sub, sampler)
    out = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(tok)
    logps = jnp.zeros((b, max_new_tokens), jnp.float32).at[:, 0].set(lp)
    done = tok == eos_id

    def cond(carry):
        i, _, _, done, _, _, _ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, out, logps, done, cache, tok, key = carry
        logits, cache = step(model, state._replace(cache=cache), tok, i=i - 1,
                             attn_impl=attn_impl)
        key, sub = jax.random.split(key)
        tok, lp = _select(logits, sub, sampler)
        out = jax.lax.dynamic_update_slice_in_dim(out, tok[:, None], i, 1)
        logps = jax.lax.dynamic_update_slice_in_dim(logps, lp[:, None], i, 1)
        return i + 1, out, logps, done | (tok == eos_id), cache, tok, key

    carry = (jnp.asarray(1, jnp.int32), out, logps, done, state.cache, tok, key)
    n, out, logps, *_ = jax.lax.while_loop(cond, body, carry)
    is_eos = out == eos_id
    after_eos = (jnp.cumsum(is_eos, axis=1) - is_eos) > 0
    after_eos = after_eos | (jnp.arange(max_new_tokens) >= n)[None]  # early stop: all ended
    return DecodeOutput(tokens=jnp.where(after_eos, -1, out),
                        logp=jnp.where(after_eos, 0.0, logps), num_steps=n)


def _check(model, images, tokens, input_mask, mask_ar, max_new_tokens):
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    shapes = {"tokens": np.shape(tokens), "input_mask": np.shape(input_mask),
              "mask_ar": np.shape(mask_ar)}
    if len(set(shapes.values())) != 1 or len(shapes["tokens"]) != 2:
        raise InputError(f"tokens, input_mask and mask_ar must share one [B, T] shape, got {shapes}")
    if np.shape(images)[0] != shapes["tokens"][0]:
        raise InputError(f"{np.shape(images)[0]} images for {shapes['tokens'][0]} prompts")
    del model


def decode(model: PaliGemma, images: Float[In, "B H W 3"], tokens: Int[In, "B T"],
           input_mask: Bool[In, "B T"], mask_ar: Int[In, "B T"], *, max_new_tokens: int,
           eos_id: int = 1, cache_dtype=jnp.float32, attn_impl: str = "xla",
           sampler: Sampler = Sampler(), key=None) -> DecodeOutput:
    """Generate up to ``max_new_tokens`` tokens per prompt (see the module docstring).

    images f32[B, H, W, 3] in [-1, 1]; tokens i32[B, T] = [BOS] prefix [SEP] [PAD]...
    (left-aligned); input_mask bool[B, T]; mask_ar i32[B, T] (0 on the prompt).
    ``key``: PRNG key, required when sampling.
    """
    _check(model, images, tokens, input_mask, mask_ar, max_new_tokens)
    if sampler.kind not in ("greedy", "sample"):
        raise InputError(f"unknown sampler kind {sampler.kind!r}: expected 'greedy' or 'sample'")
    if sampler.kind == "sample" and key is None:
        raise InputError("sampling needs a PRNG key (key=jax.random.key(seed))")
    if key is None:
        key = jax.random.key(0)
    return _decode(model, jnp.asarray(images, jnp.float32), jnp.asarray(tokens, jnp.int32),
                   jnp.asarray(input_mask, bool), jnp.asarray(mask_ar, jnp.int32), key,
                   jnp.asarray(eos_id, jnp.int32), max_new_tokens=int(max_new_tokens),
                   cache_dtype=jnp.dtype(cache_dtype).name, attn_impl=attn_impl,
                   sampler=sampler)


def greedy_decode(model: PaliGemma, images: Float[In, "B H W 3"], tokens: Int[In, "B T"],
                  input_mask: Bool[In, "B T"], mask_ar: Int[In, "B T"], *, max_new_tokens: int,
                  eos_id: int = 1, cache_dtype=jnp.float32,
                  attn_impl: str = "xla") -> Int[Array, "B K"]:
    """Greedy (argmax) decoding, big_vision's sampler "greedy": i32[B, max_new_tokens],
    -1 after each row's first EOS."""
    return decode(model, images, tokens, input_mask, mask_ar, max_new_tokens=max_new_tokens,
                  eos_id=eos_id, cache_dtype=cache_dtype, attn_impl=attn_impl).tokens


def sample_decode(model: PaliGemma, images: Float[In, "B H W 3"], tokens: Int[In, "B T"],
                  input_mask: Bool[In, "B T"], mask_ar: Int[In, "B T"], *, key,
                  max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, eos_id: int = 1, cache_dtype=jnp.float32,
                  attn_impl: str = "xla") -> Int[Array, "B K"]:
    """Sampling with temperature, top-k and top-p under a PRNG key (deterministic per key):
    i32[B, max_new_tokens], -1 after each row's first EOS."""
    if temperature <= 0:
        raise InputError(f"temperature must be > 0 (use greedy_decode for argmax), got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise InputError(f"top_p must be in (0, 1], got {top_p}")
    sampler = Sampler("sample", float(temperature), int(top_k), float(top_p))
    return decode(model, images, tokens, input_mask, mask_ar, max_new_tokens=max_new_tokens,
                  eos_id=eos_id, cache_dtype=cache_dtype, attn_impl=attn_impl, sampler=sampler,
                  key=key).tokens


# ---------------------------------------------------------------------------------------
# Beam search: the same prefill and step, on B * W rows.


class BeamOutput(NamedTuple):
    tokens: jax.Array  # i32[B, K] best beam, -1 after its first EOS
    score: jax.Array  # f32[B] its summed log-prob (length-normalised if requested)
    beams: jax.Array  # i32[B, W, K] every final beam, best first, -1 after EOS
    scores: jax.Array  # f32[B, W]


def _finished_logp(logp, finished, eos_id):
    """A finished beam has exactly one continuation (EOS again) at no cost."""
    only_eos = jnp.where(jnp.arange(logp.shape[-1]) == eos_id, 0.0, -jnp.inf)
    return jnp.where(finished[..., None], only_eos, logp)


@partial(jax.jit, static_argnames=("max_new_tokens", "beam_size", "cache_dtype", "attn_impl"))
def _beam(model, images, tokens, input_mask, mask_ar, eos_id, length_penalty, *,
          max_new_tokens, beam_size, cache_dtype, attn_impl):
    b, w, k = tokens.shape[0], beam_size, max_new_tokens
    state = prefill(model, images, tokens, input_mask, mask_ar, max_new_tokens=k,
                    cache_dtype=jnp.dtype(cache_dtype), attn_impl=attn_impl)
    logp0 = jax.nn.log_softmax(state.logits, axis=-1)  # [B, V], prefill logits: no soft-cap
    score, tok = jax.lax.top_k(logp0, w)  # the W best first tokens start the W beams
    tok = tok.astype(jnp.int32)
    # every beam of an example shares its prompt: rows b -> b * W + beam
    rep = partial(jnp.repeat, repeats=w, axis=0)
    c = state.cache
    state = state._replace(
        cache=c._replace(k=jnp.repeat(c.k, w, axis=1), v=jnp.repeat(c.v, w, axis=1),
                         segment_info=SegmentInfo(*map(rep, c.segment_info))),
        logits=rep(state.logits), seq_len=rep(state.seq_len), next_cumsum=rep(state.next_cumsum))
    seqs = jnp.zeros((b, w, k), jnp.int32).at[:, :, 0].set(tok)
    finished = tok == eos_id
    lengths = jnp.ones((b, w), jnp.int32)  # tokens up to and including EOS

    def cond(carry):
        i, _, _, finished, *_ = carry
        return (i < k) & ~jnp.all(finished)

    def body(carry):
        i, seqs, score, finished, lengths, cache, tok = carry
        logits, cache = step(model, state._replace(cache=cache), tok.reshape(b * w), i=i - 1,
                             attn_impl=attn_impl)
        logp = _finished_logp(jax.nn.log_softmax(logits, -1).reshape(b, w, -1), finished, eos_id)
        vocab = logp.shape[-1]
        cand = (score[:, :, None] + logp).reshape(b, w * vocab)
        score, flat = jax.lax.top_k(cand, w)
        parent, tok = flat // vocab, (flat % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(seqs, parent[:, :, None], axis=1).at[:, :, i].set(tok)
        was_done = jnp.take_along_axis(finished, parent, axis=1)
        lengths = jnp.take_along_axis(lengths, parent, axis=1) + (~was_done).astype(jnp.int32)
        finished = was_done | (tok == eos_id)
        rows = (jnp.arange(b)[:, None] * w + parent).reshape(b * w)  # reorder the cache rows
        cache = cache._replace(k=jnp.take(cache.k, rows, axis=1), v=jnp.take(cache.v, rows, axis=1))
        return i + 1, seqs, score, finished, lengths, cache, tok

    carry = (jnp.asarray(1, jnp.int32), seqs, score, finished, lengths, state.cache, tok)
    n, seqs, score, finished, lengths, *_ = jax.lax.while_loop(cond, body, carry)
    final = score / lengths.astype(jnp.float32) ** length_penalty
    order = jnp.argsort(-final, axis=1)
    seqs = jnp.take_along_axis(seqs, order[:, :, None], axis=1)
    final = jnp.take_along_axis(final, order, axis=1)
    is_eos = seqs == eos_id
    after = ((jnp.cumsum(is_eos, axis=-1) - is_eos) > 0) | (jnp.arange(k) >= n)
    seqs = jnp.where(after, -1, seqs)
    return BeamOutput(tokens=seqs[:, 0], score=final[:, 0], beams=seqs, scores=final)


def beam_decode(model: PaliGemma, images: Float[In, "B H W 3"], tokens: Int[In, "B T"],
                input_mask: Bool[In, "B T"], mask_ar: Int[In, "B T"], *, max_new_tokens: int,
                beam_size: int = 4, length_penalty: float = 0.0, eos_id: int = 1,
                cache_dtype=jnp.float32, attn_impl: str = "xla") -> BeamOutput:
    """Beam search over summed log-probs (step 0 from the un-capped prefill logits, later
    steps from the capped ones, as in greedy decoding). Finished beams (EOS) keep their
    score; beams are ranked by score / length ** length_penalty (0: plain sum). Stops
    when every beam of every example has finished, or after ``max_new_tokens``.
    beam_size 1 is greedy decoding."""
    _check(model, images, tokens, input_mask, mask_ar, max_new_tokens)
    if not 1 <= beam_size <= model.cfg.llm.vocab_size:
        raise InputError(f"beam_size must be in [1, vocab size], got {beam_size}")
    return _beam(model, jnp.asarray(images, jnp.float32), jnp.asarray(tokens, jnp.int32),
                 jnp.asarray(input_mask, bool), jnp.asarray(mask_ar, jnp.int32),
                 jnp.asarray(eos_id, jnp.int32), jnp.asarray(length_penalty, jnp.float32),
                 max_new_tokens=int(max_new_tokens), beam_size=int(beam_size),
                 cache_dtype=jnp.dtype(cache_dtype).name, attn_impl=attn_impl)
