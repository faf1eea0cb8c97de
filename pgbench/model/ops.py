"""Small numerical building blocks shared by the image and text towers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.experimental.layout import Layout, with_layout_constraint

from pgbench.model.cpu_paths import cpu_or_default
from pgbench.model.quantize import Int8Weight, computed_once, int8_product


# Up to this many rows, a float32 projection on a CPU device is computed weight-major (see dense).
WEIGHT_MAJOR_MAX_ROWS = 64
# Up to this many columns, a one-row bf16 / f16 projection on a CPU device is a fused
# matrix-vector product (see _cpu_product): XLA's CPU backend fuses the weight's conversion
# only while the float32 vector is under 16 KiB: 3,072 columns (12 KiB) fuse, 4,096 do not
# (tests/model/test_ops.py; rates in benchmarks/results/dense_orientation_amd-epyc-avx512.md).
FUSED_ROW_MAX_COLUMNS = 3072


def dense(x, w, out_dtype=None):
    """x[..., K] times w[N, K] (a torch-style ``[out, in]`` matrix, or its ``Int8Weight``)
    -> [..., N] in x's dtype (or ``out_dtype``), accumulated in float32.

    Asking for a float32 result is what lets XLA's CPU backend use the native bf16
    matrix instructions (a bf16-out dot runs several times slower). Every device
    computes ``x @ w.T``; on a single CPU device (``cpu_paths``) ``_cpu_product`` picks
    a faster order for small row counts.
    """
    rows = math.prod(x.shape[:-1])
    if isinstance(w, Int8Weight):  # weight-only int8 (quantize.py)
        y = int8_product(x.reshape(rows, x.shape[-1]), w)
        return y.reshape(*x.shape[:-1], w.shape[-2]).astype(out_dtype or x.dtype)
    # Always a 2-D product: with x of rank 3, XLA copies bf16 weights into a transposed
    # second array ahead of a loop that uses them (tests/model/test_ops.py).
    x2 = x.reshape(rows, x.shape[-1])
    low = x.dtype == w.dtype and x.dtype in LOW_PRECISION
    y = (_low_precision_product if low else _product)(x2, w)
    return y.reshape(*x.shape[:-1], w.shape[0]).astype(out_dtype or x.dtype)


LOW_PRECISION = (jnp.bfloat16, jnp.float16)


def _product(x, w):
    """f32[M, N] = x[M, K] @ w[N, K].T in each device's order."""
    return cpu_or_default(_cpu_product, _times_transposed, x, w)


@jax.custom_vjp
def _low_precision_product(x, w):
    """``_product`` of bf16 / f16 operands whose backward products are in their dtype too.

    JAX's own transpose of a bf16 x bf16 -> f32 product multiplies the float32 cotangent by
    the bf16 operand: a mixed product that XLA's CPU backend runs as a float32 GEMM after
    upcasting the operand (a copy of every weight). Here the cotangent is rounded to the
    operands' dtype once, as in a bf16 torch model's backward, and both backward products
    are bf16 x bf16 products accumulated in float32 (``_weight_grad`` says how dw = g.T @ x
    stays one on the CPU). tests/model/test_ops.py bounds the difference to the float32
    gradient. Reverse mode only (a ``custom_vjp``)."""
    return _product(x, w)


def _low_precision_fwd(x, w):
    return _product(x, w), (x, w)


