"""big_vision's transfer optimizer (optax), its schedule, and which parameters train.

The chain, in big_vision's order (``big_vision/optax.py``)::

    clip_by_global_norm(1.0) -> scale_by_adam(0.9, 0.999) -> scale(lr)
    -> add_decayed_weights(wd) on kernels -> x schedule(step) -> scale(-1)

so weight decay is *not* multiplied by lr (the paper's wd values are ~0.1·lr), but it is
multiplied by the schedule. The schedule (``create_learning_rate_schedule`` with
``decay_type='cosine', warmup_percent=0.05``) is 0 at step 0: the first update only warms
the Adam moments.

Parameters are named by their path in the Equinox model, joined with "/"
(``img/blocks/q_kernel``, ``llm/input_embedding``, ``llm/blocks/gate``; see
:func:`param_names`). big_vision decays ``.*/kernel$``, which in its names are the SigLIP
tower's kernels and the projection ``img/head/kernel`` only (the Gemma weights are named
``w``, ``gating_einsum``, ``linear``, ``input_embedding``): :data:`DECAYED` is the same set
under pgbench's names. Frozen parameters are split off before differentiation
(:func:`trainable_mask`), so they get no gradient, no update and no optimizer state, and the
global norm is taken over the trained ones only, as big_vision's masked chain does.
"""

from __future__ import annotations

import re
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from pgbench.errors import InputError

# big_vision's ".*/kernel$" under pgbench's parameter names.
DECAYED = r"img/(patch_kernel|head_kernel|blocks/\w+_kernel)"

# Short names for --freeze; anything else is a regular expression over parameter names.
FREEZE_ALIASES = {
    "img": r"img/.*",  # the vision tower and the projection (big_vision's 'img/.*')
    "llm": r"llm/.*",
    "llm/embed": r"llm/input_embedding",  # the (tied) token embedding
    "embed": r"llm/input_embedding",
}


def _name(path) -> str:
    parts = []
    for k in path:
        parts.append(str(getattr(k, "name", getattr(k, "idx", getattr(k, "key", k)))))
    return "/".join(parts)


def param_names(model) -> dict[str, jax.Array]:
    """Every array of the model by its "/"-joined attribute path."""
    leaves = jax.tree_util.tree_flatten_with_path(model)[0]
    return {_name(path): leaf for path, leaf in leaves if eqx.is_array(leaf)}


def name_tree(model):
    """A pytree shaped like the model with each array replaced by its name."""
    return jax.tree_util.tree_map_with_path(lambda p, x: _name(p) if eqx.is_array(x) else x, model)


def freeze_patterns(freeze: Sequence[str]) -> list[str]:
    return [FREEZE_ALIASES.get(f, f) for f in freeze]


def trainable_mask(model, freeze: Sequence[str] = ()):
    """A bool pytree like the model: False where a --freeze pattern (alias or regex, full
    match on the name) covers the parameter. A pattern that matches nothing, or is not a
    valid regex, is an :class:`InputError` listing the parameter names."""
    names = list(param_names(model))
    compiled = []
    for given, pat in zip(freeze, freeze_patterns(freeze)):
        try:
            rx = re.compile(pat)
        except re.error as e:
            raise InputError(f"--freeze {given!r} is not a valid regular expression: {e}") from None
        if not any(rx.fullmatch(n) for n in names):
            raise InputError(f"--freeze {given!r} matches no parameter; aliases: "
                             f"{', '.join(FREEZE_ALIASES)}; parameter names: {', '.join(names)}")
        compiled.append(rx)
    return jax.tree_util.tree_map_with_path(
        lambda p, x: eqx.is_array(x) and not any(rx.fullmatch(_name(p)) for rx in compiled), model)


def to_steps(x: float) -> int:
    """big_vision's rounding of a duration to steps: nearest, but at least 1 unless 0."""
    return max(1, round(x)) if x else 0


def warmup_steps(total_steps: int, warmup_percent: float = 0.05) -> int:
    return to_steps(warmup_percent * total_steps)


def cosine_schedule(total_steps: int, warmup_percent: float = 0.05):
    """step -> f32 multiplier: linear warm-up over ``warmup_percent`` of the steps (from 0 at
    step 0), then cosine from 1 to 0 at ``total_steps`` (big_vision's formula)."""
    warm = warmup_steps(total_steps, warmup_percent)
    if total_steps > 1 and warm >= total_steps:
        raise InputError(f"warm-up ({warm} steps) must be shorter than training ({total_steps} steps)")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        progress = jnp.clip((step - warm) / float(max(total_steps - warm, 1)), 0.0, 1.0)
        lr = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        if warm:
            lr = lr * jnp.minimum(1.0, step / warm)
        return jnp.asarray(lr, jnp.float32)
    return schedule


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` with the scaling as one product per element.

    optax clips with ``(t / norm) * max_norm`` under a ``select``: XLA counts the division
    as expensive, so it writes the clipped gradient out once more instead of folding it
    into the Adam moments that read it (a pass over every gradient per step; the train-mid
    step's figures before and after are in docs/transfer.md). ``t * (max_norm / norm)``
    differs from optax's result by at most a float32 rounding of the factor
    (tests/train/test_optim.py)."""
    def update(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        factor = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return jax.tree.map(lambda t: t * factor.astype(t.dtype), updates), state
    return optax.GradientTransformation(optax.init_empty_state, update)


def _float32(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` run on float32 copies of updates and params: optimizer state is float32 even
    for bfloat16 parameters."""
    def f32(tree):
        return jax.tree.map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, tree)

    def init(params):
        return tx.init(f32(params))

    def update(updates, state, params=None):
        return tx.update(f32(updates), state, None if params is None else f32(params))
    return optax.GradientTransformation(init, update)


def bigvision_optimizer(params, *, lr: float, wd: float = 0.0, total_steps: int,
                        warmup_percent: float = 0.05, clip_norm: float | None = 1.0,
                        b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """The chain for the trained parameters ``params`` (a pytree with None where frozen).

    Returns ``(tx, schedule)``; ``schedule(step)`` is the multiplier (lr = lr * it).
    """
    schedule = cosine_schedule(total_steps, warmup_percent)
    decay_mask = jax.tree_util.tree_map_with_path(
        lambda p, x: bool(re.fullmatch(DECAYED, _name(p))), params)
    parts = [clip_by_global_norm(clip_norm)] if clip_norm else []
    parts += [optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=jnp.float32), optax.scale(lr)]
    if wd:
        parts.append(optax.add_decayed_weights(wd, decay_mask))
    parts += [optax.scale_by_schedule(schedule), optax.scale(-1.0)]
    return _float32(optax.chain(*parts)), schedule


def apply_updates(params, updates):
    """params + updates, each in the parameter's own dtype."""
    return jax.tree.map(lambda p, u: (p.astype(jnp.float32) + u).astype(p.dtype), params, updates)


def steps_for(epochs: float, n_examples: int, batch_size: int) -> int:
    """Training steps for ``epochs`` passes over ``n_examples`` (big_vision's total_epochs)."""
    return to_steps(epochs * n_examples / batch_size)

