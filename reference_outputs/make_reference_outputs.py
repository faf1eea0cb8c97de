"""Write the transformers-produced reference cases in reference_outputs/.

    python reference_outputs/make_reference_outputs.py [--out DIR] [--case NAME ...]

Needs the optional extra (``pip install .[reference]``: torch 2.13.0 + transformers). For each
case it builds a tiny ``PaliGemmaForConditionalGeneration`` from a config (random weights under
fixed seeds, float32, eager attention), saves it as a Hugging Face directory with the tiny
SentencePiece tokenizer, runs transformers on fixed inputs and writes the case in the
shared/reference FORMAT.md layout (version 1). README.md beside this script describes every
file and array, and exactly where transformers computes things differently from big_vision.

Two runs write byte-identical files (the npz writer below pins zip timestamps; torch runs
single-threaded).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import platform
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOKENIZER_SCRIPT = REPO / "tests" / "fixtures" / "make_tiny_tokenizer.py"

# Tokenizer layout (tests/fixtures/make_tiny_tokenizer.py): 1536 pieces.
PAD, EOS, BOS, SEP = 0, 1, 2, 1156
TEXT_VOCAB = 1536
# Like the released HF conversions (text vocab 257152, image token 257152, embedding rows
# 257216): the "<image>" placeholder is the first id after the text vocabulary and the
# embedding table is padded with zero rows to a multiple of 64.
IMAGE_TOKEN = TEXT_VOCAB
MODEL_VOCAB = 1600
DECODE_STEPS = 10
EMBED_STD = 0.05

CASES = {
    "hf_pg1_tiny": {
        "family": "gemma1", "seed": 3001, "image_size": 56, "eos_row_scale": 2.9,
        "text": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=1, head_dim=16, intermediate_size=128),
        "examples": [("caption en", "a cat sitting on the table."),
                     ("answer en what color is the car?", "red")],
        "decode_prefixes": ["caption en", "answer en how many animals are there?", "ocr"],
    },
    "hf_pg2_tiny": {
        "family": "gemma2", "seed": 3006, "image_size": 28, "sliding_window": 8,
        "eos_row_scale": 2.6,
        "text": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, intermediate_size=128),
        # Suffixes longer than the window of 8, so the windowed layer limits them.
        "examples": [("detect cat ; dog",
                      "<loc0123><loc0456><loc0789><loc1000> cat ; <loc0001><loc0002><loc0512><loc0640> dog"),
                     ("caption en", "two people standing next to a fence.")],
        "decode_prefixes": ["detect car", "caption es", "answer en what is in the image?"],
    },
}


# ---------------------------------------------------------------------------------------------
# Deterministic file writers.


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed layout (one deflated .npy member per array), fixed zip timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Tokenizer.


def load_tokenizer_module():
    spec = importlib.util.spec_from_file_location("make_tiny_tokenizer", TOKENIZER_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_tokenizer(ckpt: Path, tok_mod, model_bytes: bytes) -> None:
    """tokenizer.model (SentencePiece), tokenizer.json (+ "<image>" at IMAGE_TOKEN), config."""
    (ckpt / "tokenizer.model").write_bytes(model_bytes)
    tj = json.loads(tok_mod.hf_tokenizer_json(model_bytes))
    # The released PaliGemma tokenizers carry "<image>" as an added special token just past
    # the SentencePiece vocabulary; the processor repeats it once per image token.
    tj["added_tokens"].append({"id": IMAGE_TOKEN, "content": "<image>", "single_word": False,
                               "lstrip": False, "rstrip": False, "normalized": False,
                               "special": True})
    (ckpt / "tokenizer.json").write_text(
        json.dumps(tj, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n",
        encoding="utf-8")
    write_json(ckpt / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "image_token": "<image>",
        "add_bos_token": False, "add_eos_token": False, "padding_side": "left",
        "model_max_length": 1000000})


def encode_example(sp, prefix: str, suffix: str | None) -> list[int]:
    """[BOS] prefix [SEP] (suffix [EOS])."""
    ids = [BOS] + sp.encode(prefix) + [SEP]
    if suffix is not None:
        ids += sp.encode(suffix) + [EOS]
    return ids


def right_padded(rows: list[list[int]], n_prefix: list[int]):
    """tokens i32[B, T], input_mask bool[B, T], mask_ar i32[B, T] (1 on suffix and padding)."""
    T = max(map(len, rows))
    tokens = np.full((len(rows), T), PAD, np.int32)
    mask = np.zeros((len(rows), T), bool)
    ar = np.ones((len(rows), T), np.int32)
    for b, (row, n) in enumerate(zip(rows, n_prefix)):
        tokens[b, :len(row)] = row
        mask[b, :len(row)] = True
        ar[b, :n] = 0
    return tokens, mask, ar


# ---------------------------------------------------------------------------------------------
# Model.


def build_model(spec: dict):
    import torch
    from transformers import (Gemma2Config, GemmaConfig, PaliGemmaConfig,
                              PaliGemmaForConditionalGeneration, SiglipVisionConfig)

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, patch_size=14, image_size=spec["image_size"],
                                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                                vision_use_head=False)
    common = dict(vocab_size=MODEL_VOCAB, rms_norm_eps=1e-6, max_position_embeddings=512,
                  pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **spec["text"])
    if spec["family"] == "gemma1":
        text = GemmaConfig(hidden_act="gelu_pytorch_tanh", **common)
    else:
        text = Gemma2Config(hidden_activation="gelu_pytorch_tanh",
                            query_pre_attn_scalar=spec["text"]["head_dim"],
                            sliding_window=spec["sliding_window"], final_logit_softcapping=30.0,
                            attn_logit_softcapping=50.0, **common)
    cfg = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                          vocab_size=MODEL_VOCAB, projection_dim=text.hidden_size,
                          hidden_size=text.hidden_size)
    cfg._attn_implementation = "eager"
    torch.manual_seed(spec["seed"])
    model = PaliGemmaForConditionalGeneration(cfg).to(torch.float32).eval()
    model.config._attn_implementation = "eager"
    for sub in (model.config.text_config, model.config.vision_config):
        sub._attn_implementation = "eager"
    draw_parameters(model, spec["seed"], spec["eos_row_scale"])
    return model


def draw_parameters(model, seed: int, eos_scale: float) -> None:
    """Overwrite every parameter with seeded draws, scaled like the big_vision references.

    Matrices N(0,1)/sqrt(fan_in); biases and norm weights 0.1*N(0,1) (norms act as 1 + w);
    then the big_vision recipe's emphasis so logits are varied and the soft-caps matter:
    final norm +8, token embedding std EMBED_STD, q/k x2, o/down projections x4. Embedding rows past
    the text vocabulary (the "<image>" id and padding) are zero, as in converted checkpoints.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            x = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("embed_tokens.weight"):
                x = x * EMBED_STD
                x[TEXT_VOCAB:] = 0.0
                x[EOS] = x[EOS] * eos_scale
            elif name.endswith(("bias",)) or "norm" in name or "layernorm" in name:
                x = 0.1 * x
                if name.endswith("language_model.norm.weight"):
                    x = x + 8.0
            elif name.endswith("position_embedding.weight"):
                x = 0.1 * x
            elif p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                x = x / fan_in ** 0.5
                if name.endswith(("q_proj.weight", "k_proj.weight")) and "language_model" in name:
                    x = x * 2.0
                if name.endswith(("o_proj.weight", "down_proj.weight")) and "language_model" in name:
                    x = x * 4.0
            p.copy_(x)


