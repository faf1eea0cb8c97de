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

import numpy as np

from benchmarks import machine
from benchmarks.common import load_average, write_results

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 2**20
BACKWARD_ONLY = (r"(?!llm/blocks/pre_attention_norm$).*",)  # --freeze: all but these scales


def _abstract(tree):
    import equinox as eqx
    import jax
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if eqx.is_array(a) else a, tree)


def step_memory(cfg, kind: str, *, rank: int, remat, micro_batch: int, text_len: int) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from pgbench import lora, optim
    from pgbench.checkpoints.bigvision_layout import expected_shapes, from_bigvision_params
    from pgbench.train_step import LossConfig, make_train_step

    flat = {k: jax.ShapeDtypeStruct(s, np.float32) for k, s in expected_shapes(cfg).items()}
    model = jax.eval_shape(lambda f: from_bigvision_params(f, cfg, stacked=True), flat)
    stand_in = jax.tree.map(lambda a: np.zeros((), a.dtype), model)  # trainable_mask wants arrays
    if kind == "lora":
        model = lora.attach(model, lora.make_spec(rank), jax.random.key(0))  # real (small) adapters
        mask = lora.trainable_mask(model)
    else:
        mask = optim.trainable_mask(stand_in, () if kind == "full" else BACKWARD_ONLY)
    trainable, frozen = eqx.partition(model, mask)
    trainable = _abstract(trainable)
    tx, schedule = optim.bigvision_optimizer(trainable, lr=1e-5, total_steps=100)
    opt_state = jax.eval_shape(tx.init, trainable)
    step_fn = make_train_step(tx, schedule, lr=1e-5, lcfg=LossConfig(remat=remat), seed=0)
    r, km = cfg.image_size, (1, micro_batch)
    ints = jax.ShapeDtypeStruct((*km, text_len), jnp.int32)
    batch = {"images": jax.ShapeDtypeStruct((*km, r, r, 3), jnp.float32), "tokens": ints,
             "input_mask": jax.ShapeDtypeStruct((*km, text_len), jnp.bool_), "mask_ar": ints, "mask_loss": ints}
    t0 = time.perf_counter()
    stats = step_fn.lower(trainable, frozen, opt_state, batch,
                          jax.ShapeDtypeStruct((), jnp.int32)).compile().memory_analysis()
    n_trained = int(sum(int(np.prod(a.shape)) for a in jax.tree.leaves(trainable)))
    return {"kind": kind if kind != "lora" else f"lora-r{rank}", "remat": remat or "none",
            "trained_params": n_trained, "argument_mib": stats.argument_size_in_bytes / MIB,
            "temp_mib": stats.temp_size_in_bytes / MIB, "compile_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="train-mid", help="a preset or train-mid (benchmarks.train_cpu)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    from benchmarks.train_cpu import get_config

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
