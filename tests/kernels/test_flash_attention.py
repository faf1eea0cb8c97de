"""The Pallas prefix-LM kernel (interpret mode on CPU) against plain-jnp references.

Every kernel call runs with NaN-poisoned output buffers (``poison=True``): a tile the
kernel forgot to write stays NaN and fails the finiteness checks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pgbench.kernels import general_attention, prefix_lm_attention, reference_attention, BlockSizes
from pgbench.model.masks import SegmentInfo
from _cases import BLOCKS, FAMILIES, NO_WINDOW, TOL, family_problems, problems, rel_err

# Interpret mode compiles every new shape (seconds each): few examples, no shrinking.
FAST = settings(max_examples=8, deadline=None, derandomize=True, phases=[Phase.generate],
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.partial(jax.jit, static_argnames=("softcap", "blocks", "use_kernel"))
def _forward_and_vjp(q, k, v, w, cumsum, valid, window, *, softcap, blocks, use_kernel):
    """(out, (dq, dk, dv)) for cotangent ``w``; jitted so a shape compiles once."""
    b, n = cumsum.shape
    pos = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
    info = SegmentInfo(cumsum, valid, pos)
    meta = dict(softcap=softcap, window=window)
    if use_kernel:
        f = lambda q, k, v: general_attention(q, k, v, info, info, **meta, block_sizes=blocks,
                                              poison=True)
    else:
        f = lambda q, k, v: reference_attention(q, k, v, info, info, **meta)
    out, vjp = jax.vjp(f, q, k, v)
    return out, vjp(w)


def _check_forward_and_grads(p, blocks=None):
    """Kernel vs reference: forward value and (dq, dk, dv) for a random cotangent."""
    blocks = blocks or p["blocks"]
    w = jnp.asarray(np.random.default_rng(1).normal(size=p["q"].shape), p["q"].dtype)
    args = (p["q"], p["k"], p["v"], w, p["ar_cumsum"], p["valid"])
    window = jnp.int32(NO_WINDOW if p["window"] is None else p["window"])
    out, got = _forward_and_vjp(*args, window, softcap=p["softcap"], blocks=blocks, use_kernel=True)
    ref, want = _forward_and_vjp(*args, window, softcap=p["softcap"], blocks=None, use_kernel=False)
    tol = TOL[p["q"].dtype.type]
    assert out.shape == p["q"].shape and out.dtype == p["q"].dtype
    assert np.all(np.isfinite(np.asarray(out, np.float32))), "output not finite"
    assert rel_err(out, ref) <= tol, f"output: {rel_err(out, ref)}"
    # An analytically zero gradient (dq, dk when every query sees one key) comes out
    # as rounding noise of dP - delta (~1e-6 of |dO||V|): each error is relative to its
    # own max |ref| but to at least a quarter of the largest of the three gradients.
    scale = max(float(jnp.max(jnp.abs(r.astype(jnp.float32)))) for r in want)
    for name, g, r in zip("qkv", got, want):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        assert np.all(np.isfinite(np.asarray(g, np.float32))), f"d{name} not finite"
        own = float(jnp.max(jnp.abs(r.astype(jnp.float32))))
        err = rel_err(g, r) * max(own, 1e-6) / max(own, scale / 4, 1e-6)
        assert err <= 2 * tol, f"d{name}: {err}"


@FAST
@given(p=st.sampled_from(sorted(FAMILIES)).flatmap(family_problems))
def test_forward_and_gradients_match_reference_f32(p):
    _check_forward_and_grads(p)


@settings(FAST, max_examples=2)
@given(p=family_problems("gqa", dtype=jnp.bfloat16))
def test_forward_and_gradients_bf16(p):
    _check_forward_and_grads(p)


def test_matches_model_xla_on_valid_rows():
    """Same numbers as the model's ``xla`` attention (which averages on invalid rows)."""
    from pgbench.model.attention import attention
    rng = np.random.default_rng(0)
    b, n, h, kvh, d = 2, 21, 4, 2, 16
    q, k, v = (jnp.asarray(rng.normal(size=s), jnp.float32)
               for s in [(b, n, h, d), (b, n, kvh, d), (b, n, kvh, d)])
    ar = jnp.asarray(np.cumsum(np.arange(n)[None] >= np.array([[7], [12]]), 1), jnp.int32)
    valid = jnp.asarray(np.arange(n)[None] < np.array([[21], [16]]))
    info = SegmentInfo(ar, valid, jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n)))
    for softcap, window in [(None, None), (3.0, 4)]:
        ref = attention(q, k, v, info, softcap=softcap, window=window, impl="xla")
        out = prefix_lm_attention(q, k, v, info, softcap=softcap, window=window,
                                  block_sizes=BlockSizes(8, 8, 8, 8))
        assert rel_err(out, ref, rows=valid) <= 1e-5
        assert np.all(np.asarray(out)[~np.asarray(valid)] == 0)  # documented: padding rows are 0


