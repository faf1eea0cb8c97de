"""Analytic FLOP counts (multiply-add = 2 FLOPs) of the PaliGemma forward pass.

Counts the matrix products (projections, MLPs, attention scores and values, logits);
norms, softmax and activations are a rounding error next to them and are left out.
Attention counts every query-key pair of the full (bidirectional) block, which is what
a plain XLA attention computes.
"""

from __future__ import annotations

from pgbench.config import PaliGemmaConfig


def siglip_flops(cfg: PaliGemmaConfig, batch: int = 1) -> int:
    v = cfg.vision
    n, c, m = v.num_patches, v.width, v.mlp_dim
    per_layer = 4 * 2 * n * c * c + 2 * 2 * n * n * c + 2 * 2 * n * c * m
    stem = 2 * n * (v.patch_size ** 2 * 3) * c
    head = 2 * n * c * cfg.llm.width
    return batch * (stem + v.depth * per_layer + head)


def gemma_flops(cfg: PaliGemmaConfig, seq: int, batch: int = 1, logits_positions: int = 1) -> int:
    g = cfg.llm
    d, h, kv, hd, f = g.width, g.num_heads, g.num_kv_heads, g.head_dim, g.mlp_dim
    proj = 2 * seq * d * hd * (2 * h + 2 * kv)  # q, k, v, out
    attn = 2 * 2 * seq * seq * h * hd
    mlp = 3 * 2 * seq * d * f
    logits = 2 * logits_positions * d * g.vocab_size
    return batch * (g.depth * (proj + attn + mlp) + logits)


def prefill_flops(cfg: PaliGemmaConfig, n_text: int, batch: int = 1, logits_positions: int = 1) -> int:
    """Image encoder + decoder over [image, text], logits at ``logits_positions`` positions per row."""
    seq = cfg.num_image_tokens + n_text
    return siglip_flops(cfg, batch) + gemma_flops(cfg, seq, batch, logits_positions)


def weight_bytes_per_token(cfg: PaliGemmaConfig, bytes_per_param: int = 4) -> int:
    """Bytes of decoder weights a single decode step must read (embedding read once, for the logits)."""
    g = cfg.llm
    per_layer = g.width * g.head_dim * (2 * g.num_heads + 2 * g.num_kv_heads) + 3 * g.width * g.mlp_dim
    return bytes_per_param * (g.depth * per_layer + g.vocab_size * g.width)
