"""End-to-end evaluation on the CPU: `pgbench eval` against a typical transformers harness loop.

Both sides evaluate the same VQAv2-format split (`--examples` questions, written in the official
layout by `pgbench.synth.formats`, JPEG images of COCO-like sizes) with the same seeded random
weights (`pgbench.checkpoints.random_params`; transformers reads an HF directory pgbench wrote), the
same greedy decoding length and the same metric (the `vqav2` task's `score`).

- pgbench: `pgbench.evaluation.evaluate` into a fresh run directory (the model already in
  memory, as for the other side): reading the task files, the grain image pipeline,
  bucketed batches, decoding, post-processing, the predictions file, scoring.
- transformers: the loop most harnesses write: for each batch of `--batch-size` examples,
  PIL-open the images, `SiglipImageProcessor` them, tokenise `[image tokens][BOS] prompt \\n`
  (left padded), `generate(do_sample=False)`, decode the new tokens; then the same score.

Each side runs once to compile / warm up, then `--repeats` timed runs; per run the time inside
the model (pgbench: every `decode.decode` call to its result; transformers: every `generate`
call) is recorded, and the rest of the wall time is reported as "outside the model" (data
loading, tokenisation, post-processing, writing, scoring). One process per side and dtype.

    python -m benchmarks.eval_cpu                     # pg1-3b-224, float32 + bfloat16, 64 examples (long)
    python -m benchmarks.eval_cpu --quick             # pg1-tiny, 8 examples: seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import have_transformers, load_average, spawn, summarize, write_results

RESULTS = Path(__file__).resolve().parent / "results"
MODULE = "benchmarks.eval_cpu"
TINY_TOKENIZER = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny_tokenizer" / "tokenizer.model"
QUESTIONS = ["what is the man holding", "is there a dog in the picture", "what color is the bus",
             "how many people are there", "where is the cat sitting", "what sport is this",
             "is it raining", "what is on the table"]


def write_data(root: Path, n: int, seed: int = 0) -> None:
    """``n`` VQAv2 val2014 questions, two per image, images 480x640-ish JPEGs."""
    from pgbench.synth import formats

    rng = np.random.default_rng(seed)
    image_ids = [100 + k for k in range((n + 1) // 2)]
    images = {i: rng.integers(0, 256, (400 + 16 * (i % 7), 640, 3), np.uint8) for i in image_ids}
    records = [{"question_id": 5000 + q, "image_id": image_ids[q // 2],
                "question": QUESTIONS[q % len(QUESTIONS)], "answers": ["yes"] * 10,
                "answer_type": "yes/no"} for q in range(n)]
    formats.write_vqav2(root, "val2014", records, images)


class _ModelClock:
    """Wraps a function: blocks on its result and adds the call's wall time to ``seconds``."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *a, **kw):
        import jax

        t = time.perf_counter()
        out = jax.block_until_ready(self.fn(*a, **kw))
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def role_pgbench(args) -> dict:
    import jax.numpy as jnp

    from pgbench.checkpoints.random_params import RandomParams
    from pgbench import decode, evaluation
    from pgbench.config import get_preset
    from pgbench.model.layer_forms import default_stacked
    from pgbench.checkpoints.bigvision_layout import from_bigvision_params
    from pgbench.task import load_task
    from pgbench.tokenizer import Tokenizer

    logging.getLogger("pgbench.tokenizer").setLevel(logging.ERROR)  # random ids -> <unk>
    cfg = get_preset(args.preset)
    model = from_bigvision_params(RandomParams(cfg, args.seed), cfg, dtype=jnp.dtype(args.dtype),
                                  stacked=default_stacked())
    tok = Tokenizer(args.tokenizer, require_locseg=False)
    task = load_task("vqav2")
    settings = evaluation.DecodeSettings(max_new_tokens=args.max_new_tokens,
                                         batch_size=args.batch_size)
    clock = _ModelClock(decode.decode)
    decode.decode = clock
    runs = []
    with tempfile.TemporaryDirectory(prefix="pgbench-eval-bench-") as tmp:
        for r in range(args.repeats + 1):
            req = evaluation.EvalRequest(task=task, data=Path(args.data), split="val2014",
                                         checkpoint=Path(f"random-{args.preset}"),
                                         tokenizer=Path(args.tokenizer), run_dir=Path(tmp) / str(r),
                                         dtype=args.dtype, settings=settings)
            clock.seconds = 0.0
            t0 = time.perf_counter()
            res = evaluation.evaluate(req, loaded=(model, cfg, tok), log=lambda m: None)
            wall = time.perf_counter() - t0
            runs.append({"wall_s": wall, "model_s": clock.seconds, "num_examples": res["num_examples"],
                         "accuracy": res["metrics"]["accuracy"]})
    return {"warmup": runs[0], "runs": runs[1:]}


