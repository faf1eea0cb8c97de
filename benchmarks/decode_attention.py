"""One decode step's attention over the KV cache on the CPU: the grouped form against the
form the model runs there, and torch's scaled_dot_product_attention as a peer.

For each case (the cache shapes of a released model at a batch size), times one layer's
attention of one new query per row over a full cache:

* ``grouped``: ``attention._xla``, the reference form (query heads grouped by their KV
  head, one small product per row and KV head);
* ``attention()``: the entry point the model calls, which on one CPU device runs a
  decode step as ``attention._cpu_one_query`` (every query head against every KV head in
  one product per row, the other heads masked out; at batch 1 only up to
  ``attention.ONE_QUERY_MAX_KV_HEADS_AT_ONE_ROW`` KV heads);
* ``torch sdpa``: ``F.scaled_dot_product_attention`` with ``enable_gqa`` on the same
  numbers in torch's cache layout ``[B, KVH, S, hd]`` (what transformers' sdpa attention
  reads), when torch is installed. No soft-cap on torch's side (sdpa has none; Gemma 2's
  soft-cap is a few element-wise operations on pgbench's side).

The sides run in turn, ``--rounds`` times, each ``--repeats`` calls per turn; figures are
medians (min-max) over every call. The outputs are compared first (a side that differs
from the grouped form by more than the dtype allows is an error).

    python -m benchmarks.decode_attention            # ~15 seconds on a 2-core CPU
    python -m benchmarks.decode_attention --quick    # tiny shapes, seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.common import load_average, summarize, time_calls, write_results

RESULTS = Path(__file__).resolve().parent / "results"

# (what, batch, query heads, KV heads, cache slots, head dim, soft-cap, dtype); 282 slots:
# a 224 px prompt (256 image + 10 text tokens) and 16 new tokens, as benchmarks.decode_cpu
FULL = [(f"{name}, batch {b}", b, 8, kvh, 282, 256, cap, dtype)
        for dtype in ("bfloat16", "float32")
        for name, kvh, cap in (("pg1-3b (Gemma 2B)", 1, None), ("pg2-3b (Gemma 2 2B)", 4, 50.0))
        for b in (1, 8, 32)]
# Gemma 2 9B and 27B's attention shapes (no weights needed), bf16
FULL += [(f"{name}, batch {b}", b, heads, kvh, 282, hd, 50.0, "bfloat16")
         for name, heads, kvh, hd in (("pg2-10b (Gemma 2 9B)", 16, 8, 256),
                                      ("pg2-28b (Gemma 2 27B)", 32, 16, 128))
         for b in (1, 8, 32)]
QUICK = [("tiny, 1 KV head", 2, 4, 1, 24, 16, None, "float32"),
         ("tiny, 2 KV heads", 2, 4, 2, 24, 16, 50.0, "bfloat16")]


def _case(what, batch, heads, kv_heads, slots, head_dim, cap, dtype_name, rounds, repeats, rng):
    import jax
    import jax.numpy as jnp

    from pgbench.model import attention as attn
    from pgbench.model.masks import SegmentInfo

    dtype = jnp.dtype(dtype_name)
    q_np = rng.standard_normal((batch, 1, heads, head_dim), dtype=np.float32) * head_dim ** -0.5
    k_np = rng.standard_normal((batch, slots, kv_heads, head_dim), dtype=np.float32)
    v_np = rng.standard_normal((batch, slots, kv_heads, head_dim), dtype=np.float32)
    q, k, v = (jnp.asarray(a, dtype) for a in (q_np, k_np, v_np))
    prefix = slots - 16
    k_info = SegmentInfo.from_masks(np.ones((batch, slots), bool),
                                    np.arange(slots)[None].repeat(batch, 0) >= prefix)
    q_info = SegmentInfo(*(a[:, -1:] for a in k_info))
    sides = {
        "grouped": jax.jit(lambda q, k, v: attn._xla(q, k, v, q_info, k_info, cap, None)),
        "attention()": jax.jit(lambda q, k, v: attn.attention(q, k, v, q_info, kv_segment_info=k_info,
                                                              softcap=cap)),
    }
    want = np.asarray(sides["grouped"](q, k, v), np.float32)
    tol = 1e-5 if dtype_name == "float32" else 2e-2
    calls = {}
    for name, fn in sides.items():
        err = float(np.abs(np.asarray(fn(q, k, v), np.float32) - want).max())
        if err > tol:
            raise AssertionError(f"{what}: {name} differs from the grouped form by {err:.2e}")
        calls[name] = lambda fn=fn: jax.block_until_ready(fn(q, k, v))
    peer = _torch_sdpa(q_np, k_np, v_np, dtype_name, cap)
    if peer is not None:
        call, got = peer
        if cap is None and float(np.abs(got - want).max()) > tol:
            raise AssertionError(f"{what}: torch sdpa differs from the grouped form")
        calls["torch sdpa"] = call
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name] += time_calls(call, repeats)
    cache_mb = 2 * k_np.size * dtype.itemsize / 1e6
    return {"what": what, "batch": batch, "heads": heads, "kv_heads": kv_heads, "slots": slots,
            "head_dim": head_dim, "softcap": cap, "dtype": dtype_name, "cache_mb": cache_mb,
            "ms": {name: {(k[:-2] + "_ms" if k.endswith("_s") else k): (v * 1e3 if k.endswith("_s") else v)
                          for k, v in summarize(t).items()}
                   for name, t in times.items()}}


def _torch_sdpa(q, k, v, dtype_name, cap):
    """(a call timing torch's sdpa decode step, its output as [B, 1, H, hd]) or None."""
    try:
        import torch
    except ImportError:
        return None
    dt = getattr(torch, dtype_name)
    tq = torch.from_numpy(q).to(dt).transpose(1, 2).contiguous()  # [B, H, 1, hd]
    tk = torch.from_numpy(k).to(dt).transpose(1, 2).contiguous()  # [B, KVH, S, hd]
    tv = torch.from_numpy(v).to(dt).transpose(1, 2).contiguous()

    def step():
        with torch.inference_mode():
            return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, scale=1.0,
                                                                    enable_gqa=True)
    return step, step().transpose(1, 2).float().numpy()


