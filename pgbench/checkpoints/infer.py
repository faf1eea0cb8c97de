"""A model configuration from checkpoint array shapes.

Every size is read off the shapes; only what shapes cannot reveal comes from the
family (gemma1 / gemma2 defaults) and the case/user options (FORMAT.md ``options``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from pgbench.config import GemmaConfig, PaliGemmaConfig, SigLIPConfig
from pgbench.errors import CheckpointError
from pgbench.checkpoints.bigvision_layout import GEMMA_BLOCKS, QKV_EINSUM, check_keys, expected_shapes

__all__ = ["infer_config", "validate", "expected_shapes", "apply_options"]

_OPTION_FIELDS = {"query_pre_attn_norm", "attn_logits_softcap", "final_logits_softcap",
                  "sliding_window", "apply_sliding_window"}
_QUERY_NORMS = ("rsqrt_head_dim", "rsqrt_emb_per_head")
_OPTION_TYPES = {"query_pre_attn_norm": "a string", "attn_logits_softcap": "a number or null",
                 "final_logits_softcap": "a number or null",
                 "sliding_window": "a positive integer or null", "apply_sliding_window": "true or false"}
_OPTION_CHECKS = {
    "a string": lambda v: isinstance(v, str),
    "a number or null": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
    "a positive integer or null": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "true or false": lambda v: isinstance(v, bool),
}


def validate(shapes: Mapping[str, tuple[int, ...]], cfg: PaliGemmaConfig, source: str = "checkpoint") -> None:
    """Check every big_vision key and shape against ``cfg``: one CheckpointError listing all
    missing, unexpected and misshapen keys (expected vs found)."""
    check_keys(shapes, cfg, source)


def apply_options(llm: GemmaConfig, options: Mapping[str, Any] | None, source: str) -> GemmaConfig:
    """Apply FORMAT.md case.json ``options`` (what shapes cannot reveal) to an LLM config.

    A soft-cap of 0 means "off", as in big_vision's configs.
    """
    if options is not None and not isinstance(options, Mapping):
        raise CheckpointError(f"{source}: checkpoint options are {options!r}; expected a JSON object")
    options = dict(options or {})
    unknown = set(options) - _OPTION_FIELDS
    if unknown:
        raise CheckpointError(f"{source}: unknown checkpoint option(s) {sorted(unknown)}; "
                              f"known: {sorted(_OPTION_FIELDS)}")
    for key, v in options.items():
        want = _OPTION_TYPES[key]
        if not _OPTION_CHECKS[want](v):
            raise CheckpointError(f"{source}: option {key}={v!r}; expected {want}")
    for cap in ("attn_logits_softcap", "final_logits_softcap"):
        if cap in options and not options[cap]:
            options[cap] = None
    if "query_pre_attn_norm" in options and options["query_pre_attn_norm"] not in _QUERY_NORMS:
        raise CheckpointError(f"{source}: option query_pre_attn_norm={options['query_pre_attn_norm']!r}; "
                              f"expected one of {_QUERY_NORMS}")
    return dataclasses.replace(llm, **options)


def _need(shapes, key, source, ndim):
    if key not in shapes:
        raise CheckpointError(f"{source}: missing key {key!r}; cannot infer the model size")
    shape = tuple(shapes[key])
    if len(shape) != ndim:
        raise CheckpointError(f"{source}: key {key!r} has shape {shape}; expected {ndim} dimensions")
    return shape


def infer_config(shapes: Mapping[str, tuple[int, ...]], *, family: str | None = None,
                 options: Mapping[str, Any] | None = None, source: str = "checkpoint",
                 name: str | None = None) -> PaliGemmaConfig:
    """Infer a PaliGemmaConfig from big_vision-named shapes, then check every key against it.

    ``family`` defaults to what the keys show (post-norm keys -> gemma2); a family that
    contradicts the keys is an error.
    """
    has_post = GEMMA_BLOCKS["post_attention_norm"] in shapes
    if family is None:
        family = "gemma2" if has_post else "gemma1"
    if family not in ("gemma1", "gemma2"):
        raise CheckpointError(f"{source}: unknown LLM family {family!r}; expected gemma1 or gemma2")
    if (family == "gemma2") != has_post:
        raise CheckpointError(
            f"{source}: family {family!r} does not match the weights: "
            f"{'no' if not has_post else 'found'} post-attention/post-FFW norm keys "
            f"({GEMMA_BLOCKS['post_attention_norm']}), which Gemma 2 has and Gemma 1 lacks")

    p, p_w, _, width = _need(shapes, "img/embedding/kernel", source, 4)
    if p != p_w:
        raise CheckpointError(f"{source}: img/embedding/kernel has non-square patches {p}x{p_w}")
    depth, _, heads, head_dim = _need(shapes, "img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel", source, 4)
    mlp = _need(shapes, "img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel", source, 3)[-1]
    n_patches = _need(shapes, "img/pos_embedding", source, 3)[1]
    grid = math.isqrt(n_patches)
    if grid * grid != n_patches:
        raise CheckpointError(f"{source}: img/pos_embedding has {n_patches} rows, not a square grid")
    vision = SigLIPConfig(width=width, depth=depth, mlp_dim=mlp, num_heads=heads, patch_size=p,
                          image_size=grid * p)

    vocab, d = _need(shapes, "llm/embedder/input_embedding", source, 2)
    if QKV_EINSUM in shapes:
        L, _, h, _, hd = _need(shapes, QKV_EINSUM, source, 5)
        kvh = h
    else:
        L, h, _, hd = _need(shapes, GEMMA_BLOCKS["q_einsum"], source, 4)
        kvh = _need(shapes, GEMMA_BLOCKS["kv_einsum"], source, 5)[2]
    f = _need(shapes, GEMMA_BLOCKS["linear"], source, 3)[1]
    try:
        llm = GemmaConfig(family=family, width=d, depth=L, num_heads=h, num_kv_heads=kvh, head_dim=hd,
                          mlp_dim=f, vocab_size=vocab)
    except ValueError as e:
        raise CheckpointError(f"{source}: the LLM shapes do not form a valid Gemma: {e}") from None
    if family == "gemma2":
        # Released Gemma 2: soft-caps 50/30, post norms, 4096-token local window (not applied
        # by default, as big_vision); the 27B's query scale cannot be seen in shapes.
        llm = dataclasses.replace(llm, attn_logits_softcap=50.0, final_logits_softcap=30.0,
                                  post_norms=True, sliding_window=4096)
    llm = apply_options(llm, options, source)
    cfg = PaliGemmaConfig(name=name or f"{family}-inferred-{vision.image_size}", vision=vision, llm=llm)
    validate(shapes, cfg, source)
    return cfg
