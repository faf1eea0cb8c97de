"""One optimizer step of transfer: loss, gradient (accumulated over micro-batches), update.

The model is split once into its trained part and its frozen part (``eqx.partition`` with
``optim.trainable_mask``); only the trained part is differentiated, updated and carries
optimizer state. A step's batch arrives as micro-batches ``[K, m, ...]``: the gradient is
the mean of the K micro-batch gradients, which equals the gradient of the mean loss over
the K·m examples (every micro-batch has m examples), so batch 256 fits a small device as
K micro-batches of 256 / K.

The parameters (and so the optimizer state and checkpoints) keep the layer form they were
loaded in; the loss may run the layers in the other form (``LossConfig.layers``): per layer
on a single CPU device, where the unrolled loop's backward pass runs faster than
``lax.scan``'s (no per-layer dynamic slices and updates of the stacked weights, residuals
and gradients; compare ``python -m benchmarks.train_cpu --layers stacked``). The conversion
is one split per stacked array inside the compiled step; its gradient is one concatenate
back into the stacked form.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from pgbench.model import paligemma as pg

BATCH_KEYS = ("images", "tokens", "input_mask", "mask_ar", "mask_loss")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The static switches of the training forward (hashable: part of the compiled step)."""

    label_smoothing: float = 0.0
    dropout: float = 0.0
    remat: str | None = None
    attn_impl: str = "xla"
    compute_dtype: Any = None
    layers: str = "auto"  # the form the loss runs the layers in: auto | stacked | per_layer

    def __post_init__(self):
        if self.layers not in LAYER_FORMS:
            raise ValueError(f"unknown layer form {self.layers!r}; expected one of {LAYER_FORMS}")


LAYER_FORMS = ("auto", "stacked", "per_layer")


def runs_per_layer(trainable, lcfg: LossConfig) -> bool:
    """Whether the loss runs the layers per layer: as ``lcfg.layers`` says, or for ``auto``
    where the model would be loaded per layer for inference (``default_stacked``: the CPU)
    and the step runs on one CPU device (``cpu_paths``; a multi-device CPU run stands in for
    an accelerator mesh and keeps the accelerator's form)."""
    from pgbench.model.cpu_paths import single_cpu_device_run
    from pgbench.model.layer_forms import default_stacked

    if lcfg.layers != "auto":
        return lcfg.layers == "per_layer"
    return not default_stacked() and single_cpu_device_run(*jax.tree.leaves(trainable))


def batch_loss(trainable, frozen, batch, key, lcfg: LossConfig):
    """Mean over the batch of the per-example suffix loss (big_vision's training_loss)."""
    model = eqx.combine(trainable, frozen)
    if lcfg.layers == "stacked" or runs_per_layer(trainable, lcfg):
        model = pg.with_layers(model, stacked=lcfg.layers == "stacked")
    per_example = pg.suffix_loss(
        model, *(batch[k] for k in BATCH_KEYS), label_smoothing=lcfg.label_smoothing,
        attn_impl=lcfg.attn_impl, compute_dtype=lcfg.compute_dtype, dropout=lcfg.dropout,
        dropout_key=key if lcfg.dropout else None, remat=lcfg.remat)
    return jnp.mean(per_example)


def accumulated_grad(trainable, frozen, micro_batches, key, lcfg: LossConfig):
    """(mean loss, mean gradient) over micro-batches [K, m, ...]; micro-batch k's dropout key
    is ``fold_in(key, k)``."""
    grad_fn = jax.value_and_grad(batch_loss)
    k_steps = micro_batches["tokens"].shape[0]
    if k_steps == 1:
        one = jax.tree.map(lambda a: a[0], micro_batches)
        return grad_fn(trainable, frozen, one, jax.random.fold_in(key, 0), lcfg)

    def body(carry, xs):
        loss_sum, grad_sum = carry
        mb, k = xs
        loss, grad = grad_fn(trainable, frozen, mb, jax.random.fold_in(key, k), lcfg)
        return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grad)), None

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)
    (loss, grad), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros),
                                   (micro_batches, jnp.arange(k_steps)))
    grad = jax.tree.map(lambda g, p: (g / k_steps).astype(p.dtype), grad, trainable)
    return loss / k_steps, grad


def make_train_step(tx, schedule, *, lr: float, lcfg: LossConfig, seed: int):
    """A jitted ``step_fn(trainable, frozen, opt_state, micro_batches, step) ->
    (trainable, opt_state, metrics)``; ``metrics`` holds the loss, the gradient's global norm
    and the learning rate used. The dropout key is ``fold_in(key(seed), step)``: a resumed run
    draws the same masks as an uninterrupted one."""
    from pgbench.optim import apply_updates

    @functools.partial(jax.jit, donate_argnums=(0, 2))  # trained params and optimizer state
    def step_fn(trainable, frozen, opt_state, micro_batches, step):
        key = jax.random.fold_in(jax.random.key(seed), step)
        loss, grad = accumulated_grad(trainable, frozen, micro_batches, key, lcfg)
        updates, opt_state = tx.update(grad, opt_state, trainable)
        trainable = apply_updates(trainable, updates)
        gnorm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grad)))
        return trainable, opt_state, {"loss": loss, "grad_norm": gnorm, "lr": lr * schedule(step)}

    return step_fn


def split_micro_batches(batch, micro_batch: int):
    """A host batch of B examples -> the same arrays as [B / micro_batch, micro_batch, ...]."""
    b = batch["tokens"].shape[0]
    if b % micro_batch:
        raise ValueError(f"batch {b} is not a multiple of the micro-batch {micro_batch}")
    return {k: v.reshape(b // micro_batch, micro_batch, *v.shape[1:]) for k, v in batch.items()}
