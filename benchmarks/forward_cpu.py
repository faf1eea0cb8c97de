"""Prefill benchmark on the CPU: PaliGemma forward over [image, text], last-position logits.

pgbench against transformers at the SAME dtype (float32 with float32, bfloat16 with
bfloat16), on the very same weights: drawn per parameter from seeded numpy streams
(``pgbench.checkpoints.random_params``); transformers reads them from a Hugging Face directory written by
pgbench's own writer. Every measurement runs in its own process (a 3B float32 model is
12 GB; two at once would not fit in 24 GB), and the two sides alternate: for each dtype,
`--rounds` rounds of (pgbench, transformers), each process timing `--repeats` forwards after
one warm-up. The results give the median, min, max and spread over all repeats of a side,
and the load average before and after every process, so a noisy machine shows.

    python -m benchmarks.forward_cpu                   # full size: pg1-3b-224, batch 1, 10 text tokens
    python -m benchmarks.forward_cpu --preset pg1-tiny --rounds 1 --repeats 1 --out DIR/fwd   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.common import (interleaved, load_average, peer_missing, random_prompt, spawn, summarize, time_calls,
                               torch_skip_note, write_results)
from benchmarks.flops import prefill_flops

RESULTS = Path(__file__).resolve().parent / "results"


def role_matmul(args) -> dict:
    """The matmul rate of this machine at the compared dtypes (``--dtype``: comma-separated),
    as jax and torch see it. Only those: on a CPU without bfloat16 instructions torch's
    bfloat16 product falls back to a slow path, minutes per probe, and is skipped (the reason
    is recorded as ``torch_<dtype>_note``; ``common.torch_skip_note``)."""
    import jax
    import jax.numpy as jnp

    m, k, n = 266, 2048, 16384  # a Gemma-2B MLP projection over a 224px prompt
    a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k), np.float32))
    b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n), np.float32))
    flops = 2 * m * k * n
    res = {}
    wanted = args.dtype.split(",")
    for name, dt in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        if name not in wanted:
            continue
        f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
        x, y = a.astype(dt), b.astype(dt)
        t = min(time_calls(lambda: f(x, y).block_until_ready(), 10))
        res[f"jax_{name}_gflops"] = flops / t / 1e9
    try:
        import torch

        ta, tb = torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b))
        for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            if name not in wanted:
                continue
            note = torch_skip_note(name, 11 * flops)  # a warm-up and 10 timed products
            if note:
                res[f"torch_{name}_note"] = note
                continue
            x, y = ta.to(dt), tb.to(dt)
            t = min(time_calls(lambda: x @ y, 10))
            res[f"torch_{name}_gflops"] = flops / t / 1e9
    except ImportError:
        pass
    return res


def role_pgbench(args) -> dict:
    import jax
    import jax.numpy as jnp

    from pgbench.checkpoints.random_params import RandomParams
    from pgbench import decode
    from pgbench.config import get_preset
    from pgbench.checkpoints.bigvision_layout import from_bigvision_params

    cfg = get_preset(args.preset)
    dtype = jnp.dtype(args.dtype)
    t0 = time.perf_counter()
    model = from_bigvision_params(RandomParams(cfg, args.seed), cfg, dtype=dtype, stacked=False)
    build_s = time.perf_counter() - t0
    images, tokens = random_prompt(cfg, args.batch, args.text_tokens)
    images, tokens = jnp.asarray(images), jnp.asarray(tokens)
    mask, ar = jnp.ones_like(tokens, bool), jnp.zeros_like(tokens)

    @jax.jit
    def last_logits(model, images, tokens):
        return decode.prefill(model, images, tokens, mask, ar, max_new_tokens=0).logits

    t0 = time.perf_counter()
    last_logits(model, images, tokens).block_until_ready()
    compile_s = time.perf_counter() - t0
    times = time_calls(lambda: last_logits(model, images, tokens).block_until_ready(), args.repeats)
    logits = np.asarray(last_logits(model, images, tokens))
    return {"build_s": build_s, "compile_and_first_s": compile_s, "times_s": times,
            "logits_head": logits[0, :8].tolist()}


def role_write_hf(args) -> dict:
    from pgbench.checkpoints.random_params import RandomParams
    from pgbench.checkpoints import write_hf_dir
    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    t0 = time.perf_counter()
    write_hf_dir(RandomParams(cfg, args.seed), cfg, args.hf_dir)
    return {"write_s": time.perf_counter() - t0}


def role_transformers(args) -> dict:
    import torch
    import transformers

    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    t0 = time.perf_counter()
    hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(args.hf_dir, dtype=dtype).eval()
    build_s = time.perf_counter() - t0
    images, tokens = random_prompt(cfg, args.batch, args.text_tokens)
    n_img = cfg.num_image_tokens
    ids = torch.from_numpy(np.concatenate([np.full((args.batch, n_img), hf.config.image_token_id), tokens], 1))
    kw = dict(input_ids=ids, pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(dtype),
              token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids), logits_to_keep=1)

    def run():
        with torch.inference_mode():
            return hf(**kw).logits

    times = time_calls(run, args.repeats)
    logits = run()[0, -1, :8].float().numpy()
    return {"build_s": build_s, "times_s": times, "logits_head": logits.tolist(),
            "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
            "torch": torch.__version__}


ROLES = {"matmul": role_matmul, "pgbench": role_pgbench, "write_hf": role_write_hf,
         "transformers": role_transformers}


def _flags(args, **extra) -> dict:
    return dict(preset=args.preset, text_tokens=args.text_tokens, batch=args.batch, repeats=args.repeats,
                seed=args.seed, **extra)


def run(args) -> dict:
    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    flops = prefill_flops(cfg, args.text_tokens, batch=args.batch, logits_positions=1)
    res = {"benchmark": "prefill forward, last-position logits", "preset": args.preset,
           "batch": args.batch, "image_tokens": cfg.num_image_tokens, "text_tokens": args.text_tokens,
           "flops": flops, "rounds": args.rounds, "repeats_per_round": args.repeats,
           "machine": machine.describe(), "load_before": load_average(),
           "matmul": spawn("benchmarks.forward_cpu", "matmul", **_flags(args, dtype=",".join(args.dtypes))), "dtypes": {}}
    missing = {dtype: peer_missing(dtype, flops * args.rounds * (args.repeats + 1)) for dtype in args.dtypes}
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="pgbench-forward-") as tmp:
        if not all(missing.values()):  # no copy of the weights for a side that will not run
            res["write_hf"] = spawn("benchmarks.forward_cpu", "write_hf", **_flags(args, hf_dir=tmp))
        for dtype in args.dtypes:
            sides = {"pgbench": _flags(args, role="pgbench", dtype=dtype)}
            if not missing[dtype]:
                sides["transformers"] = _flags(args, role="transformers", dtype=dtype, hf_dir=tmp)
            rounds = interleaved("benchmarks.forward_cpu", sides, args.rounds)
            entry = {"raw_rounds": rounds}
            for side, rs in rounds.items():
                times = [t for r in rs for t in r.get("times_s", [])]
                entry[side] = summarize(times) or {"error": next((r["error"] for r in rs if "error" in r), "no runs")}
                if times:
                    entry[side]["gflops"] = flops / entry[side]["median_s"] / 1e9
            if missing[dtype]:
                entry["transformers"] = {"error": missing[dtype]}
            if "median_s" in entry["pgbench"] and "median_s" in entry["transformers"]:
                entry["speedup"] = entry["transformers"]["median_s"] / entry["pgbench"]["median_s"]
            res["dtypes"][dtype] = entry
    res["load_after"] = load_average()
    return res


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Prefill forward on the CPU: {res['preset']}, batch {res['batch']}, {res['image_tokens']} image + "
             f"{res['text_tokens']} text tokens, last-position logits", "",
             machine.header(m, res) + " "
             f"FLOPs counted analytically: {res['flops'] / 1e12:.3f} TFLOP per forward.", "",
             "Matmul rate probe (266x2048 @ 2048x16384): " + ", ".join(
                 f"{k.replace('_gflops', '')} {v:.0f} GFLOP/s" for k, v in res["matmul"].items()
                 if k.endswith("gflops"))
             + "".join(f"; {k.replace('_note', '')} {v}" for k, v in res["matmul"].items() if k.endswith("_note")), "",
             f"Each side: {res['rounds']} interleaved rounds (one process each, pgbench then transformers) x "
             f"{res['repeats_per_round']} timed forwards; seconds over all of them.", "",
             "| dtype (both sides) | side | median s | min s | max s | spread | GFLOP/s | speed-up (transformers s / pgbench s) |",
             "|---|---|---|---|---|---|---|---|"]
    for dtype, e in res["dtypes"].items():
        for side in ("pgbench", "transformers"):
            r = e[side]
            if "median_s" not in r:
                lines.append(f"| {dtype} | {side} | — | — | — | — | — | {r.get('error', '')} |")
                continue
            sp = f"{e['speedup']:.2f}x" if side == "pgbench" and "speedup" in e else ""
            lines.append(f"| {dtype} | {side} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
                         f"{r['spread']:.0%} | {r['gflops']:.0f} | {sp} |")
    per_process = sorted(((dtype, r["round"], side, r["load_before"][:1], r["load_after"][:1])
                          for dtype, e in res["dtypes"].items() for side, rs in e["raw_rounds"].items() for r in rs),
                         key=lambda x: (list(res["dtypes"]).index(x[0]), x[1], x[2] != "pgbench"))
    lines += ["", "Load average (1 min) before -> after each process, in the order they ran: " + "; ".join(
        f"{d} round {k} {s} {b}->{a}" for d, k, s, b, a in per_process), "",
        "Reproduce: `python -m benchmarks.forward_cpu` (see its docstring)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=sorted(ROLES))
    ap.add_argument("--preset", default="pg1-3b-224")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--text-tokens", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds, one process per side each")
    ap.add_argument("--repeats", type=int, default=2, help="timed forwards per process (after one warm-up)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", help="(one role's dtype)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--hf-dir")
    ap.add_argument("--tmp-dir", default=os.environ.get("PGBENCH_BENCH_TMP"))
    ap.add_argument("--out", default=None,
                    help="results file stem (default benchmarks/results/forward_cpu_<preset>[_b<batch>])")
    args = ap.parse_args(argv)
    if args.role:
        print(json.dumps(ROLES[args.role](args)))
        return 0
    res = run(args)
    stem = f"forward_cpu_{args.preset}" + (f"_b{args.batch}" if args.batch != 1 else "")
    write_results(Path(args.out) if args.out else RESULTS / stem, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
