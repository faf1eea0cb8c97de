"""Memory per device that transfer needs at each released PaliGemma size, as XLA compiles it.

For every preset x memory option x micro-batch, the training step ``pgbench transfer`` runs
(``train_step.make_train_step``: suffix loss, big_vision's optimizer chain from ``optim``,
``--remat nothing_saveable``, one micro-batch per pass) is lowered and compiled for this
machine's backend from *abstract* inputs (``jax.ShapeDtypeStruct`` model, optimizer state and
batch: nothing is allocated), and ``compiled.memory_analysis()`` gives XLA's buffer assignment:

    peak = arguments (parameters, optimizer state, batch)
         + outputs not aliased to a donated argument
         + temporaries (gradients, activations kept for the backward pass, update buffers)

The options (flags of ``pgbench transfer``):

- ``full-f32``: every parameter trained, float32 (checkpoints as released);
- ``full-bf16``: ``--param-dtype bfloat16`` (optimizer state stays float32);
- ``freeze-img-f32`` / ``freeze-img-bf16``: ``--freeze img`` (vision tower and projection
  frozen: no gradient, no optimizer state, no backward pass through SigLIP);
- ``lora-r<R>-f32`` / ``lora-r<R>-bf16`` (*computed*, pgbench has no ``--lora-rank`` yet):
  the compiled step of a proxy that backpropagates through every decoder layer but trains
  only their ``pre_attention_norm`` scales (what LoRA's backward pass does without its
  adapters), plus the adapters' parameters, gradients and float32 Adam moments from the
  formula ``R x (d_in + d_out)`` per adapted projection (q, k, v, attn_out, gate, up, down).

Figures are XLA-CPU's buffer assignment on one device. XLA's GPU backend assigns buffers
with its own fusion and scheduling, so its figures differ (typically lower temporaries: it
fuses the optimizer update more aggressively); use them as an estimate for accelerators, not
a guarantee. With ``--mesh fsdp=N`` parameters, gradients and optimizer state divide by about
N per device, activations do not (each device holds its share of the batch).

    python -m benchmarks.transfer_memory            # 12 released presets x options x micro-batch 1, 8
    python -m benchmarks.transfer_memory --quick --out DIR   # tiny presets + the measurement, seconds

The run also measures one real step on a ~130M-parameter config (``--check-config``) and
records the process's peak resident memory during the step next to the compiled figure, so
the method is checked on this machine (``tests/benchmarks/test_transfer_memory.py`` does the
same on a small config with a stated tolerance).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.common import load_average, write_results

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 2**30
RELEASED = [f"{family}-{size}-{res}" for family, size in (("pg1", "3b"), ("pg2", "3b"), ("pg2", "10b"),
                                                          ("pg2", "28b")) for res in (224, 448, 896)]
# Trains only each decoder layer's pre-attention norm: a backward pass through every decoder
# layer (as LoRA's) with next to no trained parameters.
LORA_PROXY_FREEZE = (r"(?!llm/blocks/pre_attention_norm$).*",)
LORA_TARGETS = ("q", "k", "v", "attn_out", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class Option:
    """A memory option: the ``pgbench transfer`` flags it stands for and how to build its step."""

    name: str
    param_dtype: str
    freeze: tuple[str, ...] = ()
    lora_rank: int = 0  # > 0: computed LoRA row (proxy step + adapter formula)

    @property
    def flags(self) -> str:
        out = [f"--param-dtype {self.param_dtype}"] if self.param_dtype != "float32" else []
        if self.lora_rank:
            out.append(f"LoRA rank {self.lora_rank} (computed)")
        else:
            out += [f"--freeze {f}" for f in self.freeze]
        return " ".join(out) or "(defaults)"


def options(lora_rank: int = 16) -> dict[str, Option]:
    opts = [Option("full-f32", "float32"), Option("full-bf16", "bfloat16"),
            Option("freeze-img-f32", "float32", ("img",)), Option("freeze-img-bf16", "bfloat16", ("img",))]
    if lora_rank:
        opts += [Option(f"lora-r{lora_rank}-{s}", d, LORA_PROXY_FREEZE, lora_rank)
                 for s, d in (("f32", "float32"), ("bf16", "bfloat16"))]
    return {o.name: o for o in opts}


def get_config(name: str):
    """A preset, or ``train-mid`` (benchmarks.train_cpu's ~130M-parameter config)."""
    if name == "train-mid":
        from benchmarks.train_cpu import get_config as train_config
        return train_config(name)
    from pgbench.config import get_preset
    return get_preset(name)


# ----------------------------------------------------------------------------------------------
# The abstract step.


def abstract_model(cfg, param_dtype: str):
    """The model as ``pgbench transfer`` loads it (layers stacked, every parameter cast to
    ``param_dtype``), each array a ``jax.ShapeDtypeStruct``."""
    import jax

    from pgbench.checkpoints.bigvision_layout import expected_shapes, from_bigvision_params

    flat = {k: jax.ShapeDtypeStruct(s, np.float32) for k, s in expected_shapes(cfg).items()}
    return jax.eval_shape(lambda f: from_bigvision_params(f, cfg, dtype=param_dtype, stacked=True), flat)


def partition(model, freeze):
    """(trainable, frozen) as ``run_transfer`` splits them. ``optim.trainable_mask`` tells
    arrays from static fields with ``eqx.is_array``, so it reads the names off scalar stand-ins."""
    import equinox as eqx
    import jax

    from pgbench import optim

    stand_in = jax.tree.map(lambda a: np.zeros((), a.dtype), model)
    return eqx.partition(model, optim.trainable_mask(stand_in, freeze))


def abstract_batch(cfg, accum: int, micro_batch: int, text_len: int) -> dict:
    """Micro-batches [K, m, ...] as ``split_micro_batches`` hands them to the step."""
    import jax
    import jax.numpy as jnp

    r, km = cfg.image_size, (accum, micro_batch)
    ints = jax.ShapeDtypeStruct((*km, text_len), jnp.int32)
    return {"images": jax.ShapeDtypeStruct((*km, r, r, 3), jnp.float32), "tokens": ints,
            "input_mask": jax.ShapeDtypeStruct((*km, text_len), jnp.bool_), "mask_ar": ints, "mask_loss": ints}


def build_step(cfg, option: Option, *, micro_batch: int, accum: int = 1, text_len: int = 64,
               remat: str | None = "nothing_saveable", wd: float = 0.0):
    """(jitted step, abstract arguments, pieces) for one configuration; the step is
    ``make_train_step``'s, with ``run_transfer``'s optimizer and loss switches."""
    import jax
    import jax.numpy as jnp

    from pgbench import optim
    from pgbench.train_step import LossConfig, make_train_step

    model = abstract_model(cfg, option.param_dtype)
    trainable, frozen = partition(model, option.freeze)
    tx, schedule = optim.bigvision_optimizer(trainable, lr=1e-5, wd=wd, total_steps=1000)
    opt_state = jax.eval_shape(tx.init, trainable)
    step_fn = make_train_step(tx, schedule, lr=1e-5, lcfg=LossConfig(remat=remat), seed=0)
    args = (trainable, frozen, opt_state, abstract_batch(cfg, accum, micro_batch, text_len),
            jax.ShapeDtypeStruct((), jnp.int32))
    return step_fn, args, {"model": model, "trainable": trainable, "opt_state": opt_state}


def tree_bytes(tree) -> int:
    import jax
    return int(sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree)))


