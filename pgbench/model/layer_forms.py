"""The two forms a tower's layers come in, the one loop that runs either, and the
conversions between them.

- stacked: one block module whose arrays carry a leading [L] axis, run with ``lax.scan``
  (one compiled layer: the form for training, quick compiles and accelerators);
- per layer: a tuple of block modules without that axis, run as an unrolled loop. On CPU
  a scanned layer copies its weights out of the stack on every step; the unrolled loop
  reads each weight in place (faster inference, see benchmarks/layer_forms.py).

``default_stacked(backend)`` is the one place that picks a form per backend.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp

Carry = TypeVar("Carry")


def default_stacked(backend: str | None = None) -> bool:
    """The layer form to load a model in for inference on ``backend`` (a device platform
    name; None: ``jax.default_backend()``, where arrays land): per layer on CPU, where the
    unrolled loop measured ~2x faster for generation (benchmarks/layer_forms.py), stacked
    elsewhere (one compiled layer; accelerators read stacked weights without a copy).
    Training keeps its parameters stacked and runs them per layer where this says so
    (``train_step.LossConfig.layers``)."""
    return (backend or jax.default_backend()) != "cpu"


def is_stacked(blocks: eqx.Module | tuple) -> bool:
    return not isinstance(blocks, tuple)


def run_layers(body: Callable[[Carry, eqx.Module, int | jax.Array], Carry], carry: Carry,
               blocks: eqx.Module | tuple, *, remat_policy=None) -> Carry:
    """Thread ``carry`` through every layer: ``carry = body(carry, layer, i)``.

    Stacked blocks run under ``lax.scan`` with ``i`` a traced i32 scalar; per-layer blocks
    as an unrolled loop with ``i`` a Python int (so per-layer constants stay static).
    Same math either way. ``remat_policy``: a ``jax.checkpoint`` policy applied to each
    layer (None: no rematerialisation).
    """
    if is_stacked(blocks):
        depth = jax.tree.leaves(blocks)[0].shape[0]

        def step(carry, scanned):
            layer, i = scanned
            return body(carry, layer, i), None

        if remat_policy is not None:
            step = jax.checkpoint(step, policy=remat_policy)
        carry, _ = jax.lax.scan(step, carry, (blocks, jnp.arange(depth, dtype=jnp.int32)))
        return carry
    for i, layer in enumerate(blocks):
        run = functools.partial(body, i=i)
        if remat_policy is not None:
            run = jax.checkpoint(run, policy=remat_policy)
        carry = run(carry, layer)
    return carry


def unstack_layers(blocks: eqx.Module | tuple) -> tuple:
    """Stacked blocks -> a tuple of per-layer blocks (eager: copies each layer out once).

    One ``split`` per array rather than a slice per layer: under ``jax.grad`` (a training
    step that runs stacked parameters per layer) its transpose is one concatenate back into
    the stacked gradient, where L slices would transpose to L zero-padded full-size adds."""
    if not is_stacked(blocks):
        return blocks
    leaves, treedef = jax.tree.flatten(blocks)
    depth = leaves[0].shape[0]
    layers = [[p.reshape(p.shape[1:]) for p in jnp.split(a, depth, axis=0)] for a in leaves]
    return tuple(treedef.unflatten([pieces[i] for pieces in layers]) for i in range(depth))


def stack_layers(blocks: eqx.Module | tuple) -> eqx.Module:
    """A tuple of per-layer blocks -> one stacked block (the inverse of unstack_layers)."""
    if is_stacked(blocks):
        return blocks
    return jax.tree.map(lambda *a: jnp.stack(a), *blocks)
