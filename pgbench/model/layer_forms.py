"""The two forms a tower's layers come in, and the conversions between them.

- stacked: one block module whose arrays carry a leading [L] axis, run with ``lax.scan``
  (one compiled layer: the form for training and quick compiles);
- per layer: a tuple of block modules without that axis, run as an unrolled loop. On CPU
  a scanned layer copies its weights out of the stack on every step; the unrolled loop
  reads each weight in place (faster inference, see benchmarks/layer_forms.py).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp


def is_stacked(blocks: eqx.Module | tuple) -> bool:
    return not isinstance(blocks, tuple)


def unstack_layers(blocks: eqx.Module | tuple) -> tuple:
    """Stacked blocks -> a tuple of per-layer blocks (eager: copies each layer out once)."""
    if not is_stacked(blocks):
        return blocks
    depth = jax.tree.leaves(blocks)[0].shape[0]
    return tuple(jax.tree.map(lambda a: a[i], blocks) for i in range(depth))


def stack_layers(blocks: eqx.Module | tuple) -> eqx.Module:
    """A tuple of per-layer blocks -> one stacked block (the inverse of unstack_layers)."""
    if is_stacked(blocks):
        return blocks
    return jax.tree.map(lambda *a: jnp.stack(a), *blocks)