def tree_size(tree) -> int:
    import jax
    return int(sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree)))


def compiled_peak(stats) -> int:
    """Bytes live at the step's peak on one device: its arguments, its outputs that do not
    reuse a donated argument, and its temporaries."""
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
            + stats.temp_size_in_bytes)


def lora_adapter_params(cfg, rank: int) -> int:
    """Parameters of rank-``rank`` adapters (A: d_in x r, B: r x d_out) on every decoder
    layer's q, k, v, attn_out, gate, up and down projections."""
    llm = cfg.llm
    d, q, kv, f = llm.width, llm.num_heads * llm.head_dim, llm.num_kv_heads * llm.head_dim, llm.mlp_dim
    dims = {"q": (d, q), "k": (d, kv), "v": (d, kv), "attn_out": (q, d), "gate": (d, f), "up": (d, f),
            "down": (f, d)}
    return llm.depth * rank * sum(a + b for a, b in (dims[t] for t in LORA_TARGETS))


def step_memory(cfg, option: Option, *, micro_batch: int, accum: int = 1, text_len: int = 64,
                remat: str | None = "nothing_saveable") -> dict:
    """XLA's memory figures for one configuration's compiled step, and their breakdown:
    parameters, gradients (one per trained parameter, in its dtype), optimizer state, and the
    rest of the peak (activations kept for the backward pass, update buffers, workspace)."""
    t0 = time.perf_counter()
    step_fn, args, parts = build_step(cfg, option, micro_batch=micro_batch, accum=accum,
                                      text_len=text_len, remat=remat)
    stats = step_fn.lower(*args).compile().memory_analysis()
    compile_s = time.perf_counter() - t0
    params_b, opt_b = tree_bytes(parts["model"]), tree_bytes(parts["opt_state"])
    grads_b = tree_bytes(parts["trainable"])
    peak = compiled_peak(stats)
    row = {"preset": cfg.name, "option": option.name, "flags": option.flags, "micro_batch": micro_batch,
           "accum": accum, "text_len": text_len, "image_tokens": cfg.num_image_tokens,
           "params": tree_size(parts["model"]), "trainable_params": tree_size(parts["trainable"]),
           "params_bytes": params_b, "grads_bytes": grads_b, "opt_state_bytes": opt_b,
           "batch_bytes": tree_bytes(args[3]),
           "argument_bytes": stats.argument_size_in_bytes, "output_bytes": stats.output_size_in_bytes,
           "alias_bytes": stats.alias_size_in_bytes, "temp_bytes": stats.temp_size_in_bytes,
           "peak_bytes": peak, "compile_s": round(compile_s, 2), "computed": False}
    if option.lora_rank:
        row.update(lora_row(cfg, option, row))
    row["other_bytes"] = row["peak_bytes"] - row["params_bytes"] - row["grads_bytes"] - row["opt_state_bytes"]
    return row


