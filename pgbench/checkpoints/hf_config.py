"""Hugging Face ``config.json`` <-> PaliGemmaConfig.

Sizes come from the tensor shapes (a config.json may disagree with its weights; the
weights win, or the two are reported as contradicting each other); what shapes cannot
show (heads, head_dim, query scale, soft-caps, epsilons) comes from config.json. Every
field read is type-checked: a wrong type is a CheckpointError naming the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from pgbench.checkpoints import hf_mapping as hm
from pgbench.checkpoints.infer import apply_options
from pgbench.config import GemmaConfig, PaliGemmaConfig, SigLIPConfig
from pgbench.errors import CheckpointError

# transformers' class defaults for fields a config.json may leave out.
_TEXT_DEFAULTS = {
    "gemma": {"num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256},
    "gemma2": {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
               "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
}
_FAMILY = {"gemma": "gemma1", "gemma2": "gemma2"}
_MISSING = object()

_KINDS = {
    "count": ("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "number": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "text": ("a string", lambda v: isinstance(v, str)),
    "object": ("a JSON object", lambda v: isinstance(v, dict)),
    "list": ("a list", lambda v: isinstance(v, list)),
}


class _Fields:
    """Typed access to one JSON object of config.json (``where``: its path, for messages)."""

    def __init__(self, obj: Mapping[str, Any], where: str, source: str):
        self.obj, self.where, self.source = obj, where, source

    def get(self, key: str, kind: str, default: Any = _MISSING, *, nullable: bool = False) -> Any:
        """``obj[key]`` if it is of ``kind`` (``None`` allowed when ``nullable``); ``default``
        when absent; a CheckpointError naming the field otherwise."""
        v = self.obj.get(key, _MISSING)
        if v is _MISSING:
            if default is _MISSING:
                raise CheckpointError(f"{self.source}: {self.where}{key} is missing")
            return default
        what, ok = _KINDS[kind]
        if (v is None and nullable) or (v is not None and ok(v)):
            return v
        raise CheckpointError(f"{self.source}: {self.where}{key} is {v!r}; expected {what}"
                              + (" or null" if nullable else ""))

    def section(self, key: str) -> "_Fields":
        return _Fields(self.get(key, "object", {}), f"{self.where}{key}.", self.source)


def top_fields(config: Any, source: str) -> _Fields:
    """The top level of a parsed config.json (``source``: the file, for messages)."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: not a JSON object")
    return _Fields(config, "", source)


def _sizes_from_tensors(shapes: Mapping[str, tuple[int, ...]], source: str) -> dict[str, int]:
    """ViT and LLM sizes that shapes reveal (heads and head_dim come from config.json)."""
    def shape(name, ndim):
        if name not in shapes:
            raise CheckpointError(f"{source}: missing tensor {name!r}; cannot infer the model size")
        if len(shapes[name]) != ndim:
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(shapes[name])}; "
                                  f"expected {ndim} dimensions")
        return shapes[name]

    def depth(prefix):
        idx = {int(k[len(prefix):].split(".")[0]) for k in shapes
               if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()}
        if idx != set(range(len(idx))):
            missing = sorted(set(range(max(idx) + 1)) - idx)
            raise CheckpointError(f"{source}: layers {missing} missing under {prefix!r}")
        return len(idx)

    c, _, p, p_w = shape(hm.VISION + "embeddings.patch_embedding.weight", 4)
    if p != p_w:
        raise CheckpointError(f"{source}: non-square patch kernel {p}x{p_w}")
    n = shape(hm.VISION + "embeddings.position_embedding.weight", 2)[0]
    grid = math.isqrt(n)
    if grid * grid != n:
        raise CheckpointError(f"{source}: position_embedding has {n} rows, not a square grid")
    vocab, width = shape(hm.TEXT + "embed_tokens.weight", 2)
    return dict(vit_width=c, patch=p, image_size=grid * p,
                vit_depth=depth(hm.VISION + "encoder.layers."),
                vit_mlp=shape(hm.VISION + "encoder.layers.0.mlp.fc1.weight", 2)[0],
                vocab=vocab, width=width, depth=depth(hm.TEXT + "layers."),
                mlp=shape(hm.TEXT + "layers.0.mlp.gate_proj.weight", 2)[0])