# ---------------------------------------------------------------------------------------------
# Running transformers.


def hf_forward(model, images, tokens, input_mask, mask_ar, n_img):
    """HF forward on our right-padded layout -> (logits, zimg) as numpy."""
    import torch

    B = tokens.shape[0]
    ids = np.concatenate([np.full((B, n_img), IMAGE_TOKEN, np.int64), tokens], axis=1)
    attn = np.concatenate([np.ones((B, n_img), np.int64), input_mask.astype(np.int64)], axis=1)
    tt = np.concatenate([np.zeros((B, n_img), np.int64), mask_ar.astype(np.int64)], axis=1)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids),
                    pixel_values=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
                    attention_mask=torch.from_numpy(attn), token_type_ids=torch.from_numpy(tt),
                    use_cache=False)
    return out.logits, out.image_hidden_states


def hf_per_example_loss(model, logits, tokens, input_mask, mask_ar, n_img):
    """Suffix loss per example with transformers' own loss function (labels -100 elsewhere)."""
    import torch

    B = tokens.shape[0]
    suffix = (mask_ar == 1) & input_mask
    labels = np.where(suffix, tokens, -100).astype(np.int64)
    labels = np.concatenate([np.full((B, n_img), -100, np.int64), labels], axis=1)
    labels = torch.from_numpy(labels)
    with torch.no_grad():
        return np.array([float(model.loss_function(logits=logits[b:b + 1], labels=labels[b:b + 1],
                                                   vocab_size=model.config.text_config.vocab_size))
                         for b in range(B)], np.float32)