def lora_row(cfg, option: Option, proxy: dict) -> dict:
    """The LoRA figures from the proxy's compiled step: its trained norm scales' gradients and
    Adam moments swapped for the adapters' float32 parameters, float32 gradients and two
    float32 Adam moments; the temporaries grow by two adapter-sized float32 buffers (the
    gradient and an update buffer, as XLA-CPU's compiled full fine-tuning steps hold)."""
    n = lora_adapter_params(cfg, option.lora_rank)
    adapters = 4 * n  # float32 bytes
    swapped = proxy["grads_bytes"] + proxy["opt_state_bytes"]
    return {"computed": True, "proxy_trainable_params": proxy["trainable_params"],
            "proxy_peak_bytes": proxy["peak_bytes"], "trainable_params": n,
            "params": proxy["params"] + n, "params_bytes": proxy["params_bytes"] + adapters,
            "grads_bytes": adapters, "opt_state_bytes": 2 * adapters,
            "temp_bytes": proxy["temp_bytes"] - proxy["grads_bytes"] + 2 * adapters,
            # + parameters, + two Adam moments, + gradient and update buffer in the temporaries
            "peak_bytes": proxy["peak_bytes"] - swapped + adapters + 2 * adapters + 2 * adapters}


# ----------------------------------------------------------------------------------------------
# A real step, measured: the check of the method.


def _proc_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_real_step(cfg_name: str, option_name: str, micro_batch: int, text_len: int) -> dict:
    """Run the very executable compiled from the abstract inputs on real arrays and measure
    the process's resident memory: the rise of its high-water mark during the second step
    over what was resident before the first (the arguments and the process). Compared
    with ``compiled_peak - arguments`` (what the step adds to the arrays already held).
    Linux only (``/proc/self/clear_refs`` resets the high-water mark)."""
    import jax
    import jax.numpy as jnp

    from pgbench.checkpoints.random_params import init_params

    cfg, option = get_config(cfg_name), options()[option_name]
    step_fn, args, _ = build_step(cfg, option, micro_batch=micro_batch, text_len=text_len)
    compiled = step_fn.lower(*args).compile()
    stats = compiled.memory_analysis()
    model = init_params(cfg, jax.random.key(0), dtype=jnp.dtype(option.param_dtype))
    trainable, frozen = partition(model, option.freeze)
    del model
    from pgbench import optim
    tx, _ = optim.bigvision_optimizer(trainable, lr=1e-5, total_steps=1000)
    opt_state = tx.init(trainable)
    rng = np.random.default_rng(0)
    batch = {k: jnp.asarray(rng.integers(0, 2, s.shape).astype(s.dtype)) for k, s in args[3].items()}
    batch["tokens"] = jnp.asarray(rng.integers(0, cfg.llm.vocab_size, args[3]["tokens"].shape), jnp.int32)
    jax.block_until_ready((trainable, frozen, opt_state, batch))
    gc.collect()
    before = _proc_kib("VmRSS")  # the arguments (and the process), before any step
    rises = []
    for step in (1, 2):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        trainable, opt_state, m = compiled(trainable, frozen, opt_state, batch, jnp.int32(step))
        jax.block_until_ready((trainable, opt_state, m))
        rises.append((_proc_kib("VmHWM") - before) * 1024)
    return {"config": cfg_name, "option": option_name, "micro_batch": micro_batch, "text_len": text_len,
            "params": tree_size(trainable) + tree_size(frozen), "loss": float(m["loss"]),
            "argument_bytes": stats.argument_size_in_bytes, "temp_bytes": stats.temp_size_in_bytes,
            "predicted_rise_bytes": compiled_peak(stats) - stats.argument_size_in_bytes,
            "measured_rise_bytes": rises[-1], "first_step_rise_bytes": rises[0],
            "rss_before_bytes": before * 1024}


