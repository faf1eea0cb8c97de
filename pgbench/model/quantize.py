"""Weight-only int8 for decoding: the decoder's projections and its (tied) token embedding
as int8 with one float32 scale per output row, activations left in float.

A matrix ``W: f[N, K]`` (``ops.dense``'s ``[out, in]`` layout) becomes

    scale[n] = max_k |W[n, k]| / 127,   q[n, k] = round(W[n, k] / scale[n])   (int8, |q| <= 127)

and a product is ``(x @ q.T) * scale``: the error per weight is at most ``scale / 2``, and the
model reads a quarter of float32's bytes per decoded token. Nothing else changes: norms,
attention, the KV cache and the image encoder stay in their dtype (the image encoder runs once
per prompt; decoding reads the decoder's weights once per token, which is what int8 shrinks).

Storage (:class:`Int8Weight`): ``q`` is kept as ``int8[C, N, K / C]``, the K axis cut into C
contiguous chunks of at most :data:`MAX_CHUNK` columns. That layout is for XLA's CPU backend:
it fuses the int8 -> float32 conversion into a matrix-vector product only while the vector is
under 16 KiB, and a chunk sliced out of a row-major ``[N, K]`` array (strided rows) runs
several times slower than a contiguous one (measured at Gemma 2B's shapes; see
docs/model.md). So a one-row product on a single CPU device is C fused matrix-vector
products, each reading its int8 chunk once; any other product (prefill, several rows, an
accelerator) converts the weight and runs an ordinary product.

This is an inference option (``--weights int8`` on ``pgbench eval`` and ``pgbench predict``):
a quantized model is decoded (replicated on each device by a multi-device eval), never trained
or exported.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pgbench.model.cpu_paths import cpu_or_default

# Columns per chunk: 1,024 float32 values = 4 KiB, well under XLA's 16 KiB fusion limit for
# the vector of a fused matrix-vector product.
MAX_CHUNK = 1024
MIN_CHUNK = 128
# Rows up to which the fused per-row products are used on a CPU (each row reads the int8
# weights once; at 2 rows that is still half of float32's bytes).
FUSED_MAX_ROWS = 2

WEIGHT_CHOICES = ("float", "int8")
WEIGHTS_HELP = ("decoder weights: the checkpoint's (default), or weight-only int8 with one scale per "
                "output row: a quarter of float32's bytes per decoded token; on a CPU the batch-1 "
                "decode loop ~1.5x faster and the prefill ~1.8x slower; accuracy cost in "
                "docs/model.md")


class Int8Weight(eqx.Module):
    """An ``[..., N, K]`` matrix as int8 chunks and per-row scales.

    q: int8[..., C, N, K / C]; scale: f32[..., N]. Leading axes (a stacked [L]) come first in
    both, so ``lax.scan`` slices a layer out like any other weight.
    """

    q: jax.Array
    scale: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        *lead, c, n, k = self.q.shape
        return (*lead, n, c * k)

    def matrix(self) -> jax.Array:
        """int8[..., N, K]: the chunks joined back into rows."""
        *lead, c, n, k = self.q.shape
        return jnp.moveaxis(self.q, -3, -2).reshape(*lead, n, c * k)


def chunks_of(k: int) -> int:
    """The fewest chunks C that cut ``k`` columns into equal pieces of at most MAX_CHUNK
    (Gemma's widths: 2048 -> 2, 2304 -> 3, 16384 -> 16); 1 when no such cut leaves pieces of
    at least MIN_CHUNK columns (a prime k: correct, just not fused on the CPU)."""
    for c in range(math.ceil(k / MAX_CHUNK), k // MIN_CHUNK + 1):
        if k % c == 0:
            return c
    return 1


def quantize_matrix(w) -> Int8Weight:
    """f[..., N, K] -> :class:`Int8Weight` (symmetric, per output row; an all-zero row gets
    scale 1 so that it stays exactly zero)."""
    *lead, n, k = w.shape
    if lead:  # one layer at a time: float32 temporaries of one matrix, not of the stack
        parts = [quantize_matrix(w[i]) for i in range(lead[0])]
        return Int8Weight(q=jnp.stack([p.q for p in parts]), scale=jnp.stack([p.scale for p in parts]))
    w = np.asarray(w, np.float32)
    amax = np.max(np.abs(w), axis=-1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.empty((n, k), np.int8)
    for start in range(0, n, 8192):  # bounded temporaries for a [V, D] embedding too
        rows = slice(start, start + 8192)
        q[rows] = np.clip(np.rint(w[rows] / scale[rows, None]), -127, 127)
    c = chunks_of(k)
    q = np.ascontiguousarray(np.moveaxis(q.reshape(n, c, k // c), -2, -3))
    return Int8Weight(q=jnp.asarray(q), scale=jnp.asarray(scale))


def dequantize(w: Int8Weight) -> jax.Array:
    """f32[..., N, K]: q * scale, the matrix the int8 weights stand for."""
    return w.matrix().astype(jnp.float32) * w.scale[..., None].astype(jnp.float32)


def int8_product(x, w: Int8Weight):
    """f32[M, N] = x[M, K] @ dequantize(w).T, as (x @ q.T) * scale with x in float32."""
    return cpu_or_default(_cpu_int8_product, _converted_product, x.astype(jnp.float32), w.q,
                          w.scale)


def _converted_product(x, q, scale):
    """x f32[M, K], q int8[C, N, K / C], scale f32[N] -> f32[M, N] (any device, any M)."""
    w = Int8Weight(q=q, scale=scale)
    y = jax.lax.dot_general(x, w.matrix().astype(jnp.float32), (((1,), (1,)), ((), ())),
                            preferred_element_type=jnp.float32)
    return y * scale.astype(jnp.float32)


def _cpu_int8_product(x, q, scale):
    """``_converted_product`` on one CPU device: for one or two rows, per row and chunk a
    matrix-vector product that XLA's CPU backend fuses with the int8 conversion. The
    optimisation barrier keeps each product out of the sum after it (a product fused with
    an add no longer takes its operand's conversion)."""
    rows = x.shape[0]
    if rows > FUSED_MAX_ROWS:
        return _converted_product(x, q, scale)
    c, _, k = q.shape
    x = computed_once(x)
    # Tied to x, the int8 weights are no longer loop-invariant inside a decode loop, so XLA
    # does not hoist their float32 conversion out of it (a float32 copy of every weight).
    x, q = jax.lax.optimization_barrier((x, q))
    out = []
    for r in range(rows):
        acc = None
        for i in range(c):
            y = jax.lax.optimization_barrier(
                jnp.dot(x[r:r + 1, i * k:(i + 1) * k], q[i].astype(jnp.float32).T))
            acc = y if acc is None else acc + y
        out.append(acc)
    y = out[0] if rows == 1 else jnp.concatenate(out)
    return y * scale.astype(jnp.float32)


def computed_once(x):
    """x, computed before the products that read it.

    A fused matrix-vector product evaluates its vector's producers (a norm, GELU(gate) * up,
    the chunk sums and scales of the products before it) once per output element, which
    made the MLP's down projection ~2x slower than alone. XLA's CPU backend expands
    optimisation barriers before it fuses, but a conditional's operand is always
    materialised: so x passes through one whose other branch (a non-finite x) gives NaN,
    which such an x would give anyway."""
    return jax.lax.cond(jnp.all(jnp.isfinite(x)), lambda v: v, lambda v: jnp.full_like(v, jnp.nan), x)


def embedding_rows(w: Int8Weight, tokens):
    """f32[..., K]: the dequantized rows ``tokens`` (i32[...]) of an int8 embedding [V, K]."""
    rows = jnp.take(w.q, tokens, axis=1)  # [C, ..., K / C]
    rows = jnp.moveaxis(rows, 0, -2).reshape(*tokens.shape, -1)
    return rows.astype(jnp.float32) * jnp.take(w.scale, tokens, axis=0)[..., None]


def quantize_decoder(model, weights: str = "int8"):
    """The PaliGemma ``model`` with its decoder's projections and token embedding as
    :class:`Int8Weight` (``weights="int8"``), or unchanged (``"float"``). The image encoder,
    the projection to the decoder and every norm keep their dtype."""
    if weights == "float":
        return model
    if weights != "int8":
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    from pgbench.lora import TARGETS as PROJECTIONS  # every projection of a DecoderBlocks
    from pgbench.model.layer_forms import is_stacked

    def blocks(b):  # the norms stay in float
        return eqx.tree_at(lambda m: [getattr(m, f) for f in PROJECTIONS], b,
                           [quantize_matrix(getattr(b, f)) for f in PROJECTIONS])

    llm = model.llm
    new_blocks = blocks(llm.blocks) if is_stacked(llm.blocks) else tuple(map(blocks, llm.blocks))
    llm = eqx.tree_at(lambda m: (m.blocks, m.input_embedding), llm,
                      (new_blocks, quantize_matrix(llm.input_embedding)))
    return eqx.tree_at(lambda m: m.llm, model, llm)


def is_quantized(model) -> bool:
    return isinstance(model.llm.input_embedding, Int8Weight)
