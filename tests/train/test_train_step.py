"""The training step: accumulation equals the big batch, frozen parts get no state or update."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
import pytest

from pgbench import optim
from pgbench.config import PRESETS
from pgbench.checkpoints.random_params import init_params
from pgbench.train_step import LossConfig, accumulated_grad, make_train_step, split_micro_batches


def _batch(cfg, b, t, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, cfg.llm.vocab_size, (b, t)).astype(np.int32)
    n_prefix = 3
    mask_ar = np.zeros((b, t), np.int32)
    mask_ar[:, n_prefix:] = 1
    mask_loss = mask_ar.copy()
    lengths = rng.integers(n_prefix + 1, t + 1, b)
    input_mask = np.arange(t)[None] < lengths[:, None]
    mask_loss[~input_mask] = 0
    res = cfg.vision.image_size
    return dict(images=rng.uniform(-1, 1, (b, res, res, 3)).astype(np.float32), tokens=tokens,
                input_mask=input_mask, mask_ar=mask_ar, mask_loss=mask_loss)


def _run(model, batch, micro, freeze=(), steps=2):
    trainable, frozen = eqx.partition(model, optim.trainable_mask(model, freeze))
    trainable = jax.tree.map(lambda a: a.copy(), trainable)  # the step donates its input
    tx, sched = optim.bigvision_optimizer(trainable, lr=1e-3, wd=1e-4, total_steps=10)
    opt_state = tx.init(trainable)
    step_fn = make_train_step(tx, sched, lr=1e-3, lcfg=LossConfig(), seed=0)
    losses = []
    for s in range(steps):
        trainable, opt_state, m = step_fn(trainable, frozen, opt_state,
                                          split_micro_batches(batch, micro), s)
        losses.append(float(m["loss"]))
    return eqx.combine(trainable, frozen), opt_state, losses


@pytest.mark.slow  # four compiles of a training step (~40 s on a shared 2-core CPU)
def test_accumulation_equals_big_batch():
    cfg = PRESETS["pg1-tiny"]
    model = init_params(cfg, jax.random.key(1))
    batch = _batch(cfg, 8, 12)
    # The gradient: mean over 4 micro-batches of 2 == the gradient of the batch of 8, to float
    # rounding (1e-5 of the gradient's largest entry; some leaves are ~1e-11 rounding noise).
    trainable, frozen = eqx.partition(model, optim.trainable_mask(model))
    key = jax.random.key(0)
    grads = [jax.jit(accumulated_grad, static_argnums=4)(trainable, frozen,
                                                         split_micro_batches(batch, m), key, LossConfig())
             for m in (8, 2)]
    np.testing.assert_allclose(grads[1][0], grads[0][0], rtol=1e-6)
    scale = max(float(np.abs(b).max()) for b in jax.tree.leaves(grads[0][1]))
    for a, b in zip(jax.tree.leaves(grads[1][1]), jax.tree.leaves(grads[0][1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * scale)
    # Two optimizer steps: Adam divides each gradient by its own running RMS, so rounding noise
    # in a near-zero gradient can move a parameter by a sizeable part of lr (1e-3): parameters
    # agree to lr / 20, losses to 1e-5 (the gradient check above is the strict one).
    big, _, l_big = _run(model, batch, micro=8)
    acc, _, l_acc = _run(model, batch, micro=2)
    np.testing.assert_allclose(l_acc, l_big, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(acc), jax.tree.leaves(big)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=5e-5)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(acc), jax.tree.leaves(model)))


def test_frozen_parts_unchanged_and_stateless():
    cfg = PRESETS["pg1-tiny"]
    model = init_params(cfg, jax.random.key(1))
    trained, opt_state, _ = _run(model, _batch(cfg, 4, 12), micro=4, freeze=["img", "llm/embed"], steps=2)
    before, after = optim.param_names(model), optim.param_names(trained)
    for name in before:
        same = np.array_equal(np.asarray(before[name]), np.asarray(after[name]))
        assert same == (name.startswith("img/") or name == "llm/input_embedding"), name
    n_trained = sum(1 for n in before if n.startswith("llm/") and n != "llm/input_embedding")
    state_arrays = [a for a in jax.tree.leaves(opt_state) if a.ndim > 0]
    assert len(state_arrays) == 2 * n_trained  # Adam's mu and nu, for trained parameters only


def test_per_layer_loss_has_the_stacked_gradient():
    """The step keeps stacked parameters and may run them per layer (``LossConfig.layers``):
    same loss and the same stacked gradient, to float rounding (the two programs are fused
    differently), with dropout on (each layer must draw the same mask in both forms)."""
    cfg = PRESETS["pg1-tiny"]
    model = init_params(cfg, jax.random.key(1))
    trainable, frozen = eqx.partition(model, optim.trainable_mask(model, ["llm/embed"]))
    batch = split_micro_batches(_batch(cfg, 4, 12), 2)
    key = jax.random.key(0)
    out = {form: jax.jit(accumulated_grad, static_argnums=4)(trainable, frozen, batch, key,
                                                               LossConfig(dropout=0.1, layers=form))
           for form in ("stacked", "per_layer")}
    (l_st, g_st), (l_pl, g_pl) = out["stacked"], out["per_layer"]
    np.testing.assert_allclose(l_pl, l_st, rtol=1e-6)
    assert jax.tree.structure(g_pl) == jax.tree.structure(g_st)  # stacked, as the parameters
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(g_st))
    for a, b in zip(jax.tree.leaves(g_pl), jax.tree.leaves(g_st)):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * scale)


def test_layer_form_auto_is_per_layer_on_one_cpu_device():
    from pgbench.train_step import runs_per_layer

    model = init_params(PRESETS["pg1-tiny"], jax.random.key(1))
    single_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
    assert runs_per_layer(model, LossConfig()) == single_cpu
    assert runs_per_layer(model, LossConfig(layers="per_layer"))
    assert not runs_per_layer(model, LossConfig(layers="stacked"))
    with pytest.raises(ValueError, match="layer form"):
        LossConfig(layers="unrolled")