def config_from_hf(config: Any, shapes: Mapping[str, tuple[int, ...]], *,
                   source: str, family: str | None = None,
                   options: Mapping[str, Any] | None = None) -> PaliGemmaConfig:
    """A PaliGemmaConfig: sizes from the HF tensor ``shapes``, the rest from the parsed
    config.json, then ``options``. ``source`` is the checkpoint directory."""
    where = f"{source}/config.json"
    top = top_fields(config, where)
    if not isinstance(config.get("text_config"), dict) or not isinstance(config.get("vision_config"), dict):
        bad = "text_config" if not isinstance(config.get("text_config"), dict) else "vision_config"
        raise CheckpointError(f"{where}: needs 'text_config' and 'vision_config' objects "
                              f"(a PaliGemmaForConditionalGeneration config); {bad} is "
                              f"{config.get(bad)!r}")
    text, vision = top.section("text_config"), top.section("vision_config")
    mtype = text.get("model_type", "text", None)
    if mtype not in _FAMILY:
        raise CheckpointError(f"{where}: text_config.model_type is {mtype!r}; "
                              f"expected 'gemma' (PaliGemma 1) or 'gemma2' (PaliGemma 2)")
    fam = _FAMILY[mtype]
    if family is not None and family != fam:
        raise CheckpointError(f"{source}: family {family!r} requested, but config.json says "
                              f"text_config.model_type={mtype!r} ({fam})")
    has_post = any(k.endswith("post_feedforward_layernorm.weight") for k in shapes)
    if has_post != (fam == "gemma2"):
        raise CheckpointError(f"{source}: config.json says {mtype!r}, but the weights "
                              f"{'have' if has_post else 'lack'} post_feedforward_layernorm tensors "
                              f"(Gemma 2 has them, Gemma 1 does not)")
    d = _TEXT_DEFAULTS[mtype]

    def text_field(key, kind, nullable=False):  # a null count falls back to the default
        v = text.get(key, kind, d.get(key, _MISSING), nullable=True)
        return d[key] if v is None and not nullable and key in d else v

    s = _sizes_from_tensors(shapes, source)
    image_size = vision.get("image_size", "count", None, nullable=True)
    if image_size is not None and image_size != s["image_size"]:
        raise CheckpointError(f"{source}: config.json vision_config.image_size={image_size}, but the "
                              f"position embedding has {s['image_size'] // s['patch']}^2 patches of "
                              f"{s['patch']} px = {s['image_size']} px")
    rope_params = text.section("rope_parameters") if text.obj.get("rope_parameters") is not None else None
    rope = ((rope_params.get("rope_theta", "number", None, nullable=True) if rope_params else None)
            or text.get("rope_theta", "number", None, nullable=True) or 10_000.0)
    heads, head_dim = text_field("num_attention_heads", "count"), text_field("head_dim", "count")
    llm_kw: dict[str, Any] = {}
    if fam == "gemma2":
        scalar = text_field("query_pre_attn_scalar", "number")
        if scalar == head_dim:
            qnorm = "rsqrt_head_dim"
        elif scalar == s["width"] // heads:
            qnorm = "rsqrt_emb_per_head"
        else:
            raise CheckpointError(f"{where}: query_pre_attn_scalar={scalar} is neither "
                                  f"head_dim={head_dim} nor hidden_size/heads={s['width'] // heads}")
        layer_types = text.get("layer_types", "list", None, nullable=True)
        if layer_types is not None:
            want = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(s["depth"])]
            if list(layer_types) != want:
                raise CheckpointError(f"{where}: layer_types {layer_types} is not the "
                                      "Gemma 2 pattern (sliding on even layers, full on odd) pgbench runs")
        llm_kw = dict(post_norms=True, query_pre_attn_norm=qnorm,
                      attn_logits_softcap=text_field("attn_logit_softcapping", "number", nullable=True) or None,
                      final_logits_softcap=text_field("final_logit_softcapping", "number", nullable=True) or None,
                      sliding_window=text_field("sliding_window", "count"))
    kv_heads = text_field("num_key_value_heads", "count")
    norm_eps = text.get("rms_norm_eps", "number", 1e-6)
    vit_heads = vision.get("num_attention_heads", "count", 12)
    vit_eps = vision.get("layer_norm_eps", "number", 1e-6)
    try:
        llm = GemmaConfig(family=fam, width=s["width"], depth=s["depth"], num_heads=heads,
                          num_kv_heads=kv_heads, head_dim=head_dim,
                          mlp_dim=s["mlp"], vocab_size=s["vocab"], rope_base=float(rope),
                          norm_eps=float(norm_eps), **llm_kw)
        vit = SigLIPConfig(width=s["vit_width"], depth=s["vit_depth"], mlp_dim=s["vit_mlp"],
                           num_heads=vit_heads, patch_size=s["patch"], image_size=s["image_size"],
                           layernorm_eps=float(vit_eps))
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None
    llm = apply_options(llm, options, source)
    name = Path(source).name or "hf"
    return PaliGemmaConfig(name=name, vision=vit, llm=llm)


