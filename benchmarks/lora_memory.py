"""What LoRA's merge-on-the-fly costs in memory, as XLA compiles the training step.

``pgbench transfer --lora-rank R`` merges each layer's adapters into its projections inside
the layer (``pgbench.lora``). This compiles ``train_step.make_train_step`` from abstract
inputs (nothing is allocated) for three ways of training the same model and reads XLA's
buffer assignment (``compiled.memory_analysis()``):

- ``full``: every parameter trained (gradients and Adam moments for all);
- ``backward only``: only the decoder's ``pre_attention_norm`` scales trained, a backward pass
  through every decoder layer with next to nothing trained: LoRA's step without its adapters;
- ``lora-r<R>``: the real LoRA step (every projection adapted, base frozen).

``lora - backward only`` in temporaries is the merge's price: compare it with one layer's
and all layers' adapted projection weights (listed with the table).

    python -m benchmarks.lora_memory [--config train-mid] [--rank 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import machine
from benchmarks.common import load_average, write_results

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 2**20
BACKWARD_ONLY = (r"(?!llm/blocks/pre_attention_norm$).*",)  # --freeze: all but these scales


def step_memory(cfg, kind: str, *, rank: int, remat, micro_batch: int, text_len: int) -> dict:
    """One float32 step's compiled memory: ``kind`` full | backward_only | lora, built by
    ``benchmarks.transfer_memory.build_step`` (the step ``run_transfer`` builds, layers stacked)."""
    from benchmarks.transfer_memory import Option, build_step, tree_size

    option = {"full": Option("full", "float32"),
              "backward_only": Option("backward_only", "float32", BACKWARD_ONLY),
              "lora": Option(f"lora-r{rank}", "float32", lora_rank=rank)}[kind]
    t0 = time.perf_counter()
    step_fn, args, parts = build_step(cfg, option, micro_batch=micro_batch, text_len=text_len, remat=remat)
    stats = step_fn.lower(*args).compile().memory_analysis()
    return {"kind": option.name, "remat": remat or "none", "trained_params": tree_size(parts["trainable"]),
            "argument_mib": stats.argument_size_in_bytes / MIB, "temp_mib": stats.temp_size_in_bytes / MIB,
            "compile_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="train-mid", help="a preset or train-mid (benchmarks.train_cpu)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    from benchmarks.transfer_memory import get_config

    cfg = get_config(args.config)
    llm = cfg.llm
    q, kv = llm.num_heads * llm.head_dim, llm.num_kv_heads * llm.head_dim
    layer_mib = 4 * llm.width * (2 * q + 2 * kv + 3 * llm.mlp_dim) / MIB  # float32 q k v o gate up down
    load_before = load_average()
    rows = [step_memory(cfg, kind, rank=args.rank, remat=remat, micro_batch=args.micro_batch,
                        text_len=args.text_len)
            for remat in ("nothing_saveable", None) for kind in ("full", "backward_only", "lora")]
    res = {"config": args.config, "rank": args.rank, "micro_batch": args.micro_batch, "text_len": args.text_len,
           "image_tokens": cfg.num_image_tokens, "layer_projections_mib": layer_mib, "depth": llm.depth,
           "rows": rows, "machine": machine.describe(), "load_average": [load_before, load_average()]}
    lines = [f"# LoRA's merge on the fly: XLA's compiled training-step memory ({args.config})", "",
             f"One optimizer step, float32, micro-batch {args.micro_batch}, {args.text_len} text + "
             f"{cfg.num_image_tokens} image tokens; XLA-CPU buffer assignment (compile only, nothing "
             f"allocated, so the machine's load does not change the figures). One decoder layer's "
             f"adapted projections (q, k, v, o, gate, up, down) are {layer_mib:.1f} MiB in float32, all "
             f"{llm.depth} layers' {llm.depth * layer_mib:.1f} MiB.", "",
             "| remat | step | trained parameters | arguments MiB | temporaries MiB |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['remat']} | {r['kind']} | {r['trained_params']:,} | {r['argument_mib']:.1f} | "
              f"{r['temp_mib']:.1f} |" for r in rows]
    by = {(r["remat"], r["kind"]): r for r in rows}
    lines += [""]
    for remat in ("nothing_saveable", "none"):
        extra = by[(remat, f"lora-r{args.rank}")]["temp_mib"] - by[(remat, "backward_only")]["temp_mib"]
        lines.append(f"- `--remat {remat}`: LoRA's temporaries exceed the backward-only step's by "
                     f"{extra:.1f} MiB ({extra / layer_mib:.2f} layers' adapted projections).")
    m = res["machine"]
    lines += ["", f"Machine: {m.get('cpu', '?')}; jax {m.get('jax', '?')}; {m.get('date', '')}.", ""]
    write_results(args.out / f"lora_memory_{args.config}", res, "\n".join(lines))


if __name__ == "__main__":
    main()
