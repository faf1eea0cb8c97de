"""Where a decode step's time goes: pgbench's decode loop at the real size under the JAX profiler.

The loop is ``benchmarks.decode_cpu``'s (same random weights, 10-token prompt, greedy, the
cache donated as inside ``decode.decode``). Per batch: one warm-up run, ``--repeats`` timed
runs, one run under ``jax.profiler.trace``. Each moment an op runs on XLA's worker threads is charged
to one op (``benchmarks.trace``), so the times below are wall time, and each op is placed by
the compiled HLO:

- weight product: a matrix product whose largest operand has the shape of one of the
  decoder's weight matrices (a projection ``[out, in]`` or the tied embedding): its bytes are
  read once per call;
- attention product: any other matrix product (scores and values over the KV cache);
- other: norms, RoPE, softmax, the cache update, sampling, conversions.

Beside it, the read bound (``benchmarks.read_bound``, all cores, read-only, measured in this
process before the model is built) says how fast the weight products could stream their
weights; their FLOP rate (2 per weight per row) says how far from compute-bound they are.

    python -m benchmarks.decode_profile                               # pg2-3b-224 bf16, batch 1/8/32, ~10 min
    python -m benchmarks.decode_profile --quick --out DIR/profile     # pg1-tiny, seconds
"""

from __future__ import annotations

import argparse
import collections
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import machine, read_bound
from benchmarks.common import load_average, random_prompt, write_results
from benchmarks.decode_cpu import decode_fns
from benchmarks.flops import weight_bytes_per_token
from benchmarks.trace import containers, hlo_ops, largest_operand, nbytes, span_ns, top_level_ns, worker_events

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT_TOKENS = 10  # text tokens after the image, as decode_cpu's default
ABOVE = ", ABOVE THE READ BOUND: the weights fit in a cache at this size, or a timing is wrong; do not quote"
HLO_DTYPE = {"float32": "f32", "bfloat16": "bf16"}


def weight_shapes(model) -> set[tuple[str, tuple[int, ...]]]:
    """(HLO dtype, dims) of every matrix of the decoder: its projections and embedding."""
    import jax

    return {(HLO_DTYPE[str(a.dtype)], tuple(a.shape)) for a in jax.tree.leaves(model.llm)
            if getattr(a, "ndim", 0) == 2}


def place(ops: dict[str, dict], name: str, weights: set) -> tuple[str, tuple | None]:
    """("weight product", (dtype, dims)) / ("attention product", None) / ("other", None)."""
    if name not in ops or not ops[name]["dot"]:
        return "other", None
    big = largest_operand(ops, name)
    return ("weight product", big) if big in weights else ("attention product", None)


