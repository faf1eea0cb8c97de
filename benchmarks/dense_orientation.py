"""Projection layouts on the CPU: which way round XLA's GEMMs want the weights.

For the model's own matrix shapes (decoding rows, prefill rows), times one projection
y[rows, out] = x[rows, in] times the weights, held and multiplied four ways:

* ``x @ w`` with w stored ``[in, out]`` (big_vision's kernel layout);
* ``x @ w.T`` with w stored ``[out, in]`` (torch's ``Linear.weight`` layout);
* ``(w @ x.T).T`` with w stored ``[out, in]``, an optimisation barrier between the dot
  and the transpose (the weight-major product);
* ``ops.dense`` (what the model runs: one of the two above, chosen by row count);

and torch's ``F.linear`` on the same ``[out, in]`` weights as a peer when torch is
installed. Each case cycles through several distinct matrices (more bytes than the
caches hold) so that small-row figures are memory-bound, as in decoding; figures are
per matrix, best of the repeats.

    python -m benchmarks.dense_orientation            # ~2 minutes, ~3 GB of memory
    python -m benchmarks.dense_orientation --quick    # tiny shapes, seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.common import time_calls, write_results

RESULTS = Path(__file__).resolve().parent / "results"

# (what, rows, in, out, distinct matrices, dtype)
FULL = [
    ("decode-mid MLP up, batch 1", 1, 1024, 4096, 8, "float32"),
    ("decode-mid MLP up, batch 8", 8, 1024, 4096, 8, "float32"),
    ("decode-mid MLP down, batch 8", 8, 4096, 1024, 8, "float32"),
    ("decode-mid logits, batch 1", 1, 1024, 257152, 1, "float32"),
    ("decode-mid logits, batch 8", 8, 1024, 257152, 1, "float32"),
    ("pg1-3b prefill MLP up (Gemma 2B)", 266, 2048, 16384, 2, "float32"),
    ("pg1-3b prefill MLP down (Gemma 2B)", 266, 16384, 2048, 2, "float32"),
    ("pg1-3b prefill SigLIP MLP", 256, 1152, 4304, 4, "float32"),
    ("pg1-3b prefill MLP up, bf16", 266, 2048, 16384, 2, "bfloat16"),
    ("decode-mid MLP up, batch 8, bf16", 8, 1024, 4096, 8, "bfloat16"),
    ("decode-mid logits, batch 1, bf16", 1, 1024, 257152, 1, "bfloat16"),
    ("pg1-3b decode attention q, batch 1, bf16", 1, 2048, 2048, 16, "bfloat16"),
    ("pg1-3b decode MLP up, batch 1, bf16", 1, 2048, 16384, 4, "bfloat16"),
    ("pg1-3b decode MLP down, batch 1, bf16", 1, 16384, 2048, 4, "bfloat16"),
    ("pg1-3b decode logits, batch 1, bf16", 1, 2048, 257152, 1, "bfloat16"),
    ("pg2-3b decode MLP up, batch 1, bf16", 1, 2304, 9216, 4, "bfloat16"),
    ("pg2-3b decode MLP up, batch 2, bf16", 2, 2304, 9216, 4, "bfloat16"),
    ("pg2-3b decode MLP up, batch 8, bf16", 8, 2304, 9216, 4, "bfloat16"),
    ("pg2-3b decode MLP up, batch 32, bf16", 32, 2304, 9216, 4, "bfloat16"),
]
QUICK = [
    ("tiny, 2 rows", 2, 64, 96, 2, "float32"),
    ("tiny, 80 rows", 80, 64, 96, 2, "float32"),
    ("tiny, 2 rows, bf16", 2, 64, 96, 2, "bfloat16"),
    ("tiny, 1 row, bf16", 1, 64, 96, 2, "bfloat16"),
]


def _case(what, rows, k, n, copies, dtype_name, repeats, rng) -> dict:
    import jax
    import jax.numpy as jnp

    from pgbench.model.ops import dense

    dtype = jnp.dtype(dtype_name)
    f32 = jnp.float32
    w_out_in = [rng.standard_normal((n, k), dtype=np.float32) for _ in range(copies)]
    x_np = rng.standard_normal((rows, k), dtype=np.float32)
    x = jnp.asarray(x_np, dtype)
    w_oi = [jnp.asarray(w, dtype) for w in w_out_in]
    w_io = [jnp.asarray(np.ascontiguousarray(w.T), dtype) for w in w_out_in]

    def each(f):
        return jax.jit(lambda x, ws: [f(x, w) for w in ws])

    ways = {
        "x @ w, w [in, out]": (each(lambda x, w: jnp.dot(x, w, preferred_element_type=f32).astype(x.dtype)), w_io),
        "x @ w.T, w [out, in]": (each(lambda x, w: jax.lax.dot_general(
            x, w, (((1,), (1,)), ((), ())), preferred_element_type=f32).astype(x.dtype)), w_oi),
        "(w @ x.T).T, w [out, in]": (each(lambda x, w: jax.lax.optimization_barrier(
            jnp.dot(w, x.T, preferred_element_type=f32)).T.astype(x.dtype)), w_oi),
        "ops.dense": (each(dense), w_oi),
    }
    ref = np.asarray(x, np.float64) @ np.asarray(w_oi[0], np.float64).T
    out = {"what": what, "rows": rows, "in": k, "out": n, "matrices": copies, "dtype": dtype_name,
           "weight_mb": n * k * dtype.itemsize / 1e6, "ms": {}}
    for name, (fn, ws) in ways.items():
        got = np.asarray(fn(x, ws)[0], np.float64)
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        if rel > (1e-5 if dtype_name == "float32" else 1e-2):
            raise AssertionError(f"{what}: {name} is off by {rel:.2e} of max |y|")
        out["ms"][name] = 1e3 * min(time_calls(lambda: jax.block_until_ready(fn(x, ws)), repeats)) / copies
    del w_oi, w_io
    try:
        import torch
    except ImportError:
        return out
    tdt = getattr(torch, dtype_name)
    tw = [torch.from_numpy(w).to(tdt) for w in w_out_in]
    tx = torch.from_numpy(x_np).to(tdt)
    with torch.inference_mode():
        out["ms"]["torch F.linear, w [out, in]"] = 1e3 * min(time_calls(
            lambda: [torch.nn.functional.linear(tx, w) for w in tw], repeats)) / copies
    return out


def run(args) -> dict:
    rng = np.random.default_rng(args.seed)
    res = {"benchmark": "projection layouts on the CPU", "machine": machine.describe(), "cases": []}
    for case in QUICK if args.quick else FULL:
        print(f"[dense_orientation] {case[0]}", file=sys.stderr, flush=True)
        res["cases"].append(_case(*case, args.repeats, rng))
    return res


def markdown(res: dict) -> str:
    m = res["machine"]
    ways = list(dict.fromkeys(w for c in res["cases"] for w in c["ms"]))
    lines = ["# Projection layouts on the CPU: milliseconds per matrix", "",
             "In brackets: GB/s of weights read for decoding shapes (memory-bound), GFLOP/s for "
             "prefill shapes (compute-bound).", "",
             machine.header(m), "",
             "| case | rows x in -> out | " + " | ".join(ways) + " |", "|---|---|" + "---|" * len(ways)]
    for c in res["cases"]:
        cells = []
        for w in ways:
            ms = c["ms"].get(w)
            if ms is None:
                cells.append("-")
            elif c["rows"] <= 64:
                cells.append(f"{ms:.2f} ({c['weight_mb'] / ms:.0f} GB/s)")
            else:
                cells.append(f"{ms:.2f} ({2e-6 * c['rows'] * c['in'] * c['out'] / ms:.0f} GFLOP/s)")
        lines.append(f"| {c['what']} | {c['rows']} x {c['in']} -> {c['out']} | " + " | ".join(cells) + " |")
    lines += ["", "The model stores every projection `[out, in]` and `ops.dense` multiplies float32 "
              "inputs of at most `ops.WEIGHT_MAJOR_MAX_ROWS` rows weight-major on the CPU, the rest as `x @ w.T`; "
              "a single bf16 row of at most `ops.FUSED_ROW_MAX_COLUMNS` inputs as a float32 matrix-vector "
              "product fused with the weight's conversion (it reads the bf16 weight once), a wider one "
              "computed twice (XLA's one-row bf16 kernel is the slow one).",
              "", "Reproduce: `make bench` (or `python -m benchmarks.dense_orientation`)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="results file stem (default benchmarks/results/dense_orientation)")
    args = ap.parse_args(argv)
    res = run(args)
    write_results(Path(args.out) if args.out else RESULTS / "dense_orientation", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
