"""Beam search on top of the cached decoder (same prefill and step as ``pgbench.decode``).

Each prompt keeps ``beam_size`` hypotheses; the KV cache holds B * W rows and is
re-gathered by parent beam after every step. Scores are sums of log-probs (step 0 from
the un-capped prefill logits, later steps from capped logits, as greedy decoding). A
finished hypothesis (it produced EOS) is carried on at no cost and no longer grows. The
search stops when every hypothesis of every prompt is finished or after
``max_new_tokens`` tokens; the loop runs on device and compiles once per (batch, prompt
length, beam size, max_new_tokens, cache dtype).

``length_penalty`` alpha ranks the final hypotheses by score / length**alpha (0: raw sum;
the search itself always prunes on raw sums).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pgbench import decode
from pgbench.errors import InputError
from pgbench.model.paligemma import PaliGemma


class BeamOutput(NamedTuple):
    tokens: jax.Array  # i32[B, K] best hypothesis, -1 after its first EOS
    scores: jax.Array  # f32[B] its summed log-prob (before the length penalty)
    beams: jax.Array  # i32[B, W, K] every hypothesis, best first, -1 after EOS
    beam_scores: jax.Array  # f32[B, W] their summed log-probs


def _gather_rows(state: decode.PrefillState, rows) -> decode.PrefillState:
    """Reorder the B*W cache rows (rows: i32[B*W] source row of each new row)."""
    c = state.cache
    cache = c._replace(k=jnp.take(c.k, rows, axis=1), v=jnp.take(c.v, rows, axis=1),
                       ar_cumsum=c.ar_cumsum[rows], valid=c.valid[rows],
                       positions=c.positions[rows])
    return state._replace(cache=cache, seq_len=state.seq_len[rows],
                          next_cumsum=state.next_cumsum[rows])


def _minus_one_after_eos(seqs, eos_id, n):
    is_eos = seqs == eos_id
    after = (jnp.cumsum(is_eos, axis=-1) - is_eos) > 0
    after = after | (jnp.arange(seqs.shape[-1]) >= n)
    return jnp.where(after, -1, seqs)


@partial(jax.jit, static_argnames=("beam_size", "max_new_tokens", "cache_dtype", "attn_impl"))
def _beam(model, images, tokens, input_mask, mask_ar, eos_id, length_penalty, *, beam_size,
          max_new_tokens, cache_dtype, attn_impl):
    b, w, k = tokens.shape[0], beam_size, max_new_tokens
    state = decode.prefill(model, images, tokens, input_mask, mask_ar, max_new_tokens=k,
                           cache_dtype=jnp.dtype(cache_dtype), attn_impl=attn_impl)
    vocab = state.logits.shape[-1]
    state = _gather_rows(state, jnp.repeat(jnp.arange(b), w))  # every prompt W times
    scores, tok = jax.lax.top_k(jax.nn.log_softmax(state.logits, axis=-1), w)  # [B, W]
    tok = tok.astype(jnp.int32)
    seqs = jnp.zeros((b, w, k), jnp.int32).at[:, :, 0].set(tok)
    done = tok == eos_id
    base = (jnp.arange(b) * w)[:, None]

    def cond(carry):
        i, _, _, done, _, _ = carry
        return (i < k) & ~jnp.all(done)

    def body(carry):
        i, seqs, scores, done, cache, tok = carry
        logits, cache = decode.step(model, state._replace(cache=cache), tok.reshape(-1),
                                    i=i - 1, attn_impl=attn_impl)
        logp = jax.nn.log_softmax(logits, axis=-1).reshape(b, w, vocab)
        # a finished hypothesis has exactly one continuation (filler 0), at no cost
        filler = jnp.where(jnp.arange(vocab) == 0, 0.0, -jnp.inf)
        logp = jnp.where(done[..., None], filler, logp)
        cand = (scores[..., None] + logp).reshape(b, w * vocab)
        scores, idx = jax.lax.top_k(cand, w)
        parent, tok = idx // vocab, (idx % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(seqs, parent[..., None], axis=1)
        seqs = jax.lax.dynamic_update_slice_in_dim(seqs, tok[..., None], i, 2)
        done = jnp.take_along_axis(done, parent, axis=1) | (tok == eos_id)
        rows = (base + parent).reshape(-1)
        cache = _gather_rows(state._replace(cache=cache), rows).cache
        return i + 1, seqs, scores, done, cache, tok

    carry = (jnp.asarray(1, jnp.int32), seqs, scores, done, state.cache, tok)
    n, seqs, scores, *_ = jax.lax.while_loop(cond, body, carry)
    seqs = _minus_one_after_eos(seqs, eos_id, n)
    length = jnp.maximum(jnp.sum(seqs >= 0, axis=-1), 1).astype(jnp.float32)
    ranked = scores / length ** length_penalty
    order = jnp.argsort(-ranked, axis=-1)
    seqs = jnp.take_along_axis(seqs, order[..., None], axis=1)
    scores = jnp.take_along_axis(scores, order, axis=1)
    return BeamOutput(tokens=seqs[:, 0], scores=scores[:, 0], beams=seqs, beam_scores=scores)


def beam_search(model: PaliGemma, images, tokens, input_mask, mask_ar, *, beam_size: int,
                max_new_tokens: int, eos_id: int = 1, length_penalty: float = 0.0,
                cache_dtype=jnp.float32, attn_impl: str = "xla") -> BeamOutput:
    """Beam search over the same inputs as ``decode.greedy_decode`` (see module docstring).
    ``beam_size=1`` is greedy decoding."""
    decode._check(model, images, tokens, input_mask, mask_ar, max_new_tokens)
    vocab = model.cfg.llm.vocab_size
    if not 1 <= beam_size <= vocab:
        raise InputError(f"beam_size must be in [1, {vocab}] (the vocabulary), got {beam_size}")
    return _beam(model, jnp.asarray(images, jnp.float32), jnp.asarray(tokens, jnp.int32),
                 jnp.asarray(input_mask, bool), jnp.asarray(mask_ar, jnp.int32),
                 jnp.asarray(eos_id, jnp.int32), jnp.asarray(length_penalty, jnp.float32),
                 beam_size=int(beam_size), max_new_tokens=int(max_new_tokens),
                 cache_dtype=jnp.dtype(cache_dtype).name, attn_impl=attn_impl)