def hf_generate(model, images, tokens, input_mask, n_img, steps):
    """Greedy generate from our right-padded prefix batch, converted to HF's left padding.

    Returns (greedy_tokens i32[B, steps] with -1 after EOS, per-step logits f32[B, steps, V]).
    """
    import torch

    B, T = tokens.shape
    lengths = input_mask.sum(1)
    L = n_img + T
    ids = np.full((B, L), PAD, np.int64)
    attn = np.zeros((B, L), np.int64)
    for b in range(B):
        n = n_img + lengths[b]
        ids[b, L - n:L - lengths[b]] = IMAGE_TOKEN
        ids[b, L - lengths[b]:] = tokens[b, :lengths[b]]
        attn[b, L - n:] = 1
    tt = np.zeros((B, L), np.int64)  # image + prefix are block 0; generated tokens get 1
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.from_numpy(ids),
            pixel_values=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
            attention_mask=torch.from_numpy(attn), token_type_ids=torch.from_numpy(tt),
            max_new_tokens=steps, min_new_tokens=0, do_sample=False, num_beams=1,
            eos_token_id=EOS, pad_token_id=PAD, output_logits=True, return_dict_in_generate=True,
            temperature=None, top_p=None, top_k=None, repetition_penalty=None)
    new = out.sequences[:, L:].numpy().astype(np.int32)
    logits = torch.stack(out.logits, dim=1).numpy().astype(np.float32)
    if new.shape[1] < steps:  # every example emitted EOS: generate stops early
        pad = steps - new.shape[1]
        new = np.pad(new, ((0, 0), (0, pad)), constant_values=PAD)
        logits = np.pad(logits, ((0, 0), (0, pad), (0, 0)), constant_values=np.nan)
    greedy = new.copy()
    for b in range(B):
        hit = np.flatnonzero(new[b] == EOS)
        if hit.size:
            greedy[b, hit[0] + 1:] = -1
    return greedy, logits


# ---------------------------------------------------------------------------------------------
# Self-checks (transformers against itself): the reference must be internally consistent.


def check_decode_against_forward(model, images, tokens, input_mask, greedy, dlogits, n_img, tol):
    """Each cached decode step's logits == a fresh full forward over [image, prefix, generated]."""
    for b in range(tokens.shape[0]):
        prefix = tokens[b, :input_mask[b].sum()]
        for s in range(greedy.shape[1]):
            if s > 0 and greedy[b, s - 1] in (EOS, -1):
                break
            gen = greedy[b, :s]
            row = np.concatenate([prefix, gen]).astype(np.int32)[None]
            ar = np.concatenate([np.zeros(len(prefix)), np.ones(len(gen))]).astype(np.int32)[None]
            logits, _ = hf_forward(model, images[b:b + 1], row, np.ones_like(row, bool), ar, n_img)
            ref = logits[0, -1].numpy()
            err = np.abs(ref - dlogits[b, s]).max() / np.abs(ref).max()
            if err > tol:
                raise RuntimeError(f"decode step {s} of example {b}: cached logits differ from a "
                                   f"full forward by {err:.2e} of max")


def top2_margin(dlogits, greedy):
    srt = np.sort(dlogits, axis=-1)
    margin = (srt[..., -1] - srt[..., -2]).astype(np.float32)
    return np.where(greedy >= 0, margin, np.float32(np.nan))


# ---------------------------------------------------------------------------------------------