def role_write_hf(args) -> dict:
    from pgbench.checkpoints.random_params import RandomParams
    from pgbench.checkpoints import write_hf_dir
    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    t0 = time.perf_counter()
    write_hf_dir(RandomParams(cfg, args.seed), cfg, args.hf_dir)
    return {"write_s": time.perf_counter() - t0}


def role_transformers(args) -> dict:
    import PIL.Image
    import torch
    import transformers

    from pgbench.config import get_preset
    from pgbench.task import load_task
    from pgbench.tokenizer import Tokenizer

    logging.getLogger("pgbench.tokenizer").setLevel(logging.ERROR)
    cfg = get_preset(args.preset)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(args.hf_dir, dtype=dtype).eval()
    size = cfg.image_size
    processor = transformers.SiglipImageProcessor(size={"height": size, "width": size}, resample=3,
                                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    tok = Tokenizer(args.tokenizer, require_locseg=False)
    task = load_task("vqav2")
    image_token = hf.config.image_token_id

    def run_once() -> dict:
        model_s = 0.0
        t0 = time.perf_counter()
        examples = task.examples(Path(args.data), "val2014")
        preds = {}
        for s in range(0, len(examples), args.batch_size):
            batch = examples[s:s + args.batch_size]
            imgs = [PIL.Image.open(Path(args.data) / e.image).convert("RGB") for e in batch]
            pixels = processor(imgs, return_tensors="pt")["pixel_values"].to(dtype)
            seqs = [[image_token] * cfg.num_image_tokens + tok.encode(e.prefix, bos=True) + tok.encode("\n")
                    for e in batch]
            width = max(map(len, seqs))
            ids = torch.tensor([[tok.pad_id] * (width - len(q)) + q for q in seqs])
            mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in seqs])
            t = time.perf_counter()
            with torch.inference_mode():
                out = hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                                  token_type_ids=torch.zeros_like(ids), max_new_tokens=args.max_new_tokens,
                                  do_sample=False, pad_token_id=tok.pad_id)
            model_s += time.perf_counter() - t
            for e, row in zip(batch, out[:, width:].tolist()):
                preds[e.id] = task.postprocess(tok.decode(row))
        metrics = task.score(examples, preds, task.resolve_options())
        return {"wall_s": time.perf_counter() - t0, "model_s": model_s, "num_examples": len(examples),
                "accuracy": metrics["accuracy"]}

    runs = [run_once() for _ in range(args.repeats + 1)]
    return {"warmup": runs[0], "runs": runs[1:], "torch_threads": torch.get_num_threads()}


ROLES = {"pgbench": role_pgbench, "write_hf": role_write_hf, "transformers": role_transformers}


def _side(res: dict) -> dict:
    if "error" in res:
        return res
    runs = res["runs"]
    wall = summarize([r["wall_s"] for r in runs])
    model = summarize([r["model_s"] for r in runs])
    n = runs[0]["num_examples"]
    outside = [(r["wall_s"] - r["model_s"]) / r["wall_s"] for r in runs]
    return {"wall_s": wall, "model_s": model, "examples_per_s": n / wall["median_s"],
            "outside_model_fraction": float(np.median(outside)), "first_run_s": res["warmup"]["wall_s"],
            "accuracy": runs[-1]["accuracy"]}


