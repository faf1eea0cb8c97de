"""The bf16 weight gradient on the CPU: dW[N, K] = gᵀ·x over M rows, the backward product
of every projection in a bf16 training step.

Times, at the decoder MLP's training shapes (M = batch 2 x 287 tokens of train-mid), the
product as a bf16 backward computes it: bfloat16 operands, float32 accumulation, a bfloat16
dW. Every side does the same work: it scales its operands by a runtime 1 (in a training
step they come out of other operations, and a JAX jit argument's layout is fixed, which
would hide what layout assignment does), multiplies, and returns dW in bfloat16; four ways:

* ``jax default``: ``ops._weight_grad``, the row-contracting ``dot_general`` JAX and XLA
  are left to lay out;
* ``pgbench``: ``ops._cpu_weight_grad``, what the model's backward runs on one CPU device
  (gᵀ and x pinned to row-major layouts; the transpose of g is included in the time);
* ``kernel only``: the same product on a gᵀ handed in already transposed (what the
  in-program forms would cost without a transpose to pay);
* ``torch``: ``g.T @ x`` in torch (its own bf16 GEMM; when installed).

The four run in turn (one call each per round, interleaved), so load from other processes
hits them alike; figures are per product, median and best over the rounds, with the load
average before and after.

    python -m benchmarks.weight_grad            # ~30 s
    python -m benchmarks.weight_grad --quick    # tiny shapes, seconds
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.common import load_average, summarize, write_results

RESULTS = Path(__file__).resolve().parent / "results"

# (what, M rows, N outputs, K inputs)
FULL = [("train-mid MLP up / gate: g[574, 4096], x[574, 1024]", 574, 4096, 1024),
        ("train-mid MLP down: g[574, 1024], x[574, 4096]", 574, 1024, 4096),
        ("train-mid attention out: g[574, 1024], x[574, 1024]", 574, 1024, 1024)]
QUICK = [("tiny: g[64, 256], x[64, 128]", 64, 256, 128)]


def _cases(m: int, n: int, k: int, seed: int = 0) -> dict:
    import jax
    import jax.numpy as jnp

    from pgbench.model import ops

    rng = np.random.default_rng(seed)
    g32 = rng.standard_normal((m, n), np.float32)
    x32 = rng.standard_normal((m, k), np.float32)
    g, x = jnp.asarray(g32, jnp.bfloat16), jnp.asarray(x32, jnp.bfloat16)
    gt = jnp.asarray(np.ascontiguousarray(g32.T), jnp.bfloat16)
    one = jnp.ones((), jnp.bfloat16)

    bf16 = jnp.bfloat16
    default = jax.jit(lambda g, x, s: ops._weight_grad(g * s, x * s).astype(bf16))
    pinned = jax.jit(lambda g, x, s: ops._cpu_weight_grad(g * s, x * s).astype(bf16))
    kernel = jax.jit(lambda gt, x, s: jax.lax.dot_general(gt * s, x * s, (((1,), (0,)), ((), ())),
                                                         preferred_element_type=jnp.float32).astype(bf16))
    cases = {"jax default": (lambda: default(g, x, one).block_until_ready()),
             "pgbench": (lambda: pinned(g, x, one).block_until_ready()),
             "kernel only": (lambda: kernel(gt, x, one).block_until_ready())}
    # The check compares the float32 products, before the rounding to bf16 that could
    # turn a summation-order difference into a whole bf16 step.
    want = np.asarray(jax.jit(ops._weight_grad)(g * one, x * one))
    got = np.asarray(jax.jit(ops._cpu_weight_grad)(g * one, x * one))
    err = float(np.abs(got - want).max() / np.abs(want).max())
    try:
        import torch
        tg, tx = torch.from_numpy(g32).bfloat16(), torch.from_numpy(x32).bfloat16()
        ts = torch.ones((), dtype=torch.bfloat16)
        cases["torch"] = lambda: (tg * ts).T @ (tx * ts)
    except ImportError:
        pass
    return {"cases": cases, "rel_err_pgbench_vs_default": err}


def measure(shapes, rounds: int) -> list[dict]:
    rows = []
    for what, m, n, k in shapes:
        built = _cases(m, n, k)
        cases = built["cases"]
        for fn in cases.values():
            fn()  # compile / warm up
        times: dict[str, list[float]] = {name: [] for name in cases}
        before = load_average()
        for _ in range(rounds):
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        flops = 2 * m * n * k
        rows.append({"what": what, "m": m, "n": n, "k": k, "flops": flops,
                     "rel_err_pgbench_vs_default": built["rel_err_pgbench_vs_default"],
                     "load_before": before, "load_after": load_average(),
                     "sides": {name: summarize(ts) | {"gflops": flops / float(np.median(ts)) / 1e9}
                               for name, ts in times.items()}})
    return rows


def markdown(res: dict) -> str:
    names = list(res["rows"][0]["sides"])
    mach = res["machine"]
    versions = ", ".join(f"{k} {mach[k]}" for k in ("jax", "torch") if k in mach)
    out = ["# bf16 weight gradient dW = gᵀ·x on the CPU (bf16 operands and result, float32 accumulation)", "",
           f"Machine: {mach['cpu']} ({mach['cores']} cores), {mach['memory_gib']} GiB; {versions}; {mach['date']}.", "",
           "Sides run in turn, one call each per round, "
           f"{res['rounds']} rounds; median (best) milliseconds and GFLOP/s at the median. "
           "Every side scales its operands by a runtime 1 first and returns dW in bf16; "
           "`pgbench` includes its transpose of g; `kernel only` is handed gᵀ ready-made.", "",
           "| product | " + " | ".join(names) + " | pgbench / jax default | max rel. diff pgbench vs default | load before → after |",
           "|---|" + "---|" * (len(names) + 3)]
    for r in res["rows"]:
        s = r["sides"]
        cells = [f"{s[n]['median_s'] * 1e3:.1f} ({s[n]['min_s'] * 1e3:.1f}) ms, {s[n]['gflops']:.0f}" for n in names]
        speed = s["jax default"]["median_s"] / s["pgbench"]["median_s"]
        out.append(f"| {r['what']} | " + " | ".join(cells) + f" | {speed:.2f}x faster | "
                   f"{r['rel_err_pgbench_vs_default']:.1e} | {r['load_before'][:1]} → {r['load_after'][:1]} |")
    out += ["", "The relative difference compares the float32 products before the bf16 rounding: max "
            "|diff| over max |value|, the same bf16 products summed in a different order.", "",
            "Reproduce: `python -m benchmarks.weight_grad` (`make bench`)."]
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (seconds)")
    ap.add_argument("--rounds", type=int, default=None, help="calls per side (default 15; quick 2)")
    ap.add_argument("--out", default=None, help="results file stem (default benchmarks/results/weight_grad)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 15)
    res = {"machine": machine.describe(), "rounds": rounds, "rows": measure(QUICK if args.quick else FULL, rounds)}
    write_results(Path(args.out) if args.out else RESULTS / "weight_grad", res, markdown(res))


if __name__ == "__main__":
    main()
