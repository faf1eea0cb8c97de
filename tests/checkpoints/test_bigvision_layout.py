"""big_vision-named parameters <-> Equinox model: bit-exact round trips, key/shape validation,
the in-place reorders, and random initialisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgbench.checkpoints.bigvision_layout import (QKV_EINSUM, expected_shapes, from_bigvision_params,
                                                  to_bigvision_params)
from pgbench.checkpoints.inplace import pairs_first, transpose_in_place
from pgbench.checkpoints.random_params import init_params
from pgbench.config import PRESETS
from pgbench.errors import CheckpointError
from tests.model._reference import CASES, load_case


def _assert_same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        # compare bits, so -0.0 / NaN payloads would count too
        np.testing.assert_array_equal(np.ascontiguousarray(a[k]).view(np.uint8),
                                      np.ascontiguousarray(b[k]).view(np.uint8), err_msg=k)


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_is_bit_exact(name):
    *_, flat = load_case(name)
    assert set(flat) == set(expected_shapes(PRESETS[CASES[name]]))
    _assert_same(to_bigvision_params(from_bigvision_params(dict(flat), PRESETS[CASES[name]])), flat)


def test_round_trip_bfloat16():
    *_, flat = load_case("pg2_tiny")
    bf = {k: v.astype(ml_dtypes.bfloat16) for k, v in flat.items()}
    model = from_bigvision_params(dict(bf), PRESETS["pg2-tiny"])
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(model))
    _assert_same(to_bigvision_params(model), bf)


def test_dtype_option_casts():
    *_, flat = load_case("pg1_tiny")
    model = from_bigvision_params(dict(flat), PRESETS["pg1-tiny"], dtype=jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(model)} == {jnp.dtype(jnp.bfloat16)}


def test_qkv_einsum_variant_when_kv_heads_equal_heads():
    """gemma_7b-style files keep one qkv_einsum [L, 3, H, D, hd] (0 Q, 1 K, 2 V)."""
    cfg = PRESETS["pg1-tiny"].replace_llm(num_kv_heads=4)
    shapes = expected_shapes(cfg)
    assert shapes[QKV_EINSUM] == (2, 3, 4, 64, 16)
    assert "llm/layers/attn/q_einsum/w" not in shapes
    rng = np.random.default_rng(0)
    flat = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    model = from_bigvision_params(dict(flat), cfg)
    # the model's [out, in] q / v matrices: row h * hd + j, column d is head h's weight (d, j)
    q = np.asarray(model.llm.blocks.q).reshape(2, 4, 16, 64)
    v = np.asarray(model.llm.blocks.v).reshape(2, 4, 16, 64)
    np.testing.assert_array_equal(q, flat[QKV_EINSUM][:, 0].transpose(0, 1, 3, 2))
    np.testing.assert_array_equal(v, flat[QKV_EINSUM][:, 2].transpose(0, 1, 3, 2))
    _assert_same(to_bigvision_params(model), flat)


@pytest.mark.parametrize("name", sorted(CASES))
def test_unstacked_layers_hold_the_same_weights(name):
    """stacked=False gives one block per layer, each the matching slice of the stacked form,
    and exports back to the same file."""
    *_, flat = load_case(name)
    cfg = PRESETS[CASES[name]]
    stacked = from_bigvision_params(dict(flat), cfg)
    layers = from_bigvision_params(dict(flat), cfg, stacked=False)
    assert isinstance(layers.llm.blocks, tuple) and len(layers.llm.blocks) == cfg.llm.depth
    assert isinstance(layers.img.blocks, tuple) and len(layers.img.blocks) == cfg.vision.depth
    for i, layer in enumerate(layers.llm.blocks):
        for a, b in zip(jax.tree.leaves(layer), jax.tree.leaves(stacked.llm.blocks)):
            np.testing.assert_array_equal(a, b[i])
    _assert_same(to_bigvision_params(layers), flat)


def test_consume_pops_as_it_goes():
    *_, flat = load_case("pg1_tiny")
    mine = {k: v.copy() for k, v in flat.items()}  # consumed arrays are reordered in place:
    from_bigvision_params(mine, PRESETS["pg1-tiny"], consume=True)  # never the cached case's
    assert mine == {}


@pytest.mark.parametrize("edit, words", [
    (lambda f: f.pop("llm/final_norm/scale"), ["missing", "llm/final_norm/scale"]),
    (lambda f: f.__setitem__("llm/extra/w", np.zeros(3, np.float32)), ["unexpected", "llm/extra/w"]),
    (lambda f: f.__setitem__("img/head/bias", np.zeros(65, np.float32)),
     ["img/head/bias", "expected (64,)", "found (65,)"]),
    (lambda f: f.__setitem__("llm/layers/attn/kv_einsum/w", np.zeros((2, 2, 2, 64, 16), np.float32)),
     ["kv_einsum", "expected (2, 2, 1, 64, 16)", "found (2, 2, 2, 64, 16)"]),
])
def test_bad_keys_raise_checkpoint_error(edit, words):
    *_, flat = load_case("pg1_tiny")
    bad = dict(flat)
    edit(bad)
    with pytest.raises(CheckpointError) as info:
        from_bigvision_params(bad, PRESETS["pg1-tiny"])
    for w in words:
        assert w in str(info.value)


def test_gemma2_checkpoint_does_not_fit_gemma1_config():
    *_, flat = load_case("pg2_tiny")
    with pytest.raises(CheckpointError, match="post_attention_norm"):
        from_bigvision_params(dict(flat), PRESETS["pg2-tiny"].replace_llm(post_norms=False))


@pytest.mark.parametrize("name", ["pg1-tiny", "pg2-tiny"])
def test_init_params_shapes_and_scales(name):
    cfg = PRESETS[name]
    model = init_params(cfg, jax.random.key(0))
    flat = to_bigvision_params(model)
    assert {k: v.shape for k, v in flat.items()} == expected_shapes(cfg)
    assert all(np.all(np.isfinite(v)) for v in flat.values())
    # fan-in scaled: projections have O(1/sqrt(fan_in)) entries, not O(1)
    assert 0.05 < np.std(flat["llm/layers/mlp/linear"]) * np.sqrt(cfg.llm.mlp_dim) < 2


@settings(max_examples=40, deadline=None)
@given(layers=st.integers(1, 7), rest=st.lists(st.integers(1, 4), min_size=0, max_size=2))
def test_pairs_first_reorders_in_place(layers, rest):
    """The in-place [L, 2, ...] -> [2, L, ...] reorder used to split big_vision's gating
    array without a second copy equals a plain transpose, in the same memory."""
    a = np.arange(layers * 2 * int(np.prod(rest, dtype=int)), dtype=np.float32).reshape(layers, 2, *rest)
    want = np.ascontiguousarray(a.swapaxes(0, 1))
    out = pairs_first(a)
    assert np.shares_memory(out, a) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, want)


@settings(max_examples=40, deadline=None)
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2), m=st.integers(1, 150), n=st.integers(1, 70))
def testtranspose_in_place(lead, m, n):
    """The block-by-block in-place [..., m, n] -> [..., n, m] transpose that turns big_vision
    kernels into the model's [out, in] matrices equals a plain transpose, in the same memory
    (m > 64 covers more than one row panel)."""
    a = np.arange(int(np.prod(lead, dtype=int)) * m * n, dtype=np.float32).reshape(*lead, m, n)
    want = np.ascontiguousarray(np.swapaxes(a, -1, -2))
    out = transpose_in_place(a)
    assert np.shares_memory(out, a) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, want)


def test_consumed_checkpoint_builds_the_same_model():
    """consume=True (shared, reordered buffers) and a plain copy give identical weights."""
    *_, flat = load_case("pg2_tiny")
    cfg = PRESETS["pg2-tiny"]
    plain = from_bigvision_params(dict(flat), cfg)
    for stacked in (True, False):
        owned = {k: v.copy() for k, v in flat.items()}
        model = from_bigvision_params(owned, cfg, consume=True, stacked=stacked)
        assert not owned
        _assert_same(to_bigvision_params(model), to_bigvision_params(plain))
