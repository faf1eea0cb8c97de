"""Backward flash-attention kernels (FlashAttention-2 split).

With P = softmax(S) recomputed from the saved log-sum-exp and
``delta = rowsum(dO * O)`` (computed outside, O(N D)):
dV = P^T dO, dP = dO V^T, dS = P * (dP - delta) [* (1 - tanh^2) under a soft-cap],
dK = dS^T Q, dQ = dS K. Two kernels avoid atomics: ``dkdv`` owns one key tile of
one KV head and loops over every query tile of every query head in its group (so
GQA gradients are summed in-kernel, K/V never repeated), ``dq`` owns one query tile
and loops over key tiles. Both skip tiles with no visible pair, as the forward does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pgbench.kernels import _common as c


def _ds(q, k, v, do, lse, delta, mask, softcap):
    """(P, dS) f32[bq, bk] for one tile."""
    s, t = c.logits(q, k, softcap)
    p = jnp.where(mask, jnp.exp(s - lse[:, None]), 0.0)
    dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
    ds = p * (dp - delta[:, None])
    if t is not None:
        ds = ds * (1.0 - t * t)
    return p, ds


def _dkdv_kernel(qc_ref, qlo_ref, kc_ref, kp_ref, q_ref, k_ref, v_ref, do_ref, lse_ref,
                 delta_ref, dk_ref, dv_ref, *, block_q, num_q_blocks, group, softcap):
    k, v = k_ref[...], v_ref[...]  # [bk, D]
    kc, kp = kc_ref[0, :], kp_ref[0, :]
    kc_min, kp_max = jnp.min(kc), jnp.max(kp)

    def body(t, carry):
        # lax.div/rem, not // and %: jnp's floor-division lowers to an i1/i32 mix Triton rejects
        g, i = lax.div(t, num_q_blocks), lax.rem(t, num_q_blocks)
        sl = pl.ds(pl.multiple_of(i * block_q, block_q), block_q)
        qc, qlo = qc_ref[0, sl], qlo_ref[0, sl]
        live = (kc_min <= jnp.max(qc)) & (kp_max >= jnp.min(qlo))

        def step(carry):
            dk, dv = carry
            q, do = q_ref[g, sl, :], do_ref[g, sl, :]
            p, ds = _ds(q, k, v, do, lse_ref[g, 0, sl], delta_ref[g, 0, sl],
                        c.tile_mask(qc, qlo, kc, kp), softcap)
            dv = dv + jnp.dot(p.astype(do.dtype).T, do, preferred_element_type=jnp.float32)
            dk = dk + jnp.dot(ds.astype(q.dtype).T, q, preferred_element_type=jnp.float32)
            return dk, dv

        return lax.cond(live, step, lambda x: x, carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, group * num_q_blocks, body, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(qc_ref, qlo_ref, kc_ref, kp_ref, q_ref, k_ref, v_ref, do_ref, lse_ref,
               delta_ref, dq_ref, *, block_k, num_k_blocks, softcap):
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[0, :], delta_ref[0, :]
    qc, qlo = qc_ref[0, :], qlo_ref[0, :]
    qc_max, qlo_min = jnp.max(qc), jnp.min(qlo)

    def body(j, dq):
        sl = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
        kc, kp = kc_ref[0, sl], kp_ref[0, sl]

        def step(dq):
            k = k_ref[sl, :]
            _, ds = _ds(q, k, v_ref[sl, :], do, lse, delta, c.tile_mask(qc, qlo, kc, kp), softcap)
            return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

        return lax.cond(c.tile_live(qc_max, qlo_min, kc, kp), step, lambda x: x, dq)

    dq = lax.fori_loop(0, num_k_blocks, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = dq.astype(dq_ref.dtype)


def flash_backward(q, k, v, qc, qlo, kc, kp, o, lse, do, cfg: c.KernelConfig):
    """Kernel-layout backward: (dq, dk, dv) in the dtypes of (q, k, v).

    Shapes as in ``flash_forward``; o, do: [B, H, Nq, D]; lse: f32[B, H, 1, Nq].
    """
    b, h, nq, d = q.shape
    kvh, nk = k.shape[1], k.shape[2]
    group = h // kvh
    bq, bk = cfg.blocks.block_q_bwd, cfg.blocks.block_k_bwd
    delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)[:, :, None, :]

    # dK, dV: grid over (batch, KV head, key tile); the block holds all `group` query heads.
    kernel = functools.partial(_dkdv_kernel, block_q=bq, num_q_blocks=nq // bq, group=group,
                               softcap=cfg.softcap)
    qmeta = pl.BlockSpec((None, 1, nq), lambda bi, hi, j: (bi, 0, 0))
    kmeta = pl.BlockSpec((None, 1, bk), lambda bi, hi, j: (bi, 0, j))
    qspec = pl.BlockSpec((None, group, nq, d), lambda bi, hi, j: (bi, hi, 0, 0))
    rowspec = pl.BlockSpec((None, group, 1, nq), lambda bi, hi, j: (bi, hi, 0, 0))
    kspec = pl.BlockSpec((None, None, bk, d), lambda bi, hi, j: (bi, hi, j, 0))
    dk, dv = c.call(
        kernel, cfg=cfg, grid=(b, kvh, nk // bk),
        in_specs=[qmeta, qmeta, kmeta, kmeta, qspec, kspec, kspec, qspec, rowspec, rowspec],
        out_specs=[kspec, kspec],
        out_shapes=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        inputs=[qc, qlo, kc, kp, q, k, v, do, lse, delta],
        semantics=("parallel", "parallel", "parallel"), name="prefix_lm_flash_dkdv")

    # dQ: grid over (batch, query head, query tile), like the forward.
    kernel = functools.partial(_dq_kernel, block_k=bk, num_k_blocks=nk // bk, softcap=cfg.softcap)
    qmeta = pl.BlockSpec((None, 1, bq), lambda bi, hi, i: (bi, 0, i))
    kmeta = pl.BlockSpec((None, 1, nk), lambda bi, hi, i: (bi, 0, 0))
    qspec = pl.BlockSpec((None, None, bq, d), lambda bi, hi, i: (bi, hi, i, 0))
    rowspec = pl.BlockSpec((None, None, 1, bq), lambda bi, hi, i: (bi, hi, 0, i))
    kspec = pl.BlockSpec((None, None, nk, d), lambda bi, hi, i: (bi, hi // group, 0, 0))
    (dq,) = c.call(
        kernel, cfg=cfg, grid=(b, h, nq // bq),
        in_specs=[qmeta, qmeta, kmeta, kmeta, qspec, kspec, kspec, qspec, rowspec, rowspec],
        out_specs=[qspec], out_shapes=[jax.ShapeDtypeStruct(q.shape, q.dtype)],
        inputs=[qc, qlo, kc, kp, q, k, v, do, lse, delta],
        semantics=("parallel", "parallel", "parallel"), name="prefix_lm_flash_dq")
    return dq, dk, dv
