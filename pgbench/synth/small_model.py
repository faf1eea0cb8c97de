"""The default model's architecture and its random starting point.

PaliGemma scaled down: a SigLIP-style ViT over 128 px images in 16 px patches (64 image
tokens), the linear projection, and a Gemma 2 decoder with every Gemma 2 feature on
(grouped-query attention, attention-logit and final-logit soft-caps, the post-attention
and post-FFW norms, a sliding window on the even layers), over the synthetic benchmark's
SentencePiece vocabulary (1024 ``<loc>`` + 128 ``<seg>`` pieces included).

``write_random_init`` writes the untrained model as a Hugging Face directory (with its
tokenizer), which ``pgbench transfer`` then pre-trains: the same loop a user fine-tunes with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pgbench.config import GemmaConfig, PaliGemmaConfig, SigLIPConfig

NAME = "pgbench-synth-small"
IMAGE_SIZE = 128
PATCH_SIZE = 16
# The synthetic prompts plus answers fit in ~64 tokens after 64 image tokens: a window of
# 256 covers every sequence, so big_vision (which never windows) and transformers (which
# always does on the local layers) compute the same thing.
SLIDING_WINDOW = 256


def small_config(vocab_size: int, *, vit_width: int = 96, vit_depth: int = 3, width: int = 128,
                 depth: int = 3, heads: int = 2, kv_heads: int = 1, head_dim: int = 64,
                 mlp_ratio: int = 4) -> PaliGemmaConfig:
    """The default model's config for a tokenizer of ``vocab_size`` pieces."""
    vision = SigLIPConfig(width=vit_width, depth=vit_depth, mlp_dim=vit_width * mlp_ratio,
                          num_heads=max(1, vit_width // 32), patch_size=PATCH_SIZE, image_size=IMAGE_SIZE)
    llm = GemmaConfig(family="gemma2", width=width, depth=depth, num_heads=heads, num_kv_heads=kv_heads,
                      head_dim=head_dim, mlp_dim=width * mlp_ratio, vocab_size=vocab_size,
                      attn_logits_softcap=50.0, final_logits_softcap=30.0, post_norms=True,
                      query_pre_attn_norm="rsqrt_head_dim", sliding_window=SLIDING_WINDOW)
    return PaliGemmaConfig(name=NAME, vision=vision, llm=llm)


def training_init(name: str, draw):
    """The starting value of big_vision parameter ``name``: ``draw()`` (``random_params``:
    1/sqrt(fan-in) normals) for weights, but the identity for every norm and zero biases.

    ``random_params`` draws norm scales near 0 (std 0.02), right for parity tests but fatal
    for training: the ViT's LayerNorms multiply by their scale, so the image features would
    start ~50x smaller than the text embeddings and the decoder learns to ignore them
    (measured: a 2000-step pre-training that never looked at the image). Gemma's RMSNorm
    multiplies by (1 + scale), so its scales start at 0."""
    import numpy as np

    value = draw()
    if name.startswith("img/") and name.endswith("/scale"):
        return np.ones_like(value)
    if name.endswith("/bias") or (name.startswith("llm/") and name.endswith("/scale")):
        return np.zeros_like(value)
    return value


def write_random_init(cfg: PaliGemmaConfig, tokenizer_dir: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write the initialised model (``random_params`` weights for ``seed``, identity norms,
    zero biases: :func:`training_init`) as a Hugging Face directory holding
    ``tokenizer.model`` / ``tokenizer.json`` too; returns ``out``."""
    from pgbench.checkpoints import write_hf_dir
    from pgbench.checkpoints.random_params import RandomParams

    class TrainingInit(RandomParams):
        def read(self, key):
            return training_init(key, lambda: super(TrainingInit, self).read(key))

    out = Path(out)
    write_hf_dir(TrainingInit(cfg, seed), cfg, out)
    copy_tokenizer(tokenizer_dir, out)
    return out


def copy_tokenizer(tokenizer_dir: str | Path, out: str | Path) -> None:
    for name in ("tokenizer.model", "tokenizer.json"):
        src = Path(tokenizer_dir) / name
        if src.is_file():
            shutil.copyfile(src, Path(out) / name)