def profile_batch(model, comp, state, tok, weights: set, steps: int, top: int, repeats: int) -> dict:
    """Times ``comp`` (the compiled loop) ``repeats`` times, profiles it once; per-step figures."""
    import jax
    import jax.numpy as jnp

    ops = hlo_ops(comp.as_text())
    fresh = lambda: jax.tree.map(jnp.copy, state)  # the loop consumes (donates) its cache
    comp(model, fresh(), tok).block_until_ready()
    walls = []
    for _ in range(repeats):
        s = fresh()
        t = time.perf_counter()
        comp(model, s, tok).block_until_ready()
        walls.append(time.perf_counter() - t)
    s = fresh()
    with tempfile.TemporaryDirectory(prefix="pgbench-decode-profile-") as tmp:
        with jax.profiler.trace(tmp):
            t = time.perf_counter()
            comp(model, s, tok).block_until_ready()
            wall_profiled = time.perf_counter() - t
        events = worker_events(tmp, skip=containers(ops))
    per_op = top_level_ns(events)
    n = steps - 1  # loop iterations
    groups: collections.Counter = collections.Counter()
    by_weight: dict = {}
    # Every op that ran, charged or not: an op that ran wholly beside another (XLA runs
    # independent ops side by side) is charged nothing but still read its weight.
    placed = {name: place(ops, name, weights) for _, _, name in events}
    for name, (kind, w) in placed.items():
        ns = per_op.get(name, 0)
        groups[kind] += ns
        if w is not None:
            e = by_weight.setdefault(w, {"calls": 0, "ns": 0})
            e["calls"] += 1  # distinct compiled ops reading a weight of this shape
            e["ns"] += ns
    rows = tok.shape[0]
    weight_rows = []
    for (dt, dims), e in sorted(by_weight.items(), key=lambda kv: -kv[1]["ns"]):
        b, flops = nbytes(dt, dims), 2 * rows * math.prod(dims)
        weight_rows.append({"weight": f"{dt}[{','.join(map(str, dims))}]", "ops": e["calls"],
                            "ms_per_step": e["ns"] / n / 1e6, "bytes_per_op": b, "flops_per_op": flops,
                            "gb_per_s": n * e["calls"] * b / e["ns"] if e["ns"] else None,
                            "gflop_per_s": n * e["calls"] * flops / e["ns"] if e["ns"] else None})
    read = sum(r["ops"] * r["bytes_per_op"] for r in weight_rows)
    flops = sum(r["ops"] * r["flops_per_op"] for r in weight_rows)
    t_weights = groups["weight product"] / n  # ns per step
    other = [(nm, ns) for nm, ns in per_op.items() if placed[nm][0] == "other"]
    return {
        "step_ms": float(np.median(walls)) / n * 1e3, "step_ms_runs": [w / n * 1e3 for w in walls],
        "step_ms_profiled": wall_profiled / n * 1e3,
        "span_ms": span_ns(events) / n / 1e6, "ops_ms": sum(per_op.values()) / n / 1e6,
        "groups_ms": {k: v / n / 1e6 for k, v in groups.items()},
        "weight_bytes_read": read, "weights": weight_rows,
        "weight_products_gb_per_s": read / t_weights if t_weights else None,
        "weight_products_gflop_per_s": flops / t_weights if t_weights else None,
        "top_other": [{"op": nm, "shape": ops[nm]["shape"] if nm in ops else "?", "ms_per_step": ns / n / 1e6}
                      for nm, ns in sorted(other, key=lambda kv: -kv[1])[:top]],
    }


def run(args) -> dict:
    import jax
    import jax.numpy as jnp

    from pgbench.checkpoints.bigvision_layout import from_bigvision_params
    from pgbench.checkpoints.random_params import RandomParams
    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    wbytes = weight_bytes_per_token(cfg, jnp.dtype(args.dtype).itemsize)
    # Measured before the model exists, on a buffer the size of one step's reads (capped so
    # that a float32 model and the buffer need not both fit).
    bound = read_bound.measure(min(wbytes, args.bound_bytes))
    model = from_bigvision_params(RandomParams(cfg, args.seed), cfg, dtype=jnp.dtype(args.dtype),
                                  stacked=False)
    jax.block_until_ready(model)
    weights = weight_shapes(model)
    prefill, loop = decode_fns(args.steps)
    res = {"preset": args.preset, "dtype": args.dtype, "steps": args.steps, "machine": machine.describe(),
           "load_before": load_average(), "weight_bytes_per_step": wbytes, "read_bound": bound,
           "read_bound_ms_per_step": wbytes / bound["bytes_per_s"] * 1e3, "batches": {}}
    for batch in args.batches:
        images, tokens = (jnp.asarray(a) for a in random_prompt(cfg, batch, PROMPT_TOKENS))
        state, tok = jax.jit(prefill)(model, images, tokens)
        comp = jax.jit(loop, donate_argnums=1).lower(model, state, tok).compile()
        res["batches"][str(batch)] = profile_batch(model, comp, state, tok, weights, args.steps, args.top,
                                                  args.repeats)
        del state
        print(f"[decode_profile] batch {batch}: {res['batches'][str(batch)]['step_ms']:.1f} ms per step", flush=True)
    res["load_after"] = load_average()
    return res