def _markdown(res: dict) -> str:
    lines = [f"# pgbench eval vs transformers harness ({res['preset']}, {res['examples']} VQAv2 examples, "
             f"batch {res['batch_size']}, {res['max_new_tokens']} new tokens)", "",
             "| dtype | side | examples/s | wall s (median) | outside the model | first run s |",
             "|---|---|---|---|---|---|"]
    for dtype, sides in res["dtypes"].items():
        for name, s in sides.items():
            if "error" in s:
                lines.append(f"| {dtype} | {name} | error: {s['error']} | | | |")
                continue
            lines.append(f"| {dtype} | {name} | {s['examples_per_s']:.3f} | {s['wall_s']['median_s']:.2f} | "
                         f"{100 * s['outside_model_fraction']:.1f}% | {s['first_run_s']:.2f} |")
    if "best_speedup" in res:
        lines += ["", f"pgbench at its best dtype ({res['best']['pgbench']}) vs transformers at its best "
                      f"({res['best']['transformers']}): {res['best_speedup']:.2f}x examples/s"]
    lines += ["", f"load average before/after: {res['load_before']} / {res['load_after']}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=sorted(ROLES))
    ap.add_argument("--quick", action="store_true", help="pg1-tiny, 8 examples, float32, 4 new tokens")
    ap.add_argument("--preset", default="pg1-3b-224")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="default: the vqav2 task's decode length")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", default=str(TINY_TOKENIZER),
                    help="SentencePiece model for both sides (default: the tiny test tokenizer; "
                         "random weights make the text meaningless anyway)")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--hf-dir", help=argparse.SUPPRESS)
    ap.add_argument("--tmp-dir", default=None, help="where the HF directory and the data go")
    ap.add_argument("--out", default=None, help="results stem (default benchmarks/results/eval_cpu_<preset>)")
    args = ap.parse_args(argv)
    if args.role:
        print(json.dumps(ROLES[args.role](args)))
        return 0
    if args.quick:
        args.preset, args.dtypes, args.examples = "pg1-tiny", ["float32"], 8
        args.max_new_tokens = args.max_new_tokens or 4
        # A quick run proves the benchmark runs; its figures never replace the real ones.
        args.out = args.out or str(Path(tempfile.mkdtemp(prefix="pgbench-quick-eval-")) / "eval_cpu")
    if args.max_new_tokens is None:
        from pgbench.task import load_task

        args.max_new_tokens = load_task("vqav2").max_decode_len
    out = Path(args.out) if args.out else RESULTS / f"eval_cpu_{args.preset}"
    res = {"preset": args.preset, "examples": args.examples, "batch_size": args.batch_size,
           "max_new_tokens": args.max_new_tokens, "load_before": load_average(), "dtypes": {}}
    common = dict(preset=args.preset, seed=args.seed, tokenizer=args.tokenizer,
                  batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, repeats=args.repeats)
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="pgbench-evalbench-") as tmp:
        data = Path(tmp) / "vqav2"
        write_data(data, args.examples, args.seed)
        use_hf = have_transformers() and not args.no_transformers
        if use_hf:
            w = spawn(MODULE, "write_hf", preset=args.preset, seed=args.seed, hf_dir=Path(tmp) / "hf")
            use_hf = "error" not in w
            if not use_hf:
                print(f"[eval_cpu] transformers side skipped: {w['error']}", file=sys.stderr)
        for dtype in args.dtypes:
            sides = {"pgbench": _side(spawn(MODULE, "pgbench", dtype=dtype, data=data, **common))}
            if use_hf:
                sides["transformers"] = _side(spawn(MODULE, "transformers", dtype=dtype, data=data,
                                                    hf_dir=Path(tmp) / "hf", **common))
            res["dtypes"][dtype] = sides
    best = {}
    for name in ("pgbench", "transformers"):
        rates = {d: s[name]["examples_per_s"] for d, s in res["dtypes"].items()
                 if name in s and "examples_per_s" in s[name]}
        if rates:
            best[name] = max(rates, key=rates.get)
    if len(best) == 2:
        res["best"] = best
        res["best_speedup"] = (res["dtypes"][best["pgbench"]]["pgbench"]["examples_per_s"]
                               / res["dtypes"][best["transformers"]]["transformers"]["examples_per_s"])
    res["load_after"] = load_average()
    write_results(out, res, _markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