def config_to_hf(cfg: PaliGemmaConfig, dtype_name: str = "float32") -> dict[str, Any]:
    """A config.json that transformers (4.x and 5.x) loads as PaliGemmaForConditionalGeneration."""
    v, g = cfg.vision, cfg.llm
    text: dict[str, Any] = {
        "model_type": "gemma2" if g.family == "gemma2" else "gemma",
        "hidden_size": g.width, "intermediate_size": g.mlp_dim, "num_hidden_layers": g.depth,
        "num_attention_heads": g.num_heads, "num_key_value_heads": g.num_kv_heads,
        "head_dim": g.head_dim, "vocab_size": g.vocab_size, "rms_norm_eps": g.norm_eps,
        "rope_theta": g.rope_base,
        "rope_parameters": {"rope_theta": g.rope_base, "rope_type": "default"},
        "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
        "max_position_embeddings": 8192, "num_image_tokens": v.num_patches,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "tie_word_embeddings": True,
    }
    if g.family == "gemma2":
        text.update(
            query_pre_attn_scalar=(g.head_dim if g.query_pre_attn_norm == "rsqrt_head_dim"
                                   else g.width // g.num_heads),
            attn_logit_softcapping=g.attn_logits_softcap,
            final_logit_softcapping=g.final_logits_softcap,
            # transformers always runs a window on the local layers; 4096 is the released one.
            sliding_window=g.sliding_window or 4096,
            layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(g.depth)],
        )
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": v.width, "intermediate_size": v.mlp_dim,
        "num_hidden_layers": v.depth, "num_attention_heads": v.num_heads, "patch_size": v.patch_size,
        "image_size": v.image_size, "num_image_tokens": v.num_patches, "projection_dim": g.width,
        "layer_norm_eps": v.layernorm_eps, "hidden_act": "gelu_pytorch_tanh", "vision_use_head": False,
    }
    return {
        "architectures": ["PaliGemmaForConditionalGeneration"], "model_type": "paligemma",
        "hidden_size": g.width, "projection_dim": g.width,
        # An id past the vocabulary: transformers maps it to the image features.
        "image_token_index": g.vocab_size, "vocab_size": g.vocab_size,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "tie_word_embeddings": True,
        "dtype": dtype_name, "torch_dtype": dtype_name,
        "text_config": text, "vision_config": vision,
    }