def markdown(res: dict) -> str:
    bound = res["read_bound"]["bytes_per_s"]
    lines = [f"# Where a decode step's time goes: {res['preset']}, {res['dtype']}", "",
             f"pgbench's decode loop as `benchmarks.decode_cpu` runs it ({res['steps'] - 1} steps after the "
             f"prefill, greedy), timed {len(next(iter(res['batches'].values()))['step_ms_runs'])} times, then one run per batch under `jax.profiler.trace`; each moment an op runs on "
             "XLA's worker threads is charged to one op (`benchmarks.trace`), so the times are wall time.", "",
             machine.header(res["machine"], res), "",
             f"Read bound: {res['weight_bytes_per_step'] / 1e9:.2f} GB of decoder weights per step at "
             f"{bound / 1e9:.1f} GB/s ({res['read_bound']['reader']}, {res['read_bound']['bytes'] / 1e9:.2f} GB "
             f"buffer) = {res['read_bound_ms_per_step']:.1f} ms per step.", "",
             "| batch | step ms (median; min-max) | under profiler | weight products ms | their GB/s (of bound) | their GFLOP/s | "
             "attention products ms | other ops ms | no op running ms |",
             "|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for b, e in res["batches"].items():
        g = e["groups_ms"]
        rate = e["weight_products_gb_per_s"]
        lines.append(f"| {b} | {e['step_ms']:.1f} ({min(e['step_ms_runs']):.1f}-{max(e['step_ms_runs']):.1f}) | "
                     f"{e['step_ms_profiled']:.1f} | {g.get('weight product', 0):.1f} | "
                     f"{rate:.1f} ({100 * rate * 1e9 / bound:.0f}%{ABOVE if rate * 1e9 > bound else ''}) | {e['weight_products_gflop_per_s']:.0f} | "
                     f"{g.get('attention product', 0):.1f} | {g.get('other', 0):.1f} | "
                     f"{e['span_ms'] - e['ops_ms']:.1f} |")
    lines += ["", "XLA runs independent ops side by side (a layer's q, k and v products read the same input): "
              "time two ops overlap is charged to the one that started first, so one weight's rate below "
              "can read high and its neighbour's low; the totals above count every moment once."]
    for b, e in res["batches"].items():
        lines += ["", f"Batch {b}, by weight (ms per step; GB/s of the weight read; GFLOP/s at {b} row(s)):", "",
                  "| weight | ops per step | ms per step | GB/s | GFLOP/s |", "|---|--:|--:|--:|--:|"]
        lines += [f"| `{w['weight']}` | {w['ops']} | {w['ms_per_step']:.2f} | "
                  + (f"{w['gb_per_s']:.1f} | {w['gflop_per_s']:.0f} |" if w["gb_per_s"] is not None else "— | — |")
                  for w in e["weights"]]
        lines += ["", "Largest other ops: " + "; ".join(f"`{o['op']}` {o['shape'][:40]} {o['ms_per_step']:.2f} ms"
                                                       for o in e["top_other"])]
    lines += ["", f"Reproduce: `python -m benchmarks.decode_profile --preset {res['preset']} --dtype {res['dtype']} "
              f"--batches {' '.join(res['batches'])}` (`make bench`)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pg1-tiny at batch 1 and 2 (seconds)")
    ap.add_argument("--preset", default=None, help="default pg2-3b-224 (pg1-tiny with --quick)")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8 32 (1 2 with --quick)")
    ap.add_argument("--steps", type=int, default=8, help="new tokens per run (the loop runs steps - 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per batch (the median is shown)")
    ap.add_argument("--top", type=int, default=6, help="largest other ops listed")
    ap.add_argument("--bound-bytes", type=int, default=4 << 30, help="largest read-bound buffer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help="results file stem (default benchmarks/results/decode_profile_<preset>_<dtype>)")
    args = ap.parse_args(argv)
    args.preset = args.preset or ("pg1-tiny" if args.quick else "pg2-3b-224")
    args.batches = args.batches or ([1, 2] if args.quick else [1, 8, 32])
    if args.steps < 2:
        ap.error("--steps must be at least 2 (the loop runs steps - 1 times)")
    res = run(args)
    stem = Path(args.out) if args.out else RESULTS / f"decode_profile_{args.preset}_{args.dtype}"
    write_results(stem, res, markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
