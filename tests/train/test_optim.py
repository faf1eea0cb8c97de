"""The optimizer against a hand-written float64 numpy reference of big_vision's chain.

Reference (big_vision/optax.py + utils.create_learning_rate_schedule): clip the global norm
to 1, Adam moments (b1 0.9, b2 0.999, eps 1e-8, bias-corrected), × lr, + wd · param on
kernels, × schedule(count) (linear warm-up from 0, cosine to 0), negate. Tolerance on the
O(1) parameters: rtol 1e-5 + atol 1e-6 (a few float32 ulps over six steps; each step moves
them by ~1e-3..1e-2, and a misplaced lr or wd factor by more than 1e-4).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pgbench import optim
from pgbench.config import PRESETS
from pgbench.errors import InputError
from pgbench.checkpoints.random_params import init_params


def _schedule(step, total, warm):
    progress = min(max((step - warm) / (total - warm), 0.0), 1.0)
    lr = 0.5 * (1 + math.cos(math.pi * progress))
    return lr * min(1.0, step / warm) if warm else lr


def _reference(params, grads_seq, *, lr, wd, total, warm, decayed):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    mu = {k: np.zeros_like(v) for k, v in p.items()}
    nu = {k: np.zeros_like(v) for k, v in p.items()}
    out = []
    for t, grads in enumerate(grads_seq):
        g = {k: np.asarray(v, np.float64) for k, v in grads.items()}
        norm = math.sqrt(sum(float((x * x).sum()) for x in g.values()))
        if norm > 1.0:
            g = {k: x / norm for k, x in g.items()}
        sched = _schedule(t, total, warm)
        for k in p:
            mu[k] = 0.9 * mu[k] + 0.1 * g[k]
            nu[k] = 0.999 * nu[k] + 0.001 * g[k] ** 2
            mhat, vhat = mu[k] / (1 - 0.9 ** (t + 1)), nu[k] / (1 - 0.999 ** (t + 1))
            u = lr * mhat / (np.sqrt(vhat) + 1e-8)
            if k in decayed:
                u = u + wd * p[k]
            p[k] = p[k] - sched * u
        out.append({k: v.copy() for k, v in p.items()})
    return out


def test_schedule_matches_big_vision_formula():
    sched = optim.cosine_schedule(100)
    assert optim.warmup_steps(100) == 5
    for s in (0, 1, 4, 5, 6, 50, 99, 100, 120):
        assert float(sched(s)) == pytest.approx(_schedule(s, 100, 5), abs=1e-7)
    assert optim.to_steps(0.4) == 1 and optim.to_steps(0) == 0 and optim.to_steps(2.5) == 2


def test_first_steps_equal_numpy_reference():
    rng = np.random.default_rng(0)
    params = {"img": {"head_kernel": rng.normal(size=(3, 4)).astype(np.float32),
                      "head_bias": rng.normal(size=(3,)).astype(np.float32)},
              "llm": {"input_embedding": rng.normal(size=(5, 2)).astype(np.float32)}}
    flat = lambda t: {f"{a}/{b}": v for a, d in t.items() for b, v in d.items()}  # noqa: E731
    grads_seq = [jax.tree.map(lambda x: (rng.normal(size=x.shape) * s).astype(np.float32), params)
                 for s in (3.0, 0.1, 2.0, 0.05, 1.0, 0.3)]  # some clipped, some not
    lr, wd, total = 1e-2, 3e-3, 20
    tx, _ = optim.bigvision_optimizer(params, lr=lr, wd=wd, total_steps=total)
    state, p = tx.init(params), jax.tree.map(jnp.asarray, params)
    want = _reference(flat(params), [flat(g) for g in grads_seq], lr=lr, wd=wd, total=total,
                      warm=optim.warmup_steps(total), decayed={"img/head_kernel"})
    for t, g in enumerate(grads_seq):
        u, state = tx.update(g, state, p)
        p = optim.apply_updates(p, u)
        for k, v in flat(p).items():
            np.testing.assert_allclose(np.asarray(v), want[t][k], rtol=1e-5, atol=1e-6, err_msg=f"{t} {k}")
    # Step 0 moves nothing (schedule 0); later steps do.
    assert np.array_equal(np.asarray(want[0]["img/head_bias"], np.float32), params["img"]["head_bias"])


def test_decay_covers_big_vision_kernels_only():
    model = init_params(PRESETS["pg1-tiny"], jax.random.key(0))
    import re
    names = list(optim.param_names(model))
    decayed = sorted(n for n in names if re.fullmatch(optim.DECAYED, n))
    assert decayed == sorted(["img/patch_kernel", "img/head_kernel"] + [
        f"img/blocks/{f}_kernel" for f in ("q", "k", "v", "out", "mlp0", "mlp1")])


def test_freeze_aliases_and_regexes():
    model = init_params(PRESETS["pg1-tiny"], jax.random.key(0))
    names = optim.param_names(model)
    flags = dict(zip(names, jax.tree.leaves(optim.trainable_mask(model, ["img", "llm/embed"]))))
    assert not any(v for n, v in flags.items() if n.startswith("img/"))
    assert not flags["llm/input_embedding"] and flags["llm/blocks/q"] and flags["llm/final_norm"]
    flags = dict(zip(names, jax.tree.leaves(optim.trainable_mask(model, [r"llm/blocks/(q|k|v)"]))))
    assert [n for n, v in flags.items() if not v] == ["llm/blocks/q", "llm/blocks/k", "llm/blocks/v"]
    with pytest.raises(InputError, match="matches no parameter"):
        optim.trainable_mask(model, ["vision"])
    with pytest.raises(InputError, match="not a valid regular expression"):
        optim.trainable_mask(model, ["img/("])


@pytest.mark.parametrize("scale", [0.01, 0.5, 3.0, 1e4])
def test_clip_by_global_norm_matches_optax(scale):
    """The product form equals optax's ``(t / norm) * max_norm`` to a float32 rounding of
    the factor when it clips, and passes gradients through untouched when it does not."""
    rng = np.random.default_rng(1)
    grads = {"a": jnp.asarray(rng.normal(size=(7, 5)) * scale, jnp.float32),
             "b": jnp.asarray(rng.normal(size=(11,)) * scale, jnp.float32)}
    got, _ = optim.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    want, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    norm = float(optax.tree.norm(grads))
    for k in grads:
        if norm < 1.0:
            assert np.array_equal(np.asarray(got[k]), np.asarray(grads[k]))
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=2 * 2.0 ** -23, atol=0)
    assert float(optax.tree.norm(got)) == pytest.approx(min(norm, 1.0), rel=1e-6)
