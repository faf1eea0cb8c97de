"""The training loss against an independent float64 numpy computation from full logits.

``suffix_loss`` projects only the text positions to the vocabulary; the reference here takes
``forward``'s logits over the whole sequence (image positions included), slices the text
part off and computes big_vision's loss in float64: per-example mean over suffix tokens of
-Σ_v target_v log p_v with target 1 - ε on the label and ε / (V - 1) elsewhere.
Tolerance: rtol 1e-5 (float32 forward vs float64 reduction).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgbench.model import paligemma as pg
from tests.model._reference import load_case


def _reference_loss(logits, tokens, mask_loss, eps):
    logits = np.asarray(logits, np.float64)
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    v = logp.shape[-1]
    target = np.full(logp.shape, eps / (v - 1))
    np.put_along_axis(target, tokens[..., None], 1.0 - eps, axis=-1)
    nll = -(target * logp).sum(-1)
    w = mask_loss.astype(np.float64)
    return (nll * w).sum(-1) / np.maximum(w.sum(-1), 1.0)


@pytest.fixture(scope="module", params=["pg1_tiny", "pg2_tiny"])
def case(request):
    model, _, _, inp, _, _ = load_case(request.param)
    return model, inp


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_loss_equals_float64_reference_from_full_logits(case, eps):
    model, inp = case
    t, m, ar, ml = inp["tokens"], inp["input_mask"], inp["mask_ar"], inp["mask_loss"]
    logits, zimg = pg.forward(model, inp["images"], t[:, :-1], m[:, :-1], ar[:, :-1],
                              final_softcap=False)
    text = np.asarray(logits)[:, zimg.shape[1]:]
    want = _reference_loss(text, t[:, 1:], ml[:, 1:], eps)
    got = pg.suffix_loss(model, inp["images"], t, m, ar, ml, label_smoothing=eps)
    assert got.shape == (t.shape[0],) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_only_text_positions_reach_the_vocabulary(case):
    """The projection to the vocabulary sees [B, T - 1, D], never the image positions."""
    model, inp = case
    args = [inp[k] for k in ("images", "tokens", "input_mask", "mask_ar", "mask_loss")]
    jaxpr = jax.make_jaxpr(lambda mdl: pg.suffix_loss(mdl, *args))(model)
    vocab, t = model.cfg.llm.vocab_size, inp["tokens"].shape[1]
    shapes = [v.aval.shape for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars if hasattr(v.aval, "shape")]
    vocab_shapes = {s for s in shapes if s and s[-1] == vocab}
    assert vocab_shapes and all(s[:2] == (inp["tokens"].shape[0], t - 1) for s in vocab_shapes
                                if len(s) == 3), vocab_shapes


def test_dropout_and_remat():
    """Rate 0 is the plain loss; a positive rate changes it, deterministically per key;
    rematerialisation changes neither the loss nor its gradient."""
    model, _, _, inp, _, _ = load_case("pg2_tiny")
    args = [inp[k] for k in ("images", "tokens", "input_mask", "mask_ar", "mask_loss")]
    key = jax.random.key(0)

    @jax.jit
    def run(mdl, key):
        def f(mdl, rate, remat):
            return pg.suffix_loss(mdl, *args, dropout=rate, dropout_key=key if rate else None,
                                  remat=remat).mean()
        plain = jax.value_and_grad(f)(mdl, 0.0, None)
        remat = jax.value_and_grad(f)(mdl, 0.0, "nothing_saveable")
        dropped = (f(mdl, 0.3, None), f(mdl, 0.3, None), f(mdl, 0.3, "nothing_saveable"))
        return plain, remat, dropped

    (l0, g0), (l1, g1), (d1, d2, d3) = run(model, key)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
    assert float(d1) == float(d2) and abs(float(d1) - float(l0)) > 1e-4
    np.testing.assert_allclose(d3, d1, rtol=1e-6)


def test_bad_remat_policy_is_one_clear_error(case):
    model, inp = case
    args = [inp[k] for k in ("images", "tokens", "input_mask", "mask_ar", "mask_loss")]
    with pytest.raises(ValueError, match="remat policy"):
        pg.suffix_loss(model, *args, remat="everything_forgotten")