def make_case(name: str, spec: dict, out_root: Path, tok_mod, model_bytes: bytes, sp) -> None:
    import torch
    import transformers

    from transformers import PaliGemmaForConditionalGeneration

    built = build_model(spec)
    n_img = (spec["image_size"] // 14) ** 2
    case_dir = out_root / name
    if case_dir.exists():
        shutil.rmtree(case_dir)
    ckpt = case_dir / "checkpoint"
    ckpt.mkdir(parents=True)
    built.save_pretrained(ckpt)
    (ckpt / "generation_config.json").unlink(missing_ok=True)
    write_tokenizer(ckpt, tok_mod, model_bytes)
    # Every output comes from the saved directory, read back the way a user would load it.
    model = PaliGemmaForConditionalGeneration.from_pretrained(
        ckpt, attn_implementation="eager", dtype=torch.float32).eval()
    for key, value in built.state_dict().items():
        if not torch.equal(model.state_dict()[key], value):
            raise RuntimeError(f"{ckpt}: {key} changed in the save/load round trip")
    del built
    cfg = model.config

    rng = np.random.default_rng(spec["seed"])
    S = spec["image_size"]
    # Smooth-ish images in [-1, 1]: a random low-resolution grid upsampled by repetition.
    def images(n):
        low = rng.uniform(-1.0, 1.0, size=(n, S // 7, S // 7, 3)).astype(np.float32)
        return np.repeat(np.repeat(low, 7, axis=1), 7, axis=2)

    # Main batch: prefix + suffix, right-padded.
    rows = [encode_example(sp, p, s) for p, s in spec["examples"]]
    n_pre = [len(encode_example(sp, p, None)) for p, _ in spec["examples"]]
    tokens, input_mask, mask_ar = right_padded(rows, n_pre)
    mask_loss = ((mask_ar == 1) & input_mask).astype(np.int32)
    imgs = images(len(rows))
    logits_t, zimg_t = hf_forward(model, imgs, tokens, input_mask, mask_ar, n_img)
    loss = hf_per_example_loss(model, logits_t, tokens, input_mask, mask_ar, n_img)
    logits = logits_t.numpy().astype(np.float32)
    zimg = zimg_t.numpy().astype(np.float32)

    # Independent loss from the stored logits (float64), to pin what "loss" means.
    lp = logits[:, n_img:-1].astype(np.float64)
    lp = lp - lp.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    tgt = np.take_along_axis(lp, tokens[:, 1:, None].astype(np.int64), -1)[..., 0]
    w = mask_loss[:, 1:]
    loss64 = -(tgt * w).sum(1) / w.sum(1)
    assert np.allclose(loss64, loss, rtol=2e-6, atol=0), (loss64, loss)

    extras = {}
    if spec["family"] == "gemma2":
        # Same checkpoint and inputs with the window switched off: big_vision's semantics.
        saved = cfg.text_config.sliding_window
        cfg.text_config.sliding_window = 10_000
        for layer in model.model.language_model.layers:
            if layer.self_attn.sliding_window is not None:
                layer.self_attn.sliding_window = 10_000
        full, _ = hf_forward(model, imgs, tokens, input_mask, mask_ar, n_img)
        cfg.text_config.sliding_window = saved
        for layer in model.model.language_model.layers:
            if layer.self_attn.sliding_window is not None:
                layer.self_attn.sliding_window = saved
        extras["logits_no_window"] = full.numpy().astype(np.float32)
        again, _ = hf_forward(model, imgs, tokens, input_mask, mask_ar, n_img)
        assert np.array_equal(again.numpy(), logits), "restoring the window did not restore logits"
        valid = np.concatenate([np.ones((len(rows), n_img), bool), input_mask], 1)
        diff = np.abs(extras["logits_no_window"] - logits).max(-1)[valid]
        assert diff.max() > 1e-2, f"the sliding window changes nothing here (max {diff.max()})"

    # Decode batch: prefix only, right-padded in our layout.
    drows = [encode_example(sp, p, None) for p in spec["decode_prefixes"]]
    dtok, dmask, dar = right_padded(drows, [len(r) for r in drows])
    dimgs = images(len(drows))
    greedy, dlogits = hf_generate(model, dimgs, dtok, dmask, n_img, DECODE_STEPS)
    margin = top2_margin(dlogits, greedy)
    tol = 2e-5
    check_decode_against_forward(model, dimgs, dtok, dmask, greedy, dlogits, n_img, tol / 4)
    for b in range(len(drows)):  # batch-vs-single: HF itself must agree without padding
        single, _ = hf_generate(model, dimgs[b:b + 1], dtok[b:b + 1, :dmask[b].sum()],
                                dmask[b:b + 1, :dmask[b].sum()], n_img, DECODE_STEPS)
        if not np.array_equal(single[0], greedy[b]):
            raise RuntimeError(f"{name}: HF batched and single decode differ for example {b}")
    if np.nanmin(margin) < 1e-2:
        raise RuntimeError(f"{name}: a greedy step has top-2 margin {np.nanmin(margin):.2e}")

    write_npz(case_dir / "inputs.npz", {
        "images": imgs, "tokens": tokens, "input_mask": input_mask, "mask_ar": mask_ar,
        "mask_loss": mask_loss,
        "decode_images": dimgs, "decode_tokens": dtok, "decode_input_mask": dmask,
        "decode_mask_ar": dar,
    })
    write_npz(case_dir / "outputs.npz", {
        "zimg": zimg, "logits": logits, "loss": loss, "greedy_tokens": greedy,
        "decode_logits": dlogits, "decode_top2_margin": margin, **extras,
    })

    text = cfg.text_config
    # Only switches pgbench's loader knows (FORMAT.md options); HF facts go to "hf_semantics".
    if spec["family"] == "gemma2":
        options = {"sliding_window": spec["sliding_window"], "apply_sliding_window": True,
                   "query_pre_attn_norm": "rsqrt_head_dim", "attn_logits_softcap": 50.0,
                   "final_logits_softcap": 30.0}
    else:
        options = {"sliding_window": None, "apply_sliding_window": False}
    hf_semantics = {
        "final_logits_softcap_applies_to": "every logit (forward, loss, generate)"
        if spec["family"] == "gemma2" else "none (Gemma 1 has no soft-cap)",
        "sliding_window_layers": [i for i, t in enumerate(getattr(text, "layer_types", None) or [])
                                  if t == "sliding_attention"],
        "sliding_window_rule": "on sliding layers query q attends key k iff attention_mask[k] and "
                               "((k <= q and q - k < window) or (token_type[q] == token_type[k] == 0))",
        "image_token_id": IMAGE_TOKEN,
        "image_placeholders_per_image": n_img,
        "positions": "1-based: position_ids = arange + 1 (forward); cumsum(attention_mask) "
                     "(generate, left padding)",
        "zimg_scaling": "none: image_hidden_states is the projector output, placed into the "
                        "sequence unscaled; only token embeddings are multiplied by sqrt(width)",
        "token_type_ids": "0 on image and prefix tokens, 1 on suffix tokens, padding and "
                          "generated tokens",
        "attn_implementation": "eager",
    }
    n_eos = int((greedy == EOS).sum())
    header = {
        "format_version": 1,
        "kind": "paligemma",
        "producer": {"name": "transformers", "version_or_commit": transformers.__version__},
        "checkpoint": {"format": "hf", "path": "checkpoint", "llm_family": spec["family"],
                       "options": options},
        "tolerance": {"relative_to_max_abs": tol},
        "compare": ["zimg", "logits", "greedy_tokens"],
        "notes": (
            f"Tiny random PaliGemma ({spec['family']}) built with transformers "
            f"{transformers.__version__}, float32, eager attention, CPU. logits = "
            "PaliGemmaForConditionalGeneration forward with token_type_ids and attention_mask "
            "(final soft-cap applied to every logit when the config has one); zimg = "
            "image_hidden_states (projector output, no scaling). greedy_tokens from "
            f"model.generate (greedy, {DECODE_STEPS} new tokens, EOS kept, -1 after) on the "
            "decode_* batch, converted to left padding for transformers. See README.md."),
        "case": name,
        "seeds": {"torch.manual_seed": spec["seed"], "parameter_draws":
                  f"torch.Generator().manual_seed({spec['seed']}) over parameters sorted by name",
                  "inputs": f"numpy.random.default_rng({spec['seed']})"},
        "hf_semantics": hf_semantics,
        "decode": {"function": "transformers GenerationMixin.generate", "do_sample": False,
                   "num_beams": 1, "max_new_tokens": DECODE_STEPS, "eos_token": EOS,
                   "pad_token": PAD, "padding_side_for_transformers": "left",
                   "examples_that_emitted_eos": n_eos},
        "model_config": {
            "image_size": spec["image_size"], "patch_size": 14, "num_image_tokens": n_img,
            "vision": {"width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2},
            "llm": {"family": spec["family"], "width": text.hidden_size,
                    "depth": text.num_hidden_layers, "num_heads": text.num_attention_heads,
                    "num_kv_heads": text.num_key_value_heads, "head_dim": text.head_dim,
                    "mlp_dim": text.intermediate_size, "vocab_size": MODEL_VOCAB,
                    "tokenizer_vocab": TEXT_VOCAB},
        },
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "numpy": np.__version__,
                        "torch_threads": torch.get_num_threads()},
        "arrays": describe_arrays(case_dir),
    }
    write_json(case_dir / "case.json", header)


def describe_arrays(case_dir: Path) -> dict:
    out = {}
    for f in ("inputs.npz", "outputs.npz"):
        with np.load(case_dir / f) as z:
            out[f] = {k: {"dtype": str(z[k].dtype), "shape": list(z[k].shape)} for k in z.files}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="directory the case folders go in")
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases")
    args = ap.parse_args(argv)

    import sentencepiece as spm
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tok_mod = load_tokenizer_module()
    model_bytes = tok_mod.train_model()
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    if sp.get_piece_size() != TEXT_VOCAB or sp.piece_to_id("\n") != SEP:
        sys.exit(f"{TOKENIZER_SCRIPT}: tokenizer layout changed (vocab {sp.get_piece_size()})")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.case or sorted(CASES):
        make_case(name, CASES[name], args.out, tok_mod, model_bytes, sp)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
