"""Pieces shared by the forward and backward kernels.

Kernel-side layout: q/o ``[B, H, Nq, D]``, k/v ``[B, KVH, Nk, D]`` (heads before
tokens so one (batch, head) tile is a contiguous 2-D slab on every backend), and four
int32 metadata vectors shaped ``[B, 1, N]``:

- ``qc``: the query's ar cumsum, or INT_MIN for an invalid (padding) query;
- ``qlo``: the smallest key position the query may see (INT_MIN without a window);
- ``kc``: the key's ar cumsum, or INT_MAX for an invalid key;
- ``kp``: the key's position.

Query row r may read key column c iff ``kc[c] <= qc[r] and kp[c] >= qlo[r]``. Folding
validity and the window into these vectors keeps the in-kernel mask to two compares
and makes block skipping a comparison of per-block extrema.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pgbench.kernels.blocks import BlockSizes
from pgbench.model.masks import SegmentInfo

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
_WINDOW_CAP = 2**30  # a "no window" sentinel such as 2**31-1 must not overflow q_pos - w
NEG = -1e30  # finite: a fully masked row must never produce inf - inf = NaN


class KernelConfig(NamedTuple):
    """Everything static about one kernel call (hashable: a custom_vjp nondiff arg)."""
    blocks: BlockSizes
    softcap: float | None
    backend: str  # 'gpu', 'tpu' or 'cpu' (picks compiler params)
    interpret: bool
    poison: bool = False  # alias outputs to NaN buffers so unwritten tiles show up (tests)


def fold_metadata(q_info: SegmentInfo, k_info: SegmentInfo, window):
    """(qc, qlo) i32[B, Nq] and (kc, kp) i32[B, Nk], as described in the module doc.

    The window rule is the one of ``pgbench.model.masks``: a query with ar cumsum 0
    (image + prefix block) is never limited; any other query sees keys with
    ``q_pos - k_pos < window``.
    """
    q_cumsum = jnp.asarray(q_info.ar_cumsum, jnp.int32)
    k_cumsum = jnp.asarray(k_info.ar_cumsum, jnp.int32)
    qc = jnp.where(q_info.valid, jnp.clip(q_cumsum, INT_MIN + 1, INT_MAX - 1), INT_MIN)
    kc = jnp.where(k_info.valid, jnp.clip(k_cumsum, INT_MIN + 1, INT_MAX - 1), INT_MAX)
    if window is None:
        qlo = jnp.full(qc.shape, INT_MIN, jnp.int32)
        kp = jnp.zeros(kc.shape, jnp.int32)
    else:
        w = jnp.minimum(jnp.asarray(window, jnp.int32), _WINDOW_CAP)
        qlo = jnp.where(q_cumsum == 0, INT_MIN, jnp.asarray(q_info.positions, jnp.int32) - w + 1)
        kp = jnp.asarray(k_info.positions, jnp.int32)
    return qc.astype(jnp.int32), qlo.astype(jnp.int32), kc.astype(jnp.int32), kp


def pad_tokens(x, n, axis, value):
    """Pad ``x`` along ``axis`` to length ``n`` with ``value``."""
    extra = n - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def tile_mask(qc, qlo, kc, kp):
    """bool[bq, bk] from i32[bq] query and i32[bk] key metadata."""
    return (kc[None, :] <= qc[:, None]) & (kp[None, :] >= qlo[:, None])


def tile_live(qc_max, qlo_min, kc, kp):
    """Scalar bool: can any (query, key) pair of the tile be visible?"""
    return (jnp.min(kc) <= qc_max) & (jnp.max(kp) >= qlo_min)


def logits(q, k, softcap):
    """f32[bq, bk] = q @ k.T (f32 accumulation), soft-capped; also returns tanh for bwd."""
    s = jnp.dot(q, k.T, preferred_element_type=jnp.float32)
    if softcap is None:
        return s, None
    t = jnp.tanh(s / softcap)
    return softcap * t, t


def compiler_params(cfg: KernelConfig, semantics):
    if cfg.interpret:
        return None
    if cfg.backend == "gpu":
        from jax.experimental.pallas import triton as plgpu
        return plgpu.CompilerParams(num_warps=cfg.blocks.num_warps, num_stages=cfg.blocks.num_stages)
    if cfg.backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        return pltpu.CompilerParams(dimension_semantics=semantics)
    return None


def call(kernel, *, cfg: KernelConfig, grid, in_specs, out_specs, out_shapes, inputs, semantics,
         name):
    """``pl.pallas_call`` with optional NaN-poisoned (aliased) output buffers."""
    n_in, n_out = len(inputs), len(out_shapes)
    aliases = {}
    if cfg.poison:
        inputs = list(inputs) + [jnp.full(s.shape, jnp.nan, s.dtype) for s in out_shapes]
        in_specs = list(in_specs) + list(out_specs)
        aliases = {n_in + i: i for i in range(n_out)}
        body = kernel

        def kernel(*refs):  # the aliased NaN inputs are never read
            body(*refs[:n_in], *refs[n_in + n_out:])

    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shapes,
        input_output_aliases=aliases, interpret=cfg.interpret,
        compiler_params=compiler_params(cfg, semantics), name=name,
    )(*inputs)
