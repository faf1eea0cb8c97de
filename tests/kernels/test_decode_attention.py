"""Decode kernel: a few queries against a KV cache with its own metadata."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pgbench.kernels import BlockSizes, general_attention, prefix_lm_decode_attention, reference_attention
from pgbench.model.masks import SegmentInfo
from _cases import rel_err


def _cache_problem(seed, b=2, s=29, nq=2, h=4, kvh=1, d=16):
    """A right-padded prefix of different lengths per row, then nq generated tokens."""
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(b, nq, h, d)) * 0.7, jnp.float32)
    k = jnp.asarray(rng.normal(size=(b, s, kvh, d)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b, s, kvh, d)), jnp.float32)
    filled = np.array([s - 3, s - 9])[:b]  # slots in use, including the new tokens
    k_valid = np.arange(s)[None] < filled[:, None]
    k_ar = np.cumsum(np.arange(s)[None] >= (filled[:, None] - nq - 4), axis=1)  # 4 suffix tokens
    k_pos = np.broadcast_to(np.arange(s), (b, s))
    q_slots = filled[:, None] - nq + np.arange(nq)[None]
    q_ar = np.take_along_axis(k_ar, q_slots, 1)
    q_valid = np.array([[True] * nq, [True] * (nq - 1) + [False]])[:b]
    q_info = SegmentInfo(jnp.asarray(q_ar, jnp.int32), jnp.asarray(q_valid),
                         jnp.asarray(q_slots, jnp.int32))
    k_info = SegmentInfo(jnp.asarray(k_ar, jnp.int32), jnp.asarray(k_valid),
                         jnp.asarray(k_pos, jnp.int32))
    return q, k, v, (q_info, k_info)


def _reference(q, k, v, m, softcap, window):
    return reference_attention(q, k, v, *m, softcap=softcap, window=window)


def test_decode_matches_reference_mqa_and_gqa():
    for seed, kvh, softcap, window in [(0, 1, None, None), (1, 2, 50.0, 5)]:
        q, k, v, m = _cache_problem(seed, kvh=kvh)
        out = prefix_lm_decode_attention(q, k, v, *m, softcap=softcap, window=window,
                                         block_sizes=BlockSizes(8, 8, 8, 8))
        ref = _reference(q, k, v, m, softcap, window)
        assert np.all(np.isfinite(out)) and rel_err(out, ref) <= 1e-5
        assert np.all(np.asarray(out)[~np.asarray(m[0].valid)] == 0)


def test_decode_tiles_are_all_written_and_differentiable():
    """Poisoned buffers through the grouped layout, and gradients into the cache."""
    q, k, v, m = _cache_problem(2, kvh=2)
    b, nq, h, d = q.shape
    group = h // k.shape[2]
    qg = q.reshape(b, nq, 2, group, d).transpose(0, 3, 1, 2, 4).reshape(b, group * nq, 2, d)
    q_tiled = SegmentInfo(*(jnp.tile(x, (1, group)) for x in m[0]))
    out = general_attention(qg, k, v, q_tiled, m[1], block_sizes=BlockSizes(8, 8, 8, 8),
                            poison=True)
    assert np.all(np.isfinite(out))

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.cos(fn(q, k, v)))

    got = jax.grad(loss(lambda q, k, v: prefix_lm_decode_attention(
        q, k, v, *m, block_sizes=BlockSizes(8, 8, 8, 8))), (0, 1, 2))(q, k, v)
    want = jax.grad(loss(lambda q, k, v: _reference(q, k, v, m, None, None)), (0, 1, 2))(q, k, v)
    for g, r in zip(got, want):
        assert np.all(np.isfinite(g)) and rel_err(g, r) <= 2e-5
