"""The stacked (scanned) and per-layer (unrolled) forms of the layers compute the same thing.

Both are checked against big_vision's reference outputs elsewhere (tests/model for the
stacked form, `pgbench parity` for the per-layer one); these tests pin the two to each
other on what the references do not cover: Gemma 2's sliding window, bfloat16 and the
conversions between the forms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgbench import decode
from pgbench.model import paligemma as pg
from pgbench.checkpoints.bigvision_layout import from_bigvision_params
from tests.model._reference import CASES, forward_logits, load_case, with_window


def per_layer_form(model):
    return pg.with_layers(model, stacked=False)


def _args(inp):
    return inp["images"], inp["tokens"], inp["input_mask"], inp["mask_ar"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_unstack_then_stack_is_identity(name):
    model, *_ = load_case(name)
    layers = per_layer_form(model)
    assert isinstance(layers.llm.blocks, tuple) and len(layers.llm.blocks) == model.cfg.llm.depth
    assert isinstance(layers.img.blocks, tuple) and len(layers.img.blocks) == model.cfg.vision.depth
    again = pg.with_layers(layers, stacked=True)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_is_the_same_in_both_forms(name):
    model, _, _, inp, _, flat = load_case(name)
    per_layer = from_bigvision_params(dict(flat), model.cfg, stacked=False)
    a, b = np.asarray(forward_logits(model, *_args(inp))), np.asarray(forward_logits(per_layer, *_args(inp)))
    # same ops in the same order per layer; XLA may still fuse the two programs differently
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.max(np.abs(a)))


def test_sliding_window_per_layer_matches_the_scanned_windows():
    """pg2: local layers get a Python int window in the unrolled loop and a traced one in
    the scan; a window short enough to bite must give the same logits and decode."""
    model, _, _, inp, _, _ = load_case("pg2_tiny")
    stacked = with_window(model, 3)
    per_layer = per_layer_form(stacked)
    a, b = np.asarray(forward_logits(stacked, *_args(inp))), np.asarray(forward_logits(per_layer, *_args(inp)))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.max(np.abs(a)))
    full = np.asarray(forward_logits(model, *_args(inp)))
    assert np.max(np.abs(full - a)) > 1e-3 * np.max(np.abs(a))  # the window did bite
    prefix = inp["mask_ar"] == 0
    dec = [np.asarray(decode.greedy_decode(m, inp["images"], np.where(prefix, inp["tokens"], 0),
                                           prefix, np.zeros_like(inp["mask_ar"]), max_new_tokens=6))
           for m in (stacked, per_layer)]
    np.testing.assert_array_equal(dec[1], dec[0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_both_forms_stay_near_float32(name):
    """bf16 rounding differs between the two programs, so they are each held to the
    float32 logits instead: worst element within 6% of max |logit|, mean within 0.6%
    (measured: 4.6% / 0.44% on these random tiny models, either form)."""
    model, _, _, inp, _, flat = load_case(name)
    f32 = np.asarray(forward_logits(model, *_args(inp)))
    scale = np.max(np.abs(f32))
    for stacked in (True, False):
        bf = from_bigvision_params(dict(flat), model.cfg, dtype=jnp.bfloat16, stacked=stacked)
        err = np.abs(np.asarray(forward_logits(bf, *_args(inp)), np.float32) - f32) / scale
        assert err.max() < 6e-2 and err.mean() < 6e-3, (stacked, err.max(), err.mean())
