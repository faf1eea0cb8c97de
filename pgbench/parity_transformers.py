"""``pgbench parity --checkpoint PATH --against transformers``: both models, same random inputs.

Needs the optional ``[reference]`` extra (torch + transformers), imported here only.
pgbench runs with transformers' semantics (sliding window applied on the local layers,
final soft-cap on every logit) so that the numbers are comparable; the report says so.
transformers is always given ``token_type_ids``: without them it silently falls back to
a fully causal mask and the image + prefix block would not attend bidirectionally.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from pgbench.errors import PgbenchError
from pgbench.parity import Comparison, Report, compare_arrays, semantics_lines

DEFAULT_TOLERANCE = 1e-4  # float32, two independent implementations of a full-size model


def _import_reference():
    try:
        import torch
        import transformers
    except ImportError:
        raise PgbenchError("--against transformers needs the optional extra: run "
                           "`make install-reference` (torch==2.13.0 + transformers)") from None
    return torch, transformers


def random_inputs(cfg, *, seed: int, prefix_len: int = 8, suffix_len: int = 6, vocab_hi: int = 256000):
    """One example: image in [-1, 1], [BOS] prefix [SEP] as prefix, random suffix tokens."""
    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size
    images = rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    hi = min(vocab_hi, cfg.llm.vocab_size)
    prefix = [2, *rng.integers(3, hi, prefix_len).tolist(), 108 if hi > 108 else 3]
    suffix = rng.integers(3, hi, suffix_len).tolist()
    tokens = np.asarray([prefix + suffix], np.int32)
    mask_ar = np.asarray([[0] * len(prefix) + [1] * len(suffix)], np.int32)
    return images, tokens, np.ones_like(tokens, bool), mask_ar


def check_against_transformers(checkpoint: str | Path, *, family: str | None = None,
                               attn_impl: str = "xla", seed: int = 0,
                               tolerance: float = DEFAULT_TOLERANCE, max_new_tokens: int = 8) -> Report:
    torch, transformers = _import_reference()
    import jax.numpy as jnp

    from pgbench import decode
    from pgbench.checkpoints import load_checkpoint
    from pgbench.checkpoints import write_hf_dir
    from pgbench.model import paligemma
    from pgbench.model.layer_forms import default_stacked
    from pgbench.checkpoints.bigvision_layout import to_bigvision_params

    checkpoint = Path(checkpoint)
    model, cfg = load_checkpoint(checkpoint, family=family, stacked=default_stacked())
    if cfg.llm.family == "gemma2":
        cfg = cfg.replace_llm(apply_sliding_window=True, final_logits_softcap=30.0)
        model = paligemma.with_config(model, cfg)
    images, tokens, input_mask, mask_ar = random_inputs(cfg, seed=seed)

    logits, zimg = paligemma.forward(model, images, tokens, input_mask, mask_ar,
                                     attn_impl=attn_impl, final_softcap=True)
    prefix_mask = mask_ar == 0
    ours_greedy = np.asarray(decode.greedy_decode(
        model, images, np.where(prefix_mask, tokens, 0), prefix_mask, np.where(prefix_mask, 0, 1),
        max_new_tokens=max_new_tokens, attn_impl=attn_impl))
    ours = {"zimg": np.asarray(zimg), "logits": np.asarray(logits)}

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = checkpoint
        if not checkpoint.is_dir():  # a big_vision .npz: write it as HF for transformers
            hf_dir = Path(tmp) / "hf"
            write_hf_dir(to_bigvision_params(model), cfg, hf_dir)
        del model
        hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
            hf_dir, dtype=torch.float32, attn_implementation="eager").eval()
        ref, ref_greedy = _run_transformers(torch, hf, images, tokens, mask_ar, max_new_tokens)

    n_img = ours["zimg"].shape[1]
    comparisons: list[Comparison] = [
        compare_arrays("zimg", ours["zimg"], ref["zimg"], tol=tolerance),
        compare_arrays("logits", ours["logits"][..., : ref["logits"].shape[-1]][:, : n_img + tokens.shape[1]],
                       ref["logits"][..., : ours["logits"].shape[-1]], tol=tolerance),
        compare_arrays("greedy_tokens", ours_greedy, ref_greedy, tol=0),
    ]
    semantics = semantics_lines(cfg, attn_impl) + [
        f"random inputs (seed {seed}): one image, {int(prefix_mask.sum())} prefix + "
        f"{int((~prefix_mask).sum())} suffix tokens; transformers given token_type_ids",
        f"tolerance {tolerance:g} of max|ref| (float32)"]
    return Report(name=checkpoint.name, source=str(checkpoint),
                  producer=f"transformers {transformers.__version__} (run now)",
                  comparisons=comparisons, semantics=semantics)


def _run_transformers(torch, hf, images, tokens, mask_ar, max_new_tokens):
    cfg = hf.config
    n_img = cfg.vision_config.image_size // cfg.vision_config.patch_size
    n_img *= n_img
    image_ids = np.full((1, n_img), cfg.image_token_id, np.int64)
    ids = torch.from_numpy(np.concatenate([image_ids, tokens], axis=1))
    token_type = torch.from_numpy(np.concatenate([np.zeros_like(image_ids), mask_ar], axis=1))
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        out = hf(input_ids=ids, pixel_values=pixels, token_type_ids=token_type,
                 attention_mask=torch.ones_like(ids))
        zimg = hf.get_image_features(pixels)
        zimg = getattr(zimg, "pooler_output", zimg)
        prefix = int((mask_ar == 0).sum())
        gen = hf.generate(input_ids=ids[:, : n_img + prefix], pixel_values=pixels,
                          token_type_ids=token_type[:, : n_img + prefix],
                          attention_mask=torch.ones_like(ids[:, : n_img + prefix]),
                          max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=1,
                          pad_token_id=0)
    new = gen[:, n_img + prefix:].numpy().astype(np.int32)
    greedy = np.full((1, max_new_tokens), -1, np.int32)
    greedy[:, : new.shape[1]] = new
    eos = np.cumsum(greedy == 1, axis=1) - (greedy == 1)
    greedy[eos > 0] = -1
    return {"zimg": zimg.numpy(), "logits": out.logits.float().numpy()}, greedy
