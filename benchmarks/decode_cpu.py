"""Decode throughput on the CPU: pgbench's on-device loop vs transformers ``generate``.

Config "decode-mid" (stated here, float32): SigLIP width 384, depth 6, 6 heads, MLP 1536,
224 px / patch 14 (256 image tokens); Gemma-1-style decoder width 1024, depth 8, 8 query
heads, 1 KV head, head_dim 128, MLP 4096, vocabulary 257152 (the real one: the tied
output layer dominates per-token weight reads). Prompt: 10 text tokens; 32 new tokens,
greedy, EOS disabled so every row generates all 32; batch 1 and 8. Same weights in both
implementations (seeded per-parameter streams; transformers reads an HF directory that
pgbench wrote).

tokens/s counts generated tokens per second of the decode phase (generate time minus the
prefill time, each measured in the same process). The memory-bandwidth floor at batch 1 is
the time to read the decoder's weights once per token, (weight bytes) / (copy bandwidth).
Copy bandwidth is measured in the same run with a 1 GiB numpy copy and counted as STREAM
counts it: every byte is read once and written once, so 2 x 1 GiB moves per copy. (Counting
only the bytes copied would halve the bandwidth and put the "floor" above what both
implementations reach.)

    python -m benchmarks.decode_cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.common import have_transformers, spawn, time_calls, write_results
from benchmarks.flops import weight_bytes_per_token
from pgbench.config import GemmaConfig, PaliGemmaConfig, SigLIPConfig

RESULTS = Path(__file__).resolve().parent / "results"
DECODE_MID = PaliGemmaConfig(
    name="decode-mid",
    vision=SigLIPConfig(width=384, depth=6, mlp_dim=1536, num_heads=6, patch_size=14, image_size=224),
    llm=GemmaConfig(family="gemma1", width=1024, depth=8, num_heads=8, num_kv_heads=1, head_dim=128,
                    mlp_dim=4096),
)
NEVER = -7  # an EOS id no token can equal: every row decodes all new tokens


def _inputs(cfg, batch: int, n_text: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    tokens = np.concatenate([np.full((batch, 1), 2), rng.integers(3, 256000, (batch, n_text - 2)),
                             np.full((batch, 1), 108)], axis=1).astype(np.int32)
    return images, tokens


def role_bandwidth(args) -> dict:
    n = 1 << 28  # 2^28 float32 = 1 GiB
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    t = min(time_calls(lambda: np.copyto(dst, src), 5))
    return {"copy_bytes_per_s": 2 * src.nbytes / t, "copy_gib": src.nbytes / 2**30,
            "counting": "STREAM copy: bytes read + bytes written"}


def role_pgbench(args) -> dict:
    import jax
    import jax.numpy as jnp

    from benchmarks.random_weights import LazyRandomFlat
    from pgbench import decode
    from pgbench.model.params import from_bigvision_params

    cfg = DECODE_MID
    model = from_bigvision_params(LazyRandomFlat(cfg, args.seed), cfg, dtype=jnp.dtype(args.dtype),
                                  consume=True, stacked=False)
    images, tokens = (jnp.asarray(a) for a in _inputs(cfg, args.batch, args.text_tokens))
    mask, ar = jnp.ones_like(tokens, bool), jnp.zeros_like(tokens)

    def gen():
        return decode.decode(model, images, tokens, mask, ar, max_new_tokens=args.new_tokens,
                             eos_id=NEVER).tokens.block_until_ready()

    prefill = jax.jit(lambda m, i, t: decode.prefill(m, i, t, mask, ar, max_new_tokens=args.new_tokens).logits)
    t_gen = min(time_calls(gen, args.repeats))
    t_pre = min(time_calls(lambda: prefill(model, images, tokens).block_until_ready(), args.repeats))
    return {"generate_s": t_gen, "prefill_s": t_pre, "tokens_head": np.asarray(gen())[0, :8].tolist()}


def role_write_hf(args) -> dict:
    from benchmarks.random_weights import LazyRandomFlat
    from pgbench.checkpoints.hf import write_hf_dir

    write_hf_dir(LazyRandomFlat(DECODE_MID, args.seed), DECODE_MID, args.hf_dir)
    return {}


def role_transformers(args) -> dict:
    import torch
    import transformers

    cfg = DECODE_MID
    hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(args.hf_dir, dtype=torch.float32).eval()
    images, tokens = _inputs(cfg, args.batch, args.text_tokens)
    n_img = cfg.num_image_tokens
    ids = torch.from_numpy(np.concatenate([np.full((args.batch, n_img), hf.config.image_token_id), tokens], 1))
    kw = dict(input_ids=ids, pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
              token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids))

    def gen():
        with torch.inference_mode():
            return hf.generate(**kw, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               do_sample=False, pad_token_id=0)

    def pre():
        with torch.inference_mode():
            return hf(**kw, logits_to_keep=1).logits

    t_gen = min(time_calls(gen, args.repeats))
    t_pre = min(time_calls(pre, args.repeats))
    return {"generate_s": t_gen, "prefill_s": t_pre,
            "tokens_head": gen()[0, ids.shape[1]: ids.shape[1] + 8].tolist()}


ROLES = {"bandwidth": role_bandwidth, "pgbench": role_pgbench, "write_hf": role_write_hf,
         "transformers": role_transformers}


def run(args) -> dict:
    common = dict(text_tokens=args.text_tokens, new_tokens=args.new_tokens, repeats=args.repeats, seed=args.seed)
    res = {"benchmark": "decode throughput", "config": DECODE_MID.name, "config_detail": repr(DECODE_MID),
           "new_tokens": args.new_tokens, "text_tokens": args.text_tokens, "machine": machine.describe(),
           "bandwidth": spawn("benchmarks.decode_cpu", "bandwidth", **common),
           "weight_bytes_per_token": weight_bytes_per_token(DECODE_MID), "runs": {}}
    tf_ok = have_transformers()
    with tempfile.TemporaryDirectory() as tmp:
        if tf_ok:
            spawn("benchmarks.decode_cpu", "write_hf", hf_dir=tmp, **common)
        for batch in args.batches:
            run_b = {"pgbench": spawn("benchmarks.decode_cpu", "pgbench", batch=batch, **common)}
            run_b["transformers"] = (spawn("benchmarks.decode_cpu", "transformers", batch=batch, hf_dir=tmp, **common)
                                     if tf_ok else {"error": "transformers not installed"})
            for r in run_b.values():
                if "generate_s" in r:
                    r["decode_s"] = r["generate_s"] - r["prefill_s"]
                    r["tokens_per_s"] = batch * (args.new_tokens - 1) / r["decode_s"]
                    r["tokens_per_s_end_to_end"] = batch * args.new_tokens / r["generate_s"]
            if "tokens_per_s" in run_b["pgbench"] and "tokens_per_s" in run_b["transformers"]:
                run_b["speedup"] = run_b["pgbench"]["tokens_per_s"] / run_b["transformers"]["tokens_per_s"]
            res["runs"][str(batch)] = run_b
    bw = res["bandwidth"].get("copy_bytes_per_s")
    if bw:
        floor = res["weight_bytes_per_token"] / bw
        res["bandwidth_floor_s_per_token"] = floor
        one = res["runs"].get("1", {}).get("pgbench", {})
        if "decode_s" in one:
            per_tok = one["decode_s"] / (args.new_tokens - 1)
            res["batch1_fraction_of_floor"] = floor / per_tok
    return res


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Decode throughput on the CPU ({res['config']}, float32, {res['new_tokens']} new tokens)", "",
             f"Machine: {m['cpu']} ({m['cores']} cores), {m['memory_gib']} GiB; jax {m['jax']}"
             + (f", torch {m['torch']}, transformers {m['transformers']}" if "torch" in m else "")
             + f"; {m['date']}.", "", f"Config: `{res['config_detail']}`", "",
             "| batch | pgbench tok/s | transformers tok/s | speed-up | pgbench end-to-end tok/s | transformers end-to-end tok/s |",
             "|---|---|---|---|---|---|"]
    for b, r in res["runs"].items():
        p, t = r["pgbench"], r["transformers"]
        fmt = lambda d, k: f"{d[k]:.1f}" if k in d else d.get("error", "—")  # noqa: E731
        lines.append(f"| {b} | {fmt(p, 'tokens_per_s')} | {fmt(t, 'tokens_per_s')} | "
                     f"{r.get('speedup', float('nan')):.2f}x | {fmt(p, 'tokens_per_s_end_to_end')} | "
                     f"{fmt(t, 'tokens_per_s_end_to_end')} |")
    if "bandwidth_floor_s_per_token" in res:
        lines += ["", f"Copy bandwidth {res['bandwidth']['copy_bytes_per_s'] / 1e9:.1f} GB/s (STREAM counting: "
                  "read + written bytes of a 1 GiB numpy copy); decoder weights "
                  f"read per token {res['weight_bytes_per_token'] / 1e9:.2f} GB; floor "
                  f"{res['bandwidth_floor_s_per_token'] * 1e3:.0f} ms/token; pgbench batch 1 reaches "
                  f"{res.get('batch1_fraction_of_floor', float('nan')):.0%} of that floor."]
    lines += ["", "Reproduce: `make bench` (or `python -m benchmarks.decode_cpu`)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=sorted(ROLES))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="float32", help="pgbench weights (--role pgbench only; the table is float32)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--text-tokens", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf-dir")
    ap.add_argument("--out", default=str(RESULTS / "decode_cpu"))
    args = ap.parse_args(argv)
    if args.role:
        print(json.dumps(ROLES[args.role](args)))
        return 0
    t0 = time.perf_counter()
    res = run(args)
    res["wall_s"] = time.perf_counter() - t0
    write_results(Path(args.out), res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
