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
from pgbench.model.params import GEMMA_BLOCKS, QKV_EINSUM, check_keys

_OPTION_FIELDS = {"query_pre_attn_norm", "attn_logits_softcap", "final_logits_softcap",
                  "sliding_window", "apply_sliding_window"}


def _need(shapes, key, source):
    if key not in shapes:
        raise CheckpointError(f"{source}: missing key {key!r}; cannot infer the model size")
    return tuple(shapes[key])


def infer_config(shapes: Mapping[str, tuple[int, ...]], *, family: str | None = None,
                 options: Mapping[str, Any] | None = None, source: str = "checkpoint",
                 name: str | None = None) -> PaliGemmaConfig:
    """Infer a PaliGemmaConfig from big_vision-named shapes, then check every key against it.

    ``family`` defaults to what the keys show (post-norm keys -> gemma2); a family that
    contradicts the keys is an error.
    """
    options = dict(options or {})
    unknown = set(options) - _OPTION_FIELDS
    if unknown:
        raise CheckpointError(f"{source}: unknown checkpoint option(s) {sorted(unknown)}; "
                              f"known: {sorted(_OPTION_FIELDS)}")
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

    p, _, _, width = _need(shapes, "img/embedding/kernel", source)
    depth, _, heads, head_dim = _need(shapes, "img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel", source)
    mlp = _need(shapes, "img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel", source)[-1]
    n_patches = _need(shapes, "img/pos_embedding", source)[1]
    grid = math.isqrt(n_patches)
    if grid * grid != n_patches:
        raise CheckpointError(f"{source}: img/pos_embedding has {n_patches} rows, not a square grid")
    vision = SigLIPConfig(width=width, depth=depth, mlp_dim=mlp, num_heads=heads, patch_size=p,
                          image_size=grid * p)

    vocab, d = _need(shapes, "llm/embedder/input_embedding", source)
    if QKV_EINSUM in shapes:
        L, _, h, _, hd = shapes[QKV_EINSUM]
        kvh = h
    else:
        L, h, _, hd = _need(shapes, GEMMA_BLOCKS["q_einsum"], source)
        kvh = _need(shapes, GEMMA_BLOCKS["kv_einsum"], source)[2]
    f = _need(shapes, GEMMA_BLOCKS["linear"], source)[1]
    llm = GemmaConfig(family=family, width=d, depth=L, num_heads=h, num_kv_heads=kvh, head_dim=hd,
                      mlp_dim=f, vocab_size=vocab)
    if family == "gemma2":
        # Released Gemma 2: soft-caps 50/30, post norms, 4096-token local window (not applied
        # by default, as big_vision); the 27B's query scale cannot be seen in shapes.
        llm = dataclasses.replace(llm, attn_logits_softcap=50.0, final_logits_softcap=30.0,
                                  post_norms=True, sliding_window=4096)
    llm = dataclasses.replace(llm, **options)
    cfg = PaliGemmaConfig(name=name or f"{family}-inferred-{vision.image_size}", vision=vision, llm=llm)
    check_keys(shapes, cfg, source)
    return cfg