def test_traced_window_and_no_visible_key_are_finite():
    """Window as a traced scalar (lax.scan over layers); an all-padding batch row."""
    rng = np.random.default_rng(3)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 12, 2, 8)), jnp.float32) for _ in range(3))
    ar = jnp.asarray(np.cumsum(np.arange(12)[None] >= np.array([[5], [0]]), 1), jnp.int32)
    valid = jnp.asarray(np.array([[True] * 12, [False] * 12]))
    info = SegmentInfo(ar, valid, jnp.broadcast_to(jnp.arange(12, dtype=jnp.int32), (2, 12)))

    @jax.jit
    def f(window):
        return prefix_lm_attention(q, k, v, info, window=window,
                                   block_sizes=BlockSizes(8, 8, 8, 8))

    for w in (2, 2**31 - 1):
        out = f(jnp.int32(w))
        ref = reference_attention(q, k, v, info, info, window=w)
        assert np.all(np.isfinite(out)) and rel_err(out, ref) <= 1e-5
        assert np.all(np.asarray(out[1]) == 0)
    g = jax.grad(lambda q: jnp.sum(prefix_lm_attention(q, k, v, info,
                                                       block_sizes=BlockSizes(8, 8, 8, 8))))(q)
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g[1]) == 0)


def test_poisoned_output_catches_an_unwritten_tile():
    """The poisoning harness itself: a kernel that skips a tile must leave NaN behind."""
    from jax.experimental import pallas as pl
    from pgbench.kernels import _common

    def lazy(x_ref, o_ref):
        @pl.when(pl.program_id(0) == 0)
        def _():
            o_ref[...] = x_ref[...]

    cfg = _common.KernelConfig(BlockSizes(8, 8, 8, 8), None, "cpu", True, poison=True)
    spec = pl.BlockSpec((8,), lambda i: (i,))
    (o,) = _common.call(lazy, cfg=cfg, grid=(2,), in_specs=[spec], out_specs=[spec],
                        out_shapes=[jax.ShapeDtypeStruct((16,), jnp.float32)],
                        inputs=[jnp.ones(16)], semantics=None, name="lazy")
    assert np.all(np.asarray(o[:8]) == 1) and np.all(np.isnan(np.asarray(o[8:])))


def test_bad_shapes_raise():
    q = jnp.zeros((1, 4, 3, 8))
    with pytest.raises(ValueError, match="KV head"):
        prefix_lm_attention(q, jnp.zeros((1, 4, 2, 8)), jnp.zeros((1, 4, 2, 8)),
                            SegmentInfo.bidirectional(1, 4))
    bad = SegmentInfo.bidirectional(1, 4)._replace(ar_cumsum=jnp.zeros((1, 5), jnp.int32))
    with pytest.raises(ValueError, match="segment_info.ar_cumsum"):
        prefix_lm_attention(q, jnp.zeros((1, 4, 1, 8)), jnp.zeros((1, 4, 1, 8)), bad)


@pytest.mark.slow
@SLOW
@given(p=problems(max_n=80, head_dims=(8, 16, 128)), blocks=BLOCKS)
def test_forward_and_gradients_sweep_f32(p, blocks):
    _check_forward_and_grads(p, blocks)  # shapes vary: one compile per example


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems(max_n=72, head_dims=(128, 256), dtype=jnp.bfloat16), blocks=BLOCKS)
def test_forward_and_gradients_sweep_bf16_real_head_dims(p, blocks):
    _check_forward_and_grads(p, blocks)
