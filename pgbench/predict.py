"""``pgbench predict``: decode answers for one prompt over a set of images.

    pgbench predict --checkpoint CKPT --image a.jpg b.png photos/ --prompt "caption en"

For every image it prints the decoded text and writes one line to ``OUT/predictions.jsonl``.
For ``detect …`` / ``segment …`` prompts it also parses the boxes (and, with ``--vae``, the
masks), prints them and writes ``OUT/<image stem>.png`` with them drawn over the original
image. See docs/predict.md.

Batching (``pgbench.evaluation.generate``, shared with ``pgbench eval``): images are decoded
``--batch-size`` at a time; the last batch is padded with copies of its first image (their
outputs dropped), and the prompt is padded to a multiple of :data:`PROMPT_BUCKET` tokens, so
the decode loop compiles once per run.

Bad images are skipped: each one gets one warning line naming the file and the reason, and
the run continues. Exit status: 0 when every image got a prediction, 1 when some files were
skipped (the others are still predicted and written), 2 for bad input that stops the run
(missing checkpoint/tokenizer, prompt over the text budget, no readable image at all).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import logging
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pgbench import data
from pgbench.errors import CheckpointError, ImageError, InputError
from pgbench.evaluation import resolve_tokenizer_path  # noqa: F401  (the CLI's default)
from pgbench.model.quantize import WEIGHT_CHOICES, WEIGHTS_HELP

log = logging.getLogger(__name__)

PROMPT_BUCKET = data.PROMPT_BUCKET  # prompt lengths are padded to a multiple of this
DEFAULT_MAX_PROMPT_LEN = 256
STRUCTURED_TASKS = ("detect", "segment")


# --------------------------------------------------------------------------------------
# Command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="big_vision .npz file or Hugging Face PaliGemma directory")
    p.add_argument("--image", required=True, nargs="+", metavar="IMG",
                   help="image files and/or folders (the image files directly inside)")
    p.add_argument("--prompt", required=True, help='task prompt, e.g. "caption en", "detect cat"')
    p.add_argument("--tokenizer", metavar="PATH",
                   help="tokenizer.model / tokenizer.json (default: the one inside an HF "
                        "checkpoint directory; required for a .npz checkpoint)")
    p.add_argument("--family", choices=["gemma1", "gemma2"],
                   help="LLM family of a .npz checkpoint (default: inferred from its keys)")
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N", help="tokens to generate (default 32)")
    p.add_argument("--max-prompt-len", type=int, default=DEFAULT_MAX_PROMPT_LEN, metavar="N",
                   help="text budget of the prompt in tokens, [BOS] prompt [SEP] included "
                        f"(default {DEFAULT_MAX_PROMPT_LEN}); a longer prompt is an error")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per decode batch (default 8)")
    p.add_argument("--sampler", choices=["greedy", "sample"], default="greedy")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k best tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0: off)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for --sampler sample")
    p.add_argument("--resize", choices=["bigvision", "hf"], default="bigvision",
                   help="image resize: big_vision's bilinear (default) or HF's bicubic")
    p.add_argument("--vae", metavar="PATH",
                   help="vae-oid.npz, to turn `segment` outputs into masks (else boxes only)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default runs/predict-<UTC timestamp>)")
    p.add_argument("--attention", choices=["xla", "pallas"], default="xla",
                   help="attention implementation")
    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="float", help=WEIGHTS_HELP)


def _check_args(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_prompt_len < 2:
        raise InputError(f"--max-prompt-len must be >= 2, got {args.max_prompt_len}")
    if args.sampler == "sample":
        if args.temperature <= 0:
            raise InputError(f"--temperature must be > 0, got {args.temperature}")
        if not 0.0 < args.top_p <= 1.0:
            raise InputError(f"--top-p must be in (0, 1], got {args.top_p}")
        if args.top_k < 0:
            raise InputError(f"--top-k must be >= 0, got {args.top_k}")
    if not args.prompt.strip():
        raise InputError("--prompt is empty")


def task_of(prompt: str) -> str | None:
    """"detect" / "segment" for structured-output prompts, else None."""
    head = prompt.strip().split(maxsplit=1)
    word = head[0].lower() if head else ""
    return word if word in STRUCTURED_TASKS else None


def parse_output(text: str, task: str | None, image_hw: tuple[int, int], vae=None):
    """The structured reading of a decoded answer: None for plain-text tasks, else a
    ``structured.ParseResult`` (boxes in pixels of an ``image_hw`` image; for ``segment``
    with a VQ-VAE, ``masks`` bool[N, H, W]). Malformed objects are counted, never raised."""
    from pgbench import structured

    if task == "detect":
        return structured.parse_detections(text, image_hw=image_hw)
    if task == "segment":
        result = structured.parse_segmentations(text, image_hw=image_hw)
        if vae is not None:
            from pgbench.segmentation import attach_masks

            attach_masks(result, vae)
        return result
    return None


# --------------------------------------------------------------------------------------
# Prediction


@dataclasses.dataclass
class Prediction:
    """One image's answer. ``parsed`` is set for detect/segment prompts (boxes in pixels of
    the original image, ``masks`` when a VAE was given)."""

    image: Path
    prompt: str
    text: str
    tokens: np.ndarray  # i32[K], -1 after EOS
    image_hw: tuple[int, int]
    parsed: object | None = None  # pgbench.structured.ParseResult
    original: np.ndarray | None = dataclasses.field(default=None, repr=False)  # u8[H, W, 3]

    def to_json(self) -> dict:
        row = {"image": str(self.image), "prompt": self.prompt, "text": self.text}
        if self.parsed is not None:
            r = self.parsed
            row["boxes"] = [[round(float(v), 2) for v in b] for b in r.boxes]
            row["labels"] = r.labels
            row["num_malformed"] = r.num_malformed
            if any(o.codes is not None for o in r.objects):
                row["codes"] = [list(o.codes) if o.codes is not None else None for o in r.objects]
            if r.masks is not None:
                row["mask_pixels"] = [int(m.sum()) for m in r.masks]
        return row


@dataclasses.dataclass
class Skipped:
    image: Path
    reason: str


_bucket = data.bucket


def encode_prompt(tok, prompt: str, *, max_prompt_len: int) -> dict[str, np.ndarray]:
    """``[BOS] prompt [SEP] [PAD]…`` padded to the prompt bucket: tokens/input_mask/mask_ar [T]."""
    from pgbench.batching import collate, encode_prefix

    ex = encode_prefix(tok, prompt, max_len=None)
    n = len(ex["tokens"])
    if n > max_prompt_len:
        raise InputError(
            f"prompt {prompt[:60]!r} needs {n} tokens ([BOS] prompt [SEP]) but the text budget "
            f"is --max-prompt-len {max_prompt_len}; shorten the prompt or raise the budget")
    return {k: v[0] for k, v in collate([ex], pad_to=_bucket(n, max_prompt_len),
                                        pad_id=tok.pad_id).items()}


def predict(model, cfg, tok, paths: Sequence[Path], prompt: str, *, batch_size: int = 8,
            max_new_tokens: int = 32, max_prompt_len: int = DEFAULT_MAX_PROMPT_LEN,
            sampler=None, seed: int = 0, resize: str = "bigvision", attn_impl: str = "xla",
            vae=None, keep_originals: bool = False, progress: bool = False
            ) -> Iterator[Prediction | Skipped]:
    """Yield a :class:`Prediction` (or :class:`Skipped` for an unreadable file) per path.

    Predictions come in input order; a skipped file is reported just before the batch it
    would have been in. Batches are padded to ``batch_size`` so one compiled decode serves
    every batch (``pgbench.evaluation.generate`` does the work).

    With ``keep_originals``, each prediction carries ``original`` (u8[H, W, 3]) for drawing.
    """
    from pgbench import evaluation, images
    from pgbench.task import Example

    encode_prompt(tok, prompt, max_prompt_len=max_prompt_len)  # one clear error, up front
    paths = [Path(p) for p in paths]
    examples = [Example(id=str(n), image=str(p), prefix=prompt) for n, p in enumerate(paths)]
    settings = evaluation.DecodeSettings(
        max_new_tokens=max_new_tokens, max_prompt_len=max_prompt_len, batch_size=batch_size,
        sampler=sampler, seed=seed, attn_impl=attn_impl, resize=resize)
    task = task_of(prompt)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="img", desc="predict", file=sys.stderr)
    try:
        for outputs in evaluation.generate(model, cfg, tok, examples, settings):
            for o in outputs:
                path = paths[o.index]
                if o.error is not None:
                    yield Skipped(path, o.error)
                    continue
                original = images.load_image(path)  # pixels of the file, for boxes / drawing
                hw = (int(original.shape[0]), int(original.shape[1]))
                pred = Prediction(image=path, prompt=prompt, text=o.text, tokens=o.tokens,
                                  image_hw=hw, parsed=parse_output(o.text, task, hw, vae))
                if keep_originals:
                    pred.original = original
                yield pred
            if bar is not None:
                bar.update(len(outputs))
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------------------
# Output


def _overlay_name(path: Path, used: set[str]) -> str:
    # "_overlay" keeps an --out equal to the input folder from overwriting the images.
    name, k = f"{path.stem}_overlay.png", 1
    while name in used:
        k += 1
        name = f"{path.stem}_overlay-{k}.png"
    used.add(name)
    return name


def _write_overlay(pred: Prediction, out_dir: Path, used: set[str]) -> Path:
    import PIL.Image

    from pgbench.overlay import draw_overlay

    r = pred.parsed
    image = PIL.Image.fromarray(pred.original, "RGB")
    masks = r.masks if r.masks is not None and len(r.masks) else None
    dest = out_dir / _overlay_name(pred.image, used)
    draw_overlay(image, r.boxes, r.labels, masks).save(dest)
    return dest


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _print_prediction(pred: Prediction, write) -> None:
    write(f"{pred.image}: {_one_line(pred.text)}")
    r = pred.parsed
    if r is None:
        return
    for box, label in zip(r.boxes, r.labels):
        x1, y1, x2, y2 = (float(v) for v in box)
        write(f"  {label or '(no label)'}: x1={x1:.1f} y1={y1:.1f} x2={x2:.1f} y2={y2:.1f}")
    if r.num_malformed:
        write(f"  ({r.num_malformed} malformed object(s) skipped)")


def default_out_dir() -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"predict-{stamp}"


def main(args: argparse.Namespace) -> int:
    """Run ``pgbench predict``; returns the exit status (see the module docstring)."""
    _check_args(args)
    from pgbench import decode, images
    from pgbench.checkpoints import load_checkpoint
    from pgbench.model.layer_forms import default_stacked
    from pgbench.model.quantize import quantize_decoder
    from pgbench.tokenizer import Tokenizer

    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: no such checkpoint file or directory")
    tok = Tokenizer(resolve_tokenizer_path(ckpt, args.tokenizer), require_locseg=False)
    task = task_of(args.prompt)
    if task and not tok.has_locseg:
        log.warning("%s: tokenizer has no <loc>/<seg> vocabulary; %s output cannot hold boxes",
                    tok.path, task)
    paths = images.collect_image_paths(args.image)
    vae = None
    if task == "segment":
        if args.vae:
            from pgbench.segmentation import load_vqvae

            vae = load_vqvae(args.vae, require_encoder=False)
        else:
            print("note: no --vae given: `segment` outputs are shown as boxes only (pass "
                  "--vae vae-oid.npz for masks)", file=sys.stderr)
    # Check the prompt before the (slow) checkpoint load.
    encode_prompt(tok, args.prompt, max_prompt_len=args.max_prompt_len)

    model, cfg = load_checkpoint(ckpt, family=args.family, stacked=default_stacked())
    model = quantize_decoder(model, args.weights)
    if tok.vocab_size > cfg.llm.vocab_size:
        log.warning("tokenizer %s has %d pieces, the model's vocabulary %d", tok.path,
                    tok.vocab_size, cfg.llm.vocab_size)
    sampler = (decode.Sampler() if args.sampler == "greedy" else
               decode.Sampler("sample", float(args.temperature), int(args.top_k), float(args.top_p)))

    out_dir = Path(args.out) if args.out else default_out_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
    progress = len(paths) > args.batch_size and sys.stderr.isatty()
    write = print
    if progress:
        from tqdm import tqdm

        write = tqdm.write

    skipped, done, used_names = [], 0, set()
    start = time.perf_counter()
    jsonl = out_dir / "predictions.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for item in predict(model, cfg, tok, paths, args.prompt, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens,
                            max_prompt_len=args.max_prompt_len, sampler=sampler, seed=args.seed,
                            resize=args.resize, attn_impl=args.attention, vae=vae,
                            keep_originals=task is not None, progress=progress):
            if isinstance(item, Skipped):
                skipped.append(item)
                print(f"warning: skipped {item.reason}", file=sys.stderr)
                continue
            row = item.to_json()
            if item.parsed is not None:
                row["overlay"] = _write_overlay(item, out_dir, used_names).name
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            _print_prediction(item, write)
            done += 1

    seconds = time.perf_counter() - start
    summary = f"{done} prediction(s) in {jsonl} ({seconds:.1f} s incl. compilation)"
    if skipped:
        summary += f"; skipped {len(skipped)} of {len(paths)} file(s) (not readable images)"
    print(summary, file=sys.stderr)
    if done == 0:
        raise ImageError(f"none of the {len(paths)} input file(s) is a readable image")
    return 1 if skipped else 0