def measure_in_subprocess(cfg_name: str, option_name: str, micro_batch: int, text_len: int) -> dict:
    """``measure_real_step`` in a fresh process (nothing else resident, a clean high-water mark)."""
    cmd = [sys.executable, "-m", "benchmarks.transfer_memory", "--role", "measure", "--check-config", cfg_name,
           "--check-option", option_name, "--check-micro-batch", str(micro_batch), "--text-len", str(text_len)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# Report.


def _gib(b: int) -> str:
    g = b / GIB
    return f"{g:.2f}" if g >= 0.1 or g == 0 else f"{g:.2g}"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Transfer memory per device (XLA's compiled training step)", "",
        f"{m['date']}; {m['cpu']} ({m['cores']} cores), jax {m['jax']} ({m['jax_backend']} backend); "
        f"`python -m benchmarks.transfer_memory {' '.join(res['argv'])}`".rstrip() + ".", "",
        f"One optimizer step of `pgbench transfer` (suffix loss, big_vision's optimizer, "
        f"`--remat {res['remat']}`), micro-batch m examples of {res['text_len']} text tokens "
        "plus the image tokens, compiled from abstract inputs; figures from "
        "`compiled.memory_analysis()`, GiB (2^30 bytes). peak = parameters + optimizer state + "
        "batch (arguments) + temporaries + outputs not donated. grads = one gradient per trained "
        "parameter in its dtype; other = peak - params - grads - optimizer state (activations "
        "kept for the backward pass, update buffers, workspace). Rows marked * are computed, not "
        "compiled (LoRA: see below). XLA-CPU buffer assignment; XLA on a GPU assigns its own.", "",
        "| preset | option | m | params | trained | params GiB | grads GiB | opt state GiB | temp GiB "
        "| other GiB | **peak GiB** |",
        "| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: |"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['option']} | {r['micro_batch']} | error: {r['error']} |")
            continue
        star = "*" if r["computed"] else ""
        lines.append(
            f"| {r['preset']} | {r['option']}{star} | {r['micro_batch']} | {_count(r['params'])} "
            f"| {_count(r['trainable_params'])} | {_gib(r['params_bytes'])} | {_gib(r['grads_bytes'])} "
            f"| {_gib(r['opt_state_bytes'])} | {_gib(r['temp_bytes'])} | {_gib(r['other_bytes'])} "
            f"| **{_gib(r['peak_bytes'])}** |")
    if res.get("accumulation"):
        lines += ["", "Gradient accumulation (`--micro-batch m`, K = batch / m micro-batches per step): "
                  "the step keeps a float32 gradient sum beside the micro-batch's gradient.", "",
                  "| preset | option | m | K | peak GiB | K = 1 peak GiB |", "| --- | --- | --: | --: | --: | --: |"]
        for r in res["accumulation"]:
            lines.append(f"| {r['preset']} | {r['option']} | {r['micro_batch']} | {r['accum']} "
                         f"| {_gib(r['peak_bytes'])} | {_gib(r['k1_peak_bytes'])} |")
    if res.get("lora_rank"):
        lines += ["", f"*LoRA rank {res['lora_rank']} rows are computed: pgbench has no LoRA yet. Each is the "
                  "compiled step of a proxy that freezes every parameter except the decoder layers' "
                  "pre-attention norm scales (so the backward pass runs through every decoder layer, as "
                  "LoRA's, but not through SigLIP), with the proxy's trained scales swapped for rank-R "
                  "adapters on q, k, v, attn_out, gate, up, down of every decoder layer: R x (d_in + d_out) "
                  "float32 parameters each, their float32 gradients and two float32 Adam moments. The "
                  "adapters' own activations (m x tokens x R per projection) are not counted."]
    c = res.get("check")
    if c:
        lines += ["", "## Check: a real step measured",
                  "", f"`{c['config']}` ({c['params'] / 1e6:.0f}M parameters), {c['option']}, micro-batch "
                  f"{c['micro_batch']}: the executable compiled from abstract inputs run on real arrays; the "
                  "process's resident memory rose by "
                  f"{c['measured_rise_bytes'] / 2**20:.0f} MiB during the step (high-water mark over the "
                  f"resident set before it) against the compiled {c['predicted_rise_bytes'] / 2**20:.0f} MiB "
                  f"(temporaries + non-donated outputs): ratio {c['measured_rise_bytes'] / c['predicted_rise_bytes']:.3f}. "
                  f"Arguments held before the step: {c['argument_bytes'] / 2**20:.0f} MiB compiled, "
                  f"resident set {c['rss_before_bytes'] / 2**20:.0f} MiB (with the Python process and jax)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=RELEASED)
    ap.add_argument("--options", nargs="+", default=None, help="default: all (see the module docstring)")
    ap.add_argument("--micro-batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--accum", type=int, default=4, help="K for the accumulation table (0: none)")
    ap.add_argument("--text-len", type=int, default=64)
    ap.add_argument("--lora-rank", type=int, default=16, help="0: no LoRA rows")
    ap.add_argument("--remat", default="nothing_saveable")
    ap.add_argument("--check-config", default="train-mid", help="config of the real measured step ('' skips)")
    ap.add_argument("--check-option", default="full-f32")
    ap.add_argument("--check-micro-batch", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny presets, a small check config")
    ap.add_argument("--out", default=str(RESULTS / "transfer_memory"))
    ap.add_argument("--role", default="run", choices=["run", "measure"])
    args = ap.parse_args(argv)
    if args.role == "measure":
        print(json.dumps(measure_real_step(args.check_config, args.check_option, args.check_micro_batch,
                                           args.text_len)))
        return 0
    if args.quick:
        # micro-batch 32 for the check: a rise of ~140 MiB, well above the allocator's noise
        args.presets, args.micro_batches, args.check_config = ["pg1-tiny"], [1], "pg1-tiny"
        args.check_micro_batch = 32
        args.options = args.options or ["full-f32", f"lora-r{args.lora_rank}-bf16" if args.lora_rank else "full-bf16"]
    import jax

    remat = None if args.remat == "none" else args.remat
    opts = options(args.lora_rank)
    chosen = [opts[o] for o in (args.options or opts)]
    res = {"machine": machine.describe(), "argv": list(argv if argv is not None else sys.argv[1:]),
           "remat": args.remat, "text_len": args.text_len, "lora_rank": args.lora_rank,
           "load_before": load_average(), "rows": [], "accumulation": []}
    for name in args.presets:
        cfg = get_config(name)
        for opt in chosen:
            for mb in args.micro_batches:
                try:
                    row = step_memory(cfg, opt, micro_batch=mb, text_len=args.text_len, remat=remat)
                except Exception as e:  # noqa: BLE001 - one failed compile must not lose the table
                    row = {"preset": name, "option": opt.name, "micro_batch": mb, "error": f"{type(e).__name__}: {e}"}
                res["rows"].append(row)
                print(f"[transfer_memory] {name} {opt.name} m={mb}: "
                      f"{row.get('peak_bytes', 0) / GIB:.2f} GiB ({row.get('compile_s', '-')} s)",
                      file=sys.stderr, flush=True)
                jax.clear_caches()
        if args.accum > 1 and (name.endswith("-224") or args.quick):
            k1 = next(r for r in res["rows"] if r["preset"] == name and r["option"] == chosen[0].name
                      and r["micro_batch"] == args.micro_batches[0])
            acc = step_memory(cfg, chosen[0], micro_batch=args.micro_batches[0], accum=args.accum,
                              text_len=args.text_len, remat=remat)
            res["accumulation"].append({**acc, "k1_peak_bytes": k1["peak_bytes"]})
    if args.check_config:
        res["check"] = measure_in_subprocess(args.check_config, args.check_option, args.check_micro_batch,
                                             args.text_len)
    res["load_after"] = load_average()
    write_results(Path(args.out), res, markdown(res))
    return 1 if any("error" in r for r in res["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
