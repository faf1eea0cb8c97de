"""Where a training step's time goes: pgbench's jitted step under the JAX profiler.

The step is ``benchmarks.train_cpu``'s (same configuration, weights, batch, optimizer and
layer form). After two warm-up steps, ``--steps`` steps run under ``jax.profiler.trace``;
each moment some compiled op runs on XLA's worker threads is charged to one op
(``benchmarks.trace``: the helper threads' share of a library product is that product's, and
the charges add up to the wall time ops ran) and each op is placed by the compiled HLO's
metadata:

- phase: ``forward`` (under ``jvp``), ``backward`` (under ``transpose(jvp)``),
  ``optimizer/update`` (the rest of the step function: clip, Adam, the parameter update),
  ``ungrouped`` (ops XLA created without a source location: layout copies, the gradient
  concatenation into the stacked layers, broadcasts); ``not in the compiled HLO`` if a traced
  op's name is missing from it;
- kind: ``gemm`` (a library dot fusion) or ``other``.

Profiling slows the step a little (the wall time printed is under the profiler); the
shares are what this is for. It reads the trace with ``jax.profiler.ProfileData``.

    python -m benchmarks.train_profile --dtype bfloat16     # train-mid, ~1 min
    python -m benchmarks.train_profile --quick --out DIR/profile   # pg1-tiny, seconds
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path

from benchmarks import machine
from benchmarks.common import load_average, write_results
from benchmarks.trace import containers, hlo_ops, top_level_ns, worker_events

RESULTS = Path(__file__).resolve().parent / "results"
UNMATCHED = "not in the compiled HLO"


def classify(name: str, op_name: str) -> tuple[str, str]:
    """(phase, kind) of one compiled op, from its name and its source op_name."""
    if "transpose(jvp" in op_name:
        phase = "backward"
    elif "jvp(" in op_name:
        phase = "forward"
    elif op_name:
        phase = "optimizer/update"
    else:
        phase = "ungrouped"
    is_dot = "dot_general" in op_name or re.search(r"\bdot\b", op_name)
    kind = "gemm" if name.startswith(("ynn_fusion", "onednn", "dot")) and is_dot else "other"
    return phase, kind


def run(args) -> dict:
    import jax

    from benchmarks.train_cpu import PgbenchSide

    side = PgbenchSide(args)
    side.step()
    side.step()
    hlo = side.step_fn.lower(side.trainable, side.frozen, side.opt_state, side.batch,
                             jax.numpy.int32(0)).compile().as_text()
    ops = hlo_ops(hlo)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="pgbench-profile-") as tmp:
        t = time.perf_counter()
        with jax.profiler.trace(tmp):
            for _ in range(args.steps):
                side.step()
        wall = (time.perf_counter() - t) / args.steps
        per_op = top_level_ns(worker_events(tmp, skip=containers(ops)))
    # The trace names ops as the step's executable does; the HLO comes from compiling the same
    # step again (deterministic), and any trace name it lacks is shown as such, not guessed.
    shares: collections.Counter = collections.Counter()
    for name, ns in per_op.items():
        shares[classify(name, ops[name]["source"]) if name in ops else (UNMATCHED, "other")] += ns
    total = sum(shares.values())
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:args.top]
    return {
        "preset": args.preset, "dtype": args.dtype, "batch": args.batch, "prefix": args.prefix,
        "suffix": args.suffix, "layers": args.layers, "remat": args.remat, "steps": args.steps,
        "machine": machine.describe(), "load_before": load_before, "load_after": load_average(),
        "wall_s_per_step": wall, "op_ms_per_step": total / args.steps / 1e6,
        "shares": [{"phase": p, "kind": k, "ms": ns / args.steps / 1e6, "share": ns / total}
                   for (p, k), ns in shares.most_common()],
        "top_ops": [{"op": n, "shape": ops[n]["shape"] if n in ops else "?",
                     "source": ops[n]["source"] if n in ops else "?",
                     "ms": ns / args.steps / 1e6, "share": ns / total} for n, ns in top],
    }


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Where a training step's time goes: {res['preset']}, {res['dtype']}, batch {res['batch']}", "",
             f"pgbench's step as `benchmarks.train_cpu` runs it ({res['prefix']} prefix + {res['suffix']} suffix "
             f"tokens, layers {res['layers']}, remat {res['remat']}), {res['steps']} steps under "
             "`jax.profiler.trace`; each moment an op runs on XLA's worker threads is charged to one op "
             "(`benchmarks.trace`), so the times are wall time.", "",
             machine.header(m, res), "",
             f"Wall time per step under the profiler: {res['wall_s_per_step']:.3f} s; "
             f"ops ran {res['op_ms_per_step']:.0f} ms of it.", "",
             "| phase | kind | ms per step | share |", "|---|---|--:|--:|"]
    lines += [f"| {s['phase']} | {s['kind']} | {s['ms']:.1f} | {100 * s['share']:.1f}% |" for s in res["shares"]]
    lines += ["", "Largest ops:", "", "| op | result | source | ms per step | share |", "|---|---|---|--:|--:|"]
    lines += [f"| {o['op']} | `{o['shape']}` | {o['source'][-70:] or '(none)'} | {o['ms']:.1f} | "
              f"{100 * o['share']:.1f}% |" for o in res["top_ops"]]
    lines += ["", f"Reproduce: `python -m benchmarks.train_profile --preset {res['preset']} --dtype {res['dtype']}` "
              "(`make bench`)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pg1-tiny (seconds)")
    ap.add_argument("--preset", default=None, help="train-mid (default) or a pgbench preset")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--prefix", type=int, default=16)
    ap.add_argument("--suffix", type=int, default=16)
    ap.add_argument("--layers", default="auto", choices=["auto", "stacked", "per_layer"])
    ap.add_argument("--remat", default="none")
    ap.add_argument("--steps", type=int, default=3, help="profiled steps")
    ap.add_argument("--top", type=int, default=15, help="largest ops listed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="results file stem (default benchmarks/results/train_profile_<preset>_<dtype>)")
    args = ap.parse_args(argv)
    args.preset = args.preset or ("pg1-tiny" if args.quick else "train-mid")
    res = run(args)
    stem = Path(args.out) if args.out else RESULTS / f"train_profile_{args.preset}_{args.dtype}"
    write_results(stem, res, markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