def run(args) -> dict:
    rng = np.random.default_rng(args.seed)
    res = {"benchmark": "decode-step attention over the KV cache on the CPU",
           "machine": machine.describe(), "load_before": load_average(), "cases": []}
    for case in QUICK if args.quick else FULL:
        print(f"[decode_attention] {case[0]} {case[-1]}", file=sys.stderr, flush=True)
        res["cases"].append(_case(*case, args.rounds, args.repeats, rng))
    res["load_after"] = load_average()
    return res


def markdown(res: dict) -> str:
    m = res["machine"]
    sides = list(dict.fromkeys(s for c in res["cases"] for s in c["ms"]))
    lines = ["# Decode-step attention over the KV cache on the CPU: milliseconds per layer", "",
             machine.header(m, res), "",
             "One query per row against a full cache; median (min-max) over every call, the sides "
             "interleaved. `grouped` is the reference form, `attention()` what the model runs "
             "(on one CPU device: every query head against every KV head, other heads masked; "
             "the grouped form at batch 1 with more than "
             "`attention.ONE_QUERY_MAX_KV_HEADS_AT_ONE_ROW` KV heads); "
             "torch's sdpa reads its own `[B, KVH, S, hd]` cache layout and has no soft-cap.", "",
             "| case | dtype | KV heads | cache MB | " + " | ".join(sides) + " | grouped / attention() |",
             "|---|---|---|---|" + "---|" * (len(sides) + 1)]
    for c in res["cases"]:
        cells = [f"{c['ms'][s]['median_ms']:.3f} ({c['ms'][s]['min_ms']:.3f}-{c['ms'][s]['max_ms']:.3f})"
                 if s in c["ms"] else "-" for s in sides]
        ratio = c["ms"]["grouped"]["median_ms"] / c["ms"]["attention()"]["median_ms"]
        lines.append(f"| {c['what']} | {c['dtype']} | {c['kv_heads']} | {c['cache_mb']:.1f} | "
                     + " | ".join(cells) + f" | {ratio:.2f}x |")
    lines += ["", "Reproduce: `make bench` (or `python -m benchmarks.decode_attention`)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help="results file stem (default benchmarks/results/decode_attention)")
    args = ap.parse_args(argv)
    res = run(args)
    write_results(Path(args.out) if args.out else RESULTS / "decode_attention", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
