"""Public prefix-LM flash attention: layout, padding, and the custom VJP."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pgbench.kernels import _common as c
from pgbench.kernels.blocks import BlockSizes, default_block_sizes
from pgbench.kernels.flash_bwd import flash_backward
from pgbench.kernels.flash_fwd import flash_forward


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _flash(q, k, v, qc, qlo, kc, kp, cfg):
    return flash_forward(q, k, v, qc, qlo, kc, kp, cfg)[0]


def _flash_fwd(q, k, v, qc, qlo, kc, kp, cfg):
    o, lse = flash_forward(q, k, v, qc, qlo, kc, kp, cfg)
    return o, (q, k, v, qc, qlo, kc, kp, o, lse)


def _flash_bwd(cfg, res, do):
    q, k, v, qc, qlo, kc, kp, o, lse = res
    dq, dk, dv = flash_backward(q, k, v, qc, qlo, kc, kp, o, lse, do, cfg)
    return dq, dk, dv, None, None, None, None  # integer metadata: no cotangent


_flash.defvjp(_flash_fwd, _flash_bwd)


def _backend() -> str:
    platform = jax.default_backend()
    return {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)


def _check(q, k, v, q_meta, k_meta):
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
        raise ValueError(f"expected q [B, Nq, H, D] and k, v [B, Nk, KVH, D]; got q {q.shape}, "
                         f"k {k.shape}, v {v.shape}")
    b, nq, h, d = q.shape
    if k.shape[0] != b or k.shape[3] != d or h % k.shape[2]:
        raise ValueError(f"k/v {k.shape} do not fit q {q.shape}: need the same batch and head_dim "
                         f"and a KV head count dividing {h}")
    for name, x in q_meta.items():
        if x is not None and tuple(x.shape) != (b, nq):
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {(b, nq)}")
    for name, x in k_meta.items():
        if x is not None and tuple(x.shape) != (b, k.shape[1]):
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {(b, k.shape[1])}")


def general_attention(q, k, v, *, q_cumsum, q_valid, k_cumsum, k_valid, q_pos=None, k_pos=None,
                      softcap=None, window=None, interpret=None, block_sizes: BlockSizes | None = None,
                      poison=False):
    """Flash attention with separate query and key metadata (self-attention or a cache).

    q: [B, Nq, H, D] (pre-scaled); k, v: [B, Nk, KVH, D]; q_cumsum/q_valid/q_pos:
    [B, Nq]; k_cumsum/k_valid/k_pos: [B, Nk]; window: None, int or traced i32 scalar.
    Returns [B, Nq, H, D] in q's dtype; queries that see no key get 0.
    ``block_sizes`` overrides the per-backend defaults; ``poison`` (tests) fills the
    output buffers with NaN before the kernels run so an unwritten tile shows.
    """
    _check(q, k, v, dict(q_cumsum=q_cumsum, q_valid=q_valid, q_pos=q_pos),
           dict(k_cumsum=k_cumsum, k_valid=k_valid, k_pos=k_pos))
    if window is not None and (q_pos is None or k_pos is None):
        raise ValueError("a sliding window needs q_pos and k_pos")
    b, nq, h, d = q.shape
    nk = k.shape[1]
    backend = _backend()
    if interpret is None:
        interpret = backend == "cpu"
    blocks = block_sizes or default_block_sizes(backend if not interpret else "cpu", d, nq, nk)
    cfg = c.KernelConfig(blocks=blocks, softcap=None if softcap is None else float(softcap),
                         backend=backend, interpret=bool(interpret), poison=poison)
    qc, qlo, kc, kp = c.fold_metadata(q_cumsum, q_valid, q_pos, k_cumsum, k_valid, k_pos, window)
    nq_pad = -(-nq // max(blocks.block_q, blocks.block_q_bwd)) * max(blocks.block_q, blocks.block_q_bwd)
    nk_pad = -(-nk // max(blocks.block_k, blocks.block_k_bwd)) * max(blocks.block_k, blocks.block_k_bwd)
    qc = c.pad_tokens(qc, nq_pad, 1, c.INT_MIN)[:, None]
    qlo = c.pad_tokens(qlo, nq_pad, 1, c.INT_MIN)[:, None]
    kc = c.pad_tokens(kc, nk_pad, 1, c.INT_MAX)[:, None]
    kp = c.pad_tokens(kp, nk_pad, 1, 0)[:, None]
    qt = c.pad_tokens(q.transpose(0, 2, 1, 3), nq_pad, 2, 0)
    kt = c.pad_tokens(k.transpose(0, 2, 1, 3), nk_pad, 2, 0)
    vt = c.pad_tokens(v.transpose(0, 2, 1, 3), nk_pad, 2, 0)
    o = _flash(qt, kt, vt, qc, qlo, kc, kp, cfg)
    return o[:, :, :nq].transpose(0, 2, 1, 3)


def prefix_lm_attention(q, k, v, *, ar_cumsum, valid, softcap=None, window=None, interpret=None,
                        block_sizes: BlockSizes | None = None):
    """Prefix-LM self-attention, fused (Pallas), differentiable.

    q: [B, N, H, D] already scaled by the caller; k, v: [B, N, KVH, D] with H % KVH == 0
    (query head h reads KV head h // (H // KVH)); ar_cumsum: i32[B, N]; valid: bool[B, N].
    Query i sees key j iff valid[i], valid[j], ar_cumsum[j] <= ar_cumsum[i] and, with a
    ``window`` w, (ar_cumsum[i] == 0 or i - j < w) with i, j token indices (Gemma 2 as in
    transformers: the window never limits the image + prefix block). Logits are
    soft-capped (``softcap * tanh(s / softcap)``) before masking; accumulation is f32.
    Invalid query rows return 0. ``interpret=None`` uses interpret mode on CPU.
    """
    pos = None
    if window is not None:
        pos = jnp.broadcast_to(jnp.arange(q.shape[1], dtype=jnp.int32), q.shape[:2])
    return general_attention(q, k, v, q_cumsum=ar_cumsum, q_valid=valid, k_cumsum=ar_cumsum,
                             k_valid=valid, q_pos=pos, k_pos=pos, softcap=softcap, window=window,
                             interpret=interpret, block_sizes=block_sizes)
