"""Hugging Face ``PaliGemmaForConditionalGeneration`` <-> big_vision: names and layouts.

This is the one table of that correspondence. Each HF tensor is a slice of one big_vision
array (``bv[index]``, the index picking the layer and, for fused arrays, Q/K/V or gate/up)
under one of a few layout transforms:

* ``same``       identical layout
* ``t``          2-D transpose (torch ``Linear.weight`` is [out, in], flax kernels [in, out])
* ``conv``       patch kernel: big_vision HWIO [p, p, 3, C] <-> torch OIHW [C, 3, p, p]
* ``heads_in``   ViT q/k/v kernel [C, nh, hd] <-> [nh*hd, C]
* ``heads_flat`` ViT q/k/v bias [nh, hd] <-> [nh*hd]
* ``heads_out``  output projections [nh, hd, C] <-> [C, nh*hd] (ViT ``out`` and Gemma ``attn_vec``)
* ``gemma_in``   Gemma q/k/v [H, D, hd] <-> [H*hd, D]

No rotary permutation is needed: HF Gemma rotates "split-half" exactly as big_vision does,
and both store RMSNorm weights as ``scale`` used as ``1 + scale``. ``lm_head`` is tied to
the token embedding and never written.

Names are written in the layout of the checkpoints on the Hub (``vision_tower.vision_model.``,
``multi_modal_projector.``, ``language_model.model.``), which transformers 4.x and 5.x both
load; ``canonical_name`` also accepts transformers 5.x in-memory names (``model.…``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgbench.config import PaliGemmaConfig
from pgbench.checkpoints.bigvision_layout import expected_shapes

VISION = "vision_tower.vision_model."
PROJECTOR = "multi_modal_projector.linear."
TEXT = "language_model.model."
LM_HEAD = "lm_head.weight"
VISION_HEAD = VISION + "head."  # SigLIP's pooling head; PaliGemma never uses it

# Accepted spellings on read, longest first (transformers 5.x, 4.x >= 4.52, older 4.x).
_PREFIXES = (
    ("model.vision_tower.vision_model.", VISION), ("vision_tower.vision_model.", VISION),
    ("model.vision_tower.", VISION), ("vision_tower.", VISION),
    ("model.multi_modal_projector.linear.", PROJECTOR), ("multi_modal_projector.linear.", PROJECTOR),
    ("model.language_model.model.", TEXT), ("language_model.model.", TEXT),
    ("model.language_model.", TEXT),
)
_LM_HEADS = ("lm_head.weight", "language_model.lm_head.weight", "model.lm_head.weight")


def canonical_name(key: str) -> str:
    """An HF tensor name in the Hub spelling (unknown prefixes are returned unchanged)."""
    if key in _LM_HEADS:
        return LM_HEAD
    for prefix, canon in _PREFIXES:
        if key.startswith(prefix):
            return canon + key[len(prefix):]
    return key


@dataclass(frozen=True)
class Entry:
    """HF tensor ``hf`` == transform(``bv`` array at ``index``)."""

    hf: str
    bv: str
    index: tuple[int, ...]
    kind: str


def _vit_entries(cfg: PaliGemmaConfig) -> list[Entry]:
    enc = "img/Transformer/encoderblock/"
    mha = enc + "MultiHeadDotProductAttention_0/"
    out = [
        Entry(VISION + "embeddings.patch_embedding.weight", "img/embedding/kernel", (), "conv"),
        Entry(VISION + "embeddings.patch_embedding.bias", "img/embedding/bias", (), "same"),
        Entry(VISION + "embeddings.position_embedding.weight", "img/pos_embedding", (0,), "same"),
        Entry(VISION + "post_layernorm.weight", "img/Transformer/encoder_norm/scale", (), "same"),
        Entry(VISION + "post_layernorm.bias", "img/Transformer/encoder_norm/bias", (), "same"),
        Entry(PROJECTOR + "weight", "img/head/kernel", (), "t"),
        Entry(PROJECTOR + "bias", "img/head/bias", (), "same"),
    ]
    per_layer = [
        ("layer_norm1.weight", enc + "LayerNorm_0/scale", "same"),
        ("layer_norm1.bias", enc + "LayerNorm_0/bias", "same"),
        ("layer_norm2.weight", enc + "LayerNorm_1/scale", "same"),
        ("layer_norm2.bias", enc + "LayerNorm_1/bias", "same"),
        ("mlp.fc1.weight", enc + "MlpBlock_0/Dense_0/kernel", "t"),
        ("mlp.fc1.bias", enc + "MlpBlock_0/Dense_0/bias", "same"),
        ("mlp.fc2.weight", enc + "MlpBlock_0/Dense_1/kernel", "t"),
        ("mlp.fc2.bias", enc + "MlpBlock_0/Dense_1/bias", "same"),
        ("self_attn.out_proj.weight", mha + "out/kernel", "heads_out"),
        ("self_attn.out_proj.bias", mha + "out/bias", "same"),
    ]
    for hf, bv in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
        per_layer.append((f"self_attn.{hf}.weight", mha + bv + "/kernel", "heads_in"))
        per_layer.append((f"self_attn.{hf}.bias", mha + bv + "/bias", "heads_flat"))
    for i in range(cfg.vision.depth):
        out += [Entry(f"{VISION}encoder.layers.{i}.{hf}", bv, (i,), kind) for hf, bv, kind in per_layer]
    return out


def _gemma_entries(cfg: PaliGemmaConfig) -> list[Entry]:
    g = cfg.llm
    out = [
        Entry(TEXT + "embed_tokens.weight", "llm/embedder/input_embedding", (), "same"),
        Entry(TEXT + "norm.weight", "llm/final_norm/scale", (), "same"),
    ]
    lay = "llm/layers/"
    fused_qkv = g.num_kv_heads == g.num_heads
    for i in range(g.depth):
        p = f"{TEXT}layers.{i}."
        if fused_qkv:
            qkv = [(lay + "attn/qkv_einsum/w", (i, j)) for j in range(3)]
        else:
            qkv = [(lay + "attn/q_einsum/w", (i,)), (lay + "attn/kv_einsum/w", (i, 0)),
                   (lay + "attn/kv_einsum/w", (i, 1))]
        for proj, (bv, idx) in zip(("q_proj", "k_proj", "v_proj"), qkv):
            out.append(Entry(f"{p}self_attn.{proj}.weight", bv, idx, "gemma_in"))
        out += [
            Entry(p + "self_attn.o_proj.weight", lay + "attn/attn_vec_einsum/w", (i,), "heads_out"),
            Entry(p + "mlp.gate_proj.weight", lay + "mlp/gating_einsum", (i, 0), "t"),
            Entry(p + "mlp.up_proj.weight", lay + "mlp/gating_einsum", (i, 1), "t"),
            Entry(p + "mlp.down_proj.weight", lay + "mlp/linear", (i,), "t"),
            Entry(p + "input_layernorm.weight", lay + "pre_attention_norm/scale", (i,), "same"),
        ]
        if g.post_norms:  # Gemma 2 names its four norms after their position
            out += [
                Entry(p + "post_attention_layernorm.weight", lay + "post_attention_norm/scale", (i,), "same"),
                Entry(p + "pre_feedforward_layernorm.weight", lay + "pre_ffw_norm/scale", (i,), "same"),
                Entry(p + "post_feedforward_layernorm.weight", lay + "post_ffw_norm/scale", (i,), "same"),
            ]
        else:  # Gemma 1's "post_attention_layernorm" is the norm before the MLP
            out.append(Entry(p + "post_attention_layernorm.weight", lay + "pre_ffw_norm/scale", (i,), "same"))
    return out


def hf_entries(cfg: PaliGemmaConfig) -> list[Entry]:
    """Every HF tensor of a model with this config (``lm_head`` excluded: tied)."""
    return _vit_entries(cfg) + _gemma_entries(cfg)


def to_hf(x: np.ndarray, kind: str) -> np.ndarray:
    """A big_vision slice in HF layout (a contiguous copy unless the layout is identical)."""
    if kind == "same":
        return x
    if kind == "t":
        return np.ascontiguousarray(x.T)
    if kind == "conv":
        return np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    if kind == "heads_in":  # [C, nh, hd] -> [nh*hd, C]
        return np.ascontiguousarray(x.reshape(x.shape[0], -1).T)
    if kind == "heads_flat":
        return x.reshape(-1)
    if kind == "heads_out":  # [nh, hd, C] -> [C, nh*hd]
        return np.ascontiguousarray(x.reshape(-1, x.shape[-1]).T)
    if kind == "gemma_in":  # [H, D, hd] -> [H*hd, D]
        return np.ascontiguousarray(x.transpose(0, 2, 1).reshape(-1, x.shape[1]))
    raise ValueError(kind)


def from_hf(x: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """HF tensors back in big_vision layout: ``x`` is one HF tensor, or several stacked
    along leading axes, and ``shape`` the big_vision shape with those same leading axes.

    The result is a view of ``x`` wherever one exists (transposes are never copied), so
    a reader that stacks HF tensors in HF layout hands out big_vision arrays whose
    ``[out, in]`` memory the model can keep as it is (see ``bigvision_layout._out_in``)."""
    if kind in ("same", "heads_flat"):
        return x.reshape(shape)
    if kind == "t":
        return np.swapaxes(x, -1, -2)
    if kind == "conv":
        return x.transpose(2, 3, 1, 0)
    if kind in ("heads_in", "heads_out"):
        return np.swapaxes(x, -1, -2).reshape(shape)
    if kind == "gemma_in":  # [..., H * hd, D] -> [..., H, D, hd]
        *lead, h, d, hd = shape
        return np.swapaxes(x.reshape(*lead, h, hd, d), -1, -2)
    raise ValueError(kind)


def expected_hf_shapes(cfg: PaliGemmaConfig) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name of a model with this config and its shape."""
    bv = expected_shapes(cfg)
    return {e.hf: _hf_slice_shape(e, bv) for e in hf_entries(cfg)}


def _hf_slice_shape(e: Entry, bv: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    s = bv[e.bv][len(e.index):]
    if e.kind == "same":
        return tuple(s)
    if e.kind == "t":
        return tuple(reversed(s))
    if e.kind == "conv":
        return (s[3], s[2], s[0], s[1])
    if e.kind == "heads_in":
        return (s[1] * s[2], s[0])
    if e.kind == "heads_flat":
        return (s[0] * s[1],)
    if e.kind == "heads_out":
        return (s[2], s[0] * s[1])
    if e.kind == "gemma_in":
        return (s[0] * s[2], s[1])
    raise ValueError(e.kind)
