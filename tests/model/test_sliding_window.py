"""Gemma 2's sliding window (transformers' semantics, off by default as in big_vision).

The window is OR-ed with the prefix block: image + prefix queries are never limited;
suffix and generated queries see only keys less than ``window`` positions back. Only the
local layers (even indices) are windowed. The cached decode must agree with a full
forward under the same window.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgbench import decode
from pgbench.model import gemma
from pgbench.model import paligemma as pg
from tests.model._reference import forward_logits, load_case, with_window


@pytest.fixture(scope="module")
def pg2():
    model, cfg, _, inp, out, _ = load_case("pg2_tiny")
    return model, inp


def test_only_even_layers_are_local(pg2):
    model, _ = pg2
    cfg = model.cfg.replace_llm(depth=4, sliding_window=8, apply_sliding_window=True).llm
    w = np.asarray(gemma._layer_windows(cfg))
    assert w[0] == w[2] == 8 and w[1] == w[3] == gemma.NO_WINDOW
    assert gemma._layer_windows(model.cfg.llm) is None  # off: big_vision semantics


def test_window_covering_the_sequence_changes_nothing(pg2):
    model, inp = pg2
    args = (inp["images"], inp["tokens"], inp["input_mask"], inp["mask_ar"])
    n = model.cfg.num_image_tokens + inp["tokens"].shape[1]
    off = np.asarray(forward_logits(model, *args))
    on = np.asarray(forward_logits(with_window(model, n), *args))
    np.testing.assert_array_equal(on, off)


def test_short_window_limits_only_suffix_queries(pg2):
    model, inp = pg2
    args = (inp["images"], inp["tokens"], inp["input_mask"], inp["mask_ar"])
    window = 3
    off = np.asarray(forward_logits(model, *args))
    on = np.asarray(forward_logits(with_window(model, window), *args))
    n_img = model.cfg.num_image_tokens
    c = np.cumsum(np.concatenate([np.zeros((2, n_img), np.int32), inp["mask_ar"]], 1), 1)
    valid = np.concatenate([np.ones((2, n_img), bool), inp["input_mask"]], 1)
    prefix = (c == 0) & valid
    # image + prefix rows see exactly the same keys, and so do the first `window` positions
    np.testing.assert_array_equal(on[prefix], off[prefix])
    np.testing.assert_array_equal(on[:, :window], off[:, :window])
    # a suffix query whose prefix lies more than `window` back now sees less
    suffix = (c > 0) & valid
    assert suffix.any()
    diff = np.abs(on - off).max(-1)
    assert np.all(diff[suffix] > 1e-4), diff[suffix]


_prefill = jax.jit(decode.prefill, static_argnames=("max_new_tokens",))
_step = jax.jit(decode.step)


@pytest.mark.parametrize("window", [pytest.param(None, marks=pytest.mark.slow), 4])
def test_cached_decode_matches_full_forward(pg2, window):
    """Per-step decode logits == the full forward over [image, prompt, generated[:-1]]
    (flags 0 on the prompt and 1 after, right padding), with or without the window.
    Step 0 comes without the final soft-cap, later steps with it (big_vision)."""
    model, inp = pg2
    model = with_window(model, window)
    steps = 5
    images, tokens = inp["decode_images"], inp["decode_tokens"]
    mask, ar = inp["decode_input_mask"], inp["decode_mask_ar"]
    state = _prefill(model, images, tokens, mask, ar, max_new_tokens=steps)
    logits = [state.logits]
    tok = jnp.argmax(state.logits, -1).astype(jnp.int32)
    generated = [tok]
    for i in range(steps - 1):
        lg, cache = _step(model, state, tok, i=i)
        state = state._replace(cache=cache)
        logits.append(lg)
        tok = jnp.argmax(lg, -1).astype(jnp.int32)
        generated.append(tok)
    logits = np.stack([np.asarray(x) for x in logits], 1)  # [B, steps, V]
    generated = np.stack([np.asarray(x) for x in generated], 1)

    # one right-padded batch; padding (flag 1, invalid) is invisible to real positions
    b, t = tokens.shape
    length = t + steps - 1
    seq = np.zeros((b, length), np.int32)
    flags = np.ones((b, length), np.int32)
    valid = np.zeros((b, length), bool)
    for row in range(b):
        prompt = tokens[row][mask[row]]
        n = len(prompt)
        seq[row, :n + steps - 1] = np.concatenate([prompt, generated[row, :-1]])
        flags[row, :n] = 0
        valid[row, :n + steps - 1] = True
    full = np.asarray(jax.jit(pg.forward, static_argnames="final_softcap")(
        model, images, seq, valid, flags, final_softcap=False)[0])
    cap = model.cfg.llm.final_logits_softcap
    n_img = model.cfg.num_image_tokens
    for row in range(b):
        at = n_img + mask[row].sum() - 1 + np.arange(steps)
        want = full[row, at]
        want[1:] = cap * np.tanh(want[1:] / cap)  # steps >= 1: the LLM's capped logits
        scale = np.abs(want).max()
        assert np.abs(logits[row] - want).max() <= 2e-5 * scale, row