def _low_precision_bwd(res, g):
    """g f32[M, N] -> (dx [M, K], dw [N, K]) in the operands' dtype."""
    x, w = res
    g = g.astype(x.dtype)
    dx = jax.lax.dot_general(g, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    dw = cpu_or_default(_cpu_weight_grad, _weight_grad, g, x)
    return dx.astype(x.dtype), dw.astype(w.dtype)


def _weight_grad(g, x):
    """f32[N, K] = g[M, N].T @ x[M, K], contracting the rows."""
    return jax.lax.dot_general(g, x, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


_ROW_MAJOR = Layout(major_to_minor=(0, 1))


def _cpu_weight_grad(g, x):
    """``_weight_grad`` as a product XLA's CPU backend runs on bf16 operands.

    Left to itself, layout assignment gives the row-contracting dot operands whose
    contraction is their major dimension, and the CPU backend computes every such bf16 dot
    as a float32 GEMM of upcast copies. Pinning g.T and x to row-major layouts
    (``with_layout_constraint``) materialises the transpose of g once and keeps the
    product in bf16: 2-3.3x faster including that copy at train-mid's shapes
    (benchmarks/results/weight_grad.md)."""
    gt = with_layout_constraint(g.T, _ROW_MAJOR)
    return jax.lax.dot_general(gt, with_layout_constraint(x, _ROW_MAJOR), (((1,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)


_low_precision_product.defvjp(_low_precision_fwd, _low_precision_bwd)


def _cpu_product(x, w):
    """f32[M, N] = x[M, K] @ w[N, K].T in the order XLA's CPU GEMMs run fastest
    (benchmarks/results/dense_orientation.md): prefill rows as x @ w.T (as fast as or up
    to ~15% faster than x @ w with w stored ``[in, out]``); up to
    ``WEIGHT_MAJOR_MAX_ROWS`` float32 rows (decoding) as the weight-major w @ x.T, which
    streams the weights ~2x faster at 8 rows, with an optimisation barrier so that XLA
    does not fold the transpose after it back into the dot. In bf16 the weight-major
    product is the slow one, and a one-row product runs ~8x slower than a two-row one,
    so a single row is computed twice, unless it is short enough for ``_fused_row_product``."""
    rows = x.shape[0]
    if rows <= WEIGHT_MAJOR_MAX_ROWS and x.dtype == jnp.float32 and w.dtype == jnp.float32:
        return jax.lax.optimization_barrier(jnp.dot(w, x.T, preferred_element_type=jnp.float32)).T
    if rows == 1 and w.dtype in LOW_PRECISION and w.shape[1] <= FUSED_ROW_MAX_COLUMNS:
        return _fused_row_product(x, w)
    if rows == 1 and x.dtype != jnp.float32:
        # Two copies of the row: with a zero row appended XLA still picks the slow kernel.
        return _times_transposed(jnp.concatenate([x, x]), w)[:1]
    return _times_transposed(x, w)


def _fused_row_product(x, w):
    """f32[1, N] = x[1, K] @ w[N, K].T for bf16 / f16 w, as one matrix-vector product that
    XLA's CPU backend fuses with w's conversion to float32: it reads the weight once, at the
    rate a float32 one is read (about twice the rate of the two-row bf16 product at Gemma
    2B's shapes). Each product of two bf16 numbers is exact in float32, so only the order of
    the float32 sum differs from the bf16 product. The barriers do for w what they do for
    the int8 weights (``quantize._cpu_int8_product``): tied to x, its conversion is not
    hoisted out of a decode loop, and the product is not fused into the add after it."""
    x = computed_once(x.astype(jnp.float32))
    x, w = jax.lax.optimization_barrier((x, w))
    return jax.lax.optimization_barrier(jnp.dot(x, w.astype(jnp.float32).T))


def _times_transposed(x, w):
    """f32[M, N] = x[M, K] @ w[N, K].T, accumulated in float32 (every device's order)."""
    return jax.lax.dot_general(x, w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def layer_norm(x, scale, bias, eps=1e-6):
    """flax LayerNorm with its "fast variance" E[x^2] - E[x]^2, statistics in float32."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.maximum(jnp.mean(xf * xf, axis=-1, keepdims=True) - mean * mean, 0.0)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * scale + bias).astype(x.dtype)


def rms_norm(x, scale, eps=1e-6):
    """Gemma RMSNorm, scaled by (1 + scale); statistics in float32."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (y * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


def gelu(x):
    """GELU, tanh approximation (as both towers were trained)."""
    return jax.nn.gelu(x, approximate=True)


def rope(x, positions, base=10_000.0):
    """Split-half rotary embedding. x: [B, N, H, D]; positions: i32[B, N]."""
    d = x.shape[-1]
    # Exponents as (2 / d) * i, the order of operations of big_vision's float32 RoPE.
    freq = base ** ((2.0 / d) * jnp.arange(d // 2, dtype=jnp.float32))
    angle = positions[..., None].astype(jnp.float32) / freq  # [B, N, D/2]
    sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def softcap(x, cap):
    return x if cap is None else cap * jnp.tanh(x / cap)
