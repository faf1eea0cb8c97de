"""Prefill benchmark on the CPU: PaliGemma forward over [image, text], last-position logits.

Every measurement runs in its own process (a 3B float32 model is 12 GB; two at once would
not fit in 24 GB): the matmul-rate probe, pgbench float32, pgbench bfloat16 and, when the
[reference] extra is installed, transformers float32 on the very same weights. Weights are
drawn per parameter from seeded numpy streams (``random_weights``); transformers reads them
from a Hugging Face directory written by pgbench's own writer.

    python -m benchmarks.forward_cpu                   # full size: pg1-3b-224, batch 1, 10 text tokens
    python -m benchmarks.forward_cpu --preset pg1-tiny --repeats 2   # seconds, for CI smoke runs
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
from benchmarks.common import have_transformers, spawn, time_calls, write_results
from benchmarks.flops import prefill_flops

RESULTS = Path(__file__).resolve().parent / "results"


def _inputs(cfg, n_text: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size
    images = rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    tokens = np.asarray([[2, *rng.integers(3, min(cfg.llm.vocab_size, 256000), n_text - 2), 108]], np.int32)
    return images, tokens


def role_matmul(args) -> dict:
    """The float32 (and bfloat16) matmul rate of this machine, as jax and torch see it."""
    import jax
    import jax.numpy as jnp

    m, k, n = 266, 2048, 16384  # a Gemma-2B MLP projection over a 224px prompt
    a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k), np.float32))
    b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n), np.float32))
    flops = 2 * m * k * n
    res = {}
    for name, dt in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
        x, y = a.astype(dt), b.astype(dt)
        t = min(time_calls(lambda: f(x, y).block_until_ready(), 10))
        res[f"jax_{name}_gflops"] = flops / t / 1e9
    try:
        import torch

        ta, tb = torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b))
        for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            x, y = ta.to(dt), tb.to(dt)
            t = min(time_calls(lambda: x @ y, 10))
            res[f"torch_{name}_gflops"] = flops / t / 1e9
    except ImportError:
        pass
    return res


def role_pgbench(args) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks.random_weights import LazyRandomFlat
    from pgbench import decode
    from pgbench.config import get_preset
    from pgbench.model.params import from_bigvision_params

    cfg = get_preset(args.preset)
    dtype = jnp.dtype(args.dtype)
    t0 = time.perf_counter()
    model = from_bigvision_params(LazyRandomFlat(cfg, args.seed), cfg, dtype=dtype, consume=True, stacked=False)
    build_s = time.perf_counter() - t0
    images, tokens = _inputs(cfg, args.text_tokens)
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
    from benchmarks.random_weights import LazyRandomFlat
    from pgbench.checkpoints.hf import write_hf_dir
    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    t0 = time.perf_counter()
    write_hf_dir(LazyRandomFlat(cfg, args.seed), cfg, args.hf_dir)
    return {"write_s": time.perf_counter() - t0}


def role_transformers(args) -> dict:
    import torch
    import transformers

    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    t0 = time.perf_counter()
    hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        args.hf_dir, dtype=torch.float32).eval()
    build_s = time.perf_counter() - t0
    images, tokens = _inputs(cfg, args.text_tokens)
    n_img = cfg.num_image_tokens
    ids = torch.from_numpy(np.concatenate([np.full((1, n_img), hf.config.image_token_id), tokens], 1))
    kw = dict(input_ids=ids, pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
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


def _spawn(role: str, args, **extra) -> dict:
    return spawn("benchmarks.forward_cpu", role, preset=args.preset, text_tokens=args.text_tokens,
                 repeats=args.repeats, seed=args.seed, **extra)


def run(args) -> dict:
    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    flops = prefill_flops(cfg, args.text_tokens, logits_positions=1)
    res = {"benchmark": "prefill forward, last-position logits", "preset": args.preset,
           "batch": 1, "image_tokens": cfg.num_image_tokens, "text_tokens": args.text_tokens,
           "flops": flops, "machine": machine.describe(), "matmul": _spawn("matmul", args)}
    res["pgbench_float32"] = _spawn("pgbench", args, dtype="float32")
    res["pgbench_bfloat16"] = _spawn("pgbench", args, dtype="bfloat16")
    if have_transformers():
        with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
            res["write_hf"] = _spawn("write_hf", args, hf_dir=tmp)
            res["transformers_float32"] = _spawn("transformers", args, hf_dir=tmp)
    else:
        res["transformers_float32"] = {"error": "transformers not installed (make install-reference)"}
    # the machine's float32 matmul rate: the better of what jax and torch reach on one GEMM
    probes = [res["matmul"].get(k) for k in ("jax_float32_gflops", "torch_float32_gflops")]
    rate = max((p for p in probes if p), default=None)
    res["f32_matmul_rate_gflops"] = rate
    for key in ("pgbench_float32", "pgbench_bfloat16", "transformers_float32"):
        r = res[key]
        if "times_s" in r:
            r["median_s"] = float(np.median(r["times_s"]))
            r["gflops"] = flops / r["median_s"] / 1e9
            if rate:
                r["fraction_of_f32_matmul_rate"] = r["gflops"] / rate
    tf = res["transformers_float32"].get("median_s")
    for key in ("pgbench_float32", "pgbench_bfloat16"):
        if tf and "median_s" in res[key]:
            res[key]["speedup_vs_transformers_f32"] = tf / res[key]["median_s"]
    return res


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Prefill forward on the CPU: {res['preset']}, batch 1, {res['image_tokens']} image + "
             f"{res['text_tokens']} text tokens, last-position logits", "",
             f"Machine: {m['cpu']} ({m['cores']} cores), {m['memory_gib']} GiB; jax {m['jax']}, "
             f"numpy {m['numpy']}; date {m['date']}. FLOPs counted analytically: "
             f"{res['flops'] / 1e12:.3f} TFLOP per forward.", "",
             "Matmul rate probe (266x2048 @ 2048x16384): " + ", ".join(
                 f"{k.replace('_gflops', '')} {v:.0f} GFLOP/s" for k, v in res["matmul"].items()
                 if k.endswith("gflops")), "",
             "| implementation | median s | GFLOP/s | of the f32 matmul rate (best probe) | speed-up vs transformers f32 |",
             "|---|---|---|---|---|"]
    for key in ("pgbench_float32", "pgbench_bfloat16", "transformers_float32"):
        r = res[key]
        if "median_s" not in r:
            lines.append(f"| {key} | — | — | — | {r.get('error', '')} |")
            continue
        speedup = r.get("speedup_vs_transformers_f32")
        lines.append(f"| {key} | {r['median_s']:.2f} | {r['gflops']:.0f} | "
                     f"{r.get('fraction_of_f32_matmul_rate', float('nan')):.0%} | "
                     + (f"{speedup:.2f}x |" if speedup else "— |"))
    lines += ["", "Reproduce: `make bench` (or `python -m benchmarks.forward_cpu`)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=sorted(ROLES))
    ap.add_argument("--preset", default="pg1-3b-224")
    ap.add_argument("--text-tokens", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--hf-dir")
    ap.add_argument("--tmp-dir", default=os.environ.get("PGBENCH_BENCH_TMP"))
    ap.add_argument("--out", default=None, help="results file stem (default benchmarks/results/forward_cpu_<preset>)")
    args = ap.parse_args(argv)
    if args.role:
        print(json.dumps(ROLES[args.role](args)))
        return 0
    res = run(args)
    write_results(Path(args.out) if args.out else RESULTS / f"forward_cpu_{args.preset}", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
