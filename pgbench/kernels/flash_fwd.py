"""Forward flash-attention kernel: one (batch, head, query tile) per grid step.

The whole key/value sequence of the step's KV head is the input block; the kernel
walks it tile by tile with an online softmax (running max ``m``, normaliser ``l``,
f32 accumulator), never holding more than ``block_q x block_k`` scores. A key tile
whose extrema show that no pair can be visible is skipped with ``lax.cond`` (the
causal suffix above the diagonal, padding, keys outside the window). GQA/MQA: the
K/V index map sends query head h to KV head h // group, so K/V are never repeated.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pgbench.kernels import _common as c


def _kernel(qc_ref, qlo_ref, kc_ref, kp_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *,
            block_k, num_k_blocks, softcap):
    q = q_ref[...]  # [bq, D]
    qc, qlo = qc_ref[0, :], qlo_ref[0, :]  # i32[bq]
    qc_max, qlo_min = jnp.max(qc), jnp.min(qlo)
    bq, d = q.shape

    def body(j, carry):
        sl = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
        kc, kp = kc_ref[0, sl], kp_ref[0, sl]

        def step(carry):
            m, l, acc = carry
            s, _ = c.logits(q, k_ref[sl, :], softcap)
            mask = c.tile_mask(qc, qlo, kc, kp)
            m_new = jnp.maximum(m, jnp.max(jnp.where(mask, s, c.NEG), axis=1))
            # where() after exp: a row whose max is still NEG must contribute exactly 0
            p = jnp.where(mask, jnp.exp(s - m_new[:, None]), 0.0)
            alpha = jnp.exp(m - m_new)
            v = v_ref[sl, :]
            acc = acc * alpha[:, None] + jnp.dot(p.astype(v.dtype), v,
                                                 preferred_element_type=jnp.float32)
            return m_new, alpha * l + jnp.sum(p, axis=1), acc

        return lax.cond(c.tile_live(qc_max, qlo_min, kc, kp), step, lambda x: x, carry)

    init = (jnp.full((bq,), c.NEG, jnp.float32), jnp.zeros((bq,), jnp.float32),
            jnp.zeros((bq, d), jnp.float32))
    m, l, acc = lax.fori_loop(0, num_k_blocks, body, init)
    seen = l > 0.0  # False only for rows with no visible key (padding queries): output 0
    l_safe = jnp.where(seen, l, 1.0)
    o_ref[...] = (acc / l_safe[:, None]).astype(o_ref.dtype)
    lse_ref[0, :] = jnp.where(seen, m + jnp.log(l_safe), 0.0)


def flash_forward(q, k, v, qc, qlo, kc, kp, cfg: c.KernelConfig):
    """Kernel-layout forward.

    q: [B, H, Nq, D]; k, v: [B, KVH, Nk, D]; qc, qlo: i32[B, 1, Nq]; kc, kp: i32[B, 1, Nk]
    with Nq, Nk multiples of the block sizes. Returns (o [B, H, Nq, D] in q's dtype,
    lse f32[B, H, 1, Nq]), lse being 0 on rows that see no key.
    """
    b, h, nq, d = q.shape
    kvh, nk = k.shape[1], k.shape[2]
    group = h // kvh
    bq, bk = cfg.blocks.block_q, cfg.blocks.block_k
    kernel = functools.partial(_kernel, block_k=bk, num_k_blocks=nk // bk, softcap=cfg.softcap)
    qmeta = pl.BlockSpec((None, 1, bq), lambda bi, hi, i: (bi, 0, i))
    kmeta = pl.BlockSpec((None, 1, nk), lambda bi, hi, i: (bi, 0, 0))
    qspec = pl.BlockSpec((None, None, bq, d), lambda bi, hi, i: (bi, hi, i, 0))
    kspec = pl.BlockSpec((None, None, nk, d), lambda bi, hi, i: (bi, hi // group, 0, 0))
    lspec = pl.BlockSpec((None, None, 1, bq), lambda bi, hi, i: (bi, hi, 0, i))
    return c.call(
        kernel, cfg=cfg, grid=(b, h, nq // bq),
        in_specs=[qmeta, qmeta, kmeta, kmeta, qspec, kspec, kspec],
        out_specs=[qspec, lspec],
        out_shapes=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                    jax.ShapeDtypeStruct((b, h, 1, nq), jnp.float32)],
        inputs=[qc, qlo, kc, kp, q, k, v], semantics=("parallel", "parallel", "parallel"),
        name="prefix_lm_flash_fwd")
