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


def small_config(vocab_size: int, *, vit_width: int = 128, vit_depth: int = 3, width: int = 192,
                 depth: int = 3, heads: int = 3, kv_heads: int = 1, head_dim: int = 64,
                 mlp_ratio: int = 4) -> PaliGemmaConfig:
    """The default model's config for a tokenizer of ``vocab_size`` pieces."""
    vision = SigLIPConfig(width=vit_width, depth=vit_depth, mlp_dim=vit_width * mlp_ratio,
                          num_heads=max(1, vit_width // 32), patch_size=PATCH_SIZE, image_size=IMAGE_SIZE)
    llm = GemmaConfig(family="gemma2", width=width, depth=depth, num_heads=heads, num_kv_heads=kv_heads,
                      head_dim=head_dim, mlp_dim=width * mlp_ratio, vocab_size=vocab_size,
                      attn_logits_softcap=50.0, final_logits_softcap=30.0, post_norms=True,
                      query_pre_attn_norm="rsqrt_head_dim", sliding_window=SLIDING_WINDOW)
    return PaliGemmaConfig(name=NAME, vision=vision, llm=llm)


def sincos_2d(grid: int, width: int) -> "np.ndarray":
    """f32[grid * grid, width]: a 2-D sine-cosine position code for a ``grid`` x ``grid``
    patch raster (row-major, as the ViT flattens patches). A quarter of the channels each
    hold sin(x w), cos(x w), sin(y w), cos(y w) over ``width / 4`` geometric frequencies
    w = 10000^(-k / (width/4 - 1)); ``width`` must be a multiple of 4."""
    import numpy as np

    if width % 4:
        raise ValueError(f"sincos_2d needs a width divisible by 4, got {width}")
    quarter = width // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter) / max(quarter - 1, 1))
    y, x = np.mgrid[:grid, :grid]
    ax, ay = x.reshape(-1, 1) * omega, y.reshape(-1, 1) * omega
    return np.concatenate([np.sin(ax), np.cos(ax), np.sin(ay), np.cos(ay)], axis=1).astype(np.float32)


def sincos_locations(count: int, width: int) -> "np.ndarray":
    """f32[count, width]: an embedding row of norm 1 per location bin 0..count-1, bin i at
    angle (i / count) 2 pi f over ``width / 2`` frequencies f from 0.5 to 64 cycles per image
    side (sin and cos halves), so neighbouring bins start with near-equal rows and distant
    bins with near-orthogonal ones."""
    import numpy as np

    half = width // 2
    freqs = np.geomspace(0.5, 64.0, half)
    angles = (np.arange(count).reshape(-1, 1) / count) * 2 * np.pi * freqs
    rows = np.concatenate([np.sin(angles), np.cos(angles)], axis=1) / np.sqrt(half)
    out = np.zeros((count, width), np.float32)
    out[:, : 2 * half] = rows
    return out


def training_init(name: str, draw, *, loc_ids=None):
    """The starting value of big_vision parameter ``name``: ``draw()`` (``random_params``:
    1/sqrt(fan-in) normals) for weights, but the identity for every norm, zero biases, and
    position codes where the model must learn *where* things are.

    ``random_params`` draws norm scales near 0 (std 0.02), right for parity tests but fatal
    for training: the ViT's LayerNorms multiply by their scale, so the image features would
    start ~50x smaller than the text embeddings and the decoder learns to ignore them
    (measured: a 2000-step pre-training that never looked at the image). Gemma's RMSNorm
    multiplies by (1 + scale), so its scales start at 0.

    Position: ``img/pos_embedding`` starts as a 2-D sine-cosine code (:func:`sincos_2d`)
    and, given ``loc_ids`` (``loc_ids[i]`` = the id of ``<loc{i:04d}>``), those rows of the
    tied token embedding start as a 1-D sine-cosine code over the 1024 bins
    (:func:`sincos_locations`). In exploratory runs (not scripted in the repository), with
    std-0.02 position embeddings, ~50x below the patch content, and unrelated random
    ``<loc>`` rows, a 1000-step run on synthetic detection never used the image (its validation loss with images shuffled equalled the true one);
    with both codes the same run localised (median box-coordinate error 63 of 1024 bins,
    from ~200)."""
    import numpy as np

    value = draw()
    if name.startswith("img/") and name.endswith("/scale"):
        return np.ones_like(value)
    if name.endswith("/bias") or (name.startswith("llm/") and name.endswith("/scale")):
        return np.zeros_like(value)
    if name == "img/pos_embedding":  # [1, N, D]
        grid = int(round(value.shape[-2] ** 0.5))
        return sincos_2d(grid, value.shape[-1]).reshape(value.shape).astype(value.dtype)
    if name == "llm/embedder/input_embedding" and loc_ids is not None:  # [V, D]
        value = np.array(value, copy=True)
        value[np.asarray(loc_ids)] = sincos_locations(len(loc_ids), value.shape[-1]).astype(value.dtype)
        return value
    return value


def training_init_source(cfg: PaliGemmaConfig, seed: int = 0, *, loc_ids=None):
    """A big_vision-named parameter source: ``random_params`` weights for ``seed`` passed
    through :func:`training_init`."""
    from pgbench.checkpoints.random_params import RandomParams

    class TrainingInit(RandomParams):
        def read(self, key):
            return training_init(key, lambda: super(TrainingInit, self).read(key), loc_ids=loc_ids)

    return TrainingInit(cfg, seed)


def write_random_init(cfg: PaliGemmaConfig, tokenizer_dir: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write the initialised model (``random_params`` weights for ``seed``, identity norms,
    zero biases, sine-cosine image positions and ``<loc>`` rows: :func:`training_init`) as
    a Hugging Face directory holding ``tokenizer.model`` / ``tokenizer.json`` too; returns
    ``out``."""
    from pgbench.checkpoints import write_hf_dir
    from pgbench.tokenizer import Tokenizer

    tok = Tokenizer(Path(tokenizer_dir) / "tokenizer.model", require_locseg=False)
    loc_ids = tok.locseg.loc if tok.has_locseg else None
    out = Path(out)
    write_hf_dir(training_init_source(cfg, seed, loc_ids=loc_ids), cfg, out)
    copy_tokenizer(tokenizer_dir, out)
    return out


def copy_tokenizer(tokenizer_dir: str | Path, out: str | Path) -> None:
    for name in ("tokenizer.model", "tokenizer.json"):
        src = Path(tokenizer_dir) / name
        if src.is_file():
            shutil.copyfile(src, Path(out) / name)
