"""Public prefix-LM flash attention: layout, padding, and the custom VJP."""

from __future__ import annotations

import functools

import jax

from pgbench.kernels import _common as c
from pgbench.kernels.blocks import BlockSizes, default_block_sizes
from pgbench.kernels.flash_bwd import flash_backward
from pgbench.kernels.flash_fwd import flash_forward
from pgbench.model.array_types import Array, Float
from pgbench.model.masks import SegmentInfo


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


def _check(q, k, v, q_info: SegmentInfo, k_info: SegmentInfo):
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
        raise ValueError(f"expected q [B, Nq, H, D] and k, v [B, Nk, KVH, D]; got q {q.shape}, "
                         f"k {k.shape}, v {v.shape}")
    b, nq, h, d = q.shape
    if k.shape[0] != b or k.shape[3] != d or h % k.shape[2]:
        raise ValueError(f"k/v {k.shape} do not fit q {q.shape}: need the same batch and head_dim "
                         f"and a KV head count dividing {h}")
    for side, info, n in (("query", q_info, nq), ("key", k_info, k.shape[1])):
        for name, x in zip(SegmentInfo._fields, info):
            if tuple(x.shape) != (b, n):
                raise ValueError(f"{side} segment_info.{name} has shape {tuple(x.shape)}; "
                                 f"expected {(b, n)}")


def general_attention(q: Float[Array, "B Nq H D"], k: Float[Array, "B Nk KVH D"],
                      v: Float[Array, "B Nk KVH D"], q_info: SegmentInfo,
                      k_info: SegmentInfo | None = None, *, softcap=None, window=None,
                      interpret=None, block_sizes: BlockSizes | None = None,
                      poison=False) -> Float[Array, "B Nq H D"]:
    """Flash attention of queries with metadata ``q_info`` over keys with ``k_info``
    (default: ``q_info``, self-attention); the mask rule is ``pgbench.model.masks``'.

    q: [B, Nq, H, D] (pre-scaled); k, v: [B, Nk, KVH, D] with H % KVH == 0; q_info:
    SegmentInfo of [B, Nq]; k_info: SegmentInfo of [B, Nk]; window: None, int or traced
    i32 scalar (on the positions). Logits are soft-capped (``softcap * tanh(s /
    softcap)``) before masking; accumulation is f32. Returns [B, Nq, H, D] in q's dtype;
    queries that see no key get 0. Differentiable in q, k, v.
    ``interpret=None`` uses Pallas interpret mode on CPU; ``block_sizes`` overrides the
    per-backend defaults; ``poison`` (tests) fills the output buffers with NaN before the
    kernels run so an unwritten tile shows.
    """
    k_info = q_info if k_info is None else k_info
    _check(q, k, v, q_info, k_info)
    b, nq, h, d = q.shape
    nk = k.shape[1]
    backend = _backend()
    if interpret is None:
        interpret = backend == "cpu"
    blocks = block_sizes or default_block_sizes(backend if not interpret else "cpu", d, nq, nk)
    cfg = c.KernelConfig(blocks=blocks, softcap=None if softcap is None else float(softcap),
                         backend=backend, interpret=bool(interpret), poison=poison)
    qc, qlo, kc, kp = c.fold_metadata(q_info, k_info, window)
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


def prefix_lm_attention(q: Float[Array, "B N H D"], k: Float[Array, "B N KVH D"],
                        v: Float[Array, "B N KVH D"], segment_info: SegmentInfo, *,
                        softcap=None, window=None, interpret=None,
                        block_sizes: BlockSizes | None = None) -> Float[Array, "B N H D"]:
    """Prefix-LM self-attention, fused (Pallas), differentiable: ``general_attention``
    with the same metadata for queries and keys.

    q: [B, N, H, D] already scaled by the caller; k, v: [B, N, KVH, D]; segment_info:
    SegmentInfo of [B, N]. Query i sees key j iff both are valid, ar_cumsum[j] <=
    ar_cumsum[i] and, with a ``window`` w, (ar_cumsum[i] == 0 or pos[i] - pos[j] < w)
    (Gemma 2 as in transformers: the window never limits the image + prefix block).
    Invalid query rows return 0.
    """
    return general_attention(q, k, v, segment_info, segment_info, softcap=softcap,
                             window=window, interpret=interpret, block_sizes=block_sizes)
