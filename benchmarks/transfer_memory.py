"""Memory per device that transfer needs at each released PaliGemma size, as XLA compiles it.

For every preset x memory option x micro-batch, the training step ``pgbench transfer`` runs
(``train_step.make_train_step``: suffix loss, big_vision's optimizer chain from ``optim``,
``--remat nothing_saveable``, one micro-batch per pass, the layers in the stacked
``lax.scan`` form that transfer runs on accelerators and meshes) is lowered and compiled for this
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
- ``lora-r<R>-f32`` / ``lora-r<R>-bf16``: ``--lora-rank R`` (``pgbench.lora``: rank-R adapters
  on every decoder projection, float32, the whole base model frozen; with ``--param-dtype``
  for the base).

Figures are XLA-CPU's buffer assignment on one device. XLA's GPU backend assigns buffers
with its own fusion and scheduling, so its figures differ (not measured here: no GPU); use
them as an estimate for accelerators, not a guarantee. With ``--mesh fsdp=N`` parameters, gradients and optimizer state divide by about
N per device, activations do not (each device holds its share of the batch).

    python -m benchmarks.transfer_memory            # 12 presets x 6 options x micro-batch 1, 8 (42 min here)
    python -m benchmarks.transfer_memory --resume   # go on after a kill (rows are saved per preset)
    python -m benchmarks.transfer_memory --quick --out DIR   # pg1-tiny + the measurement (a minute)

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
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.common import load_average, write_results

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 2**30
RELEASED = [f"{family}-{size}-{res}" for res in (224, 448, 896)
            for family, size in (("pg1", "3b"), ("pg2", "3b"), ("pg2", "10b"), ("pg2", "28b"))]


@dataclasses.dataclass(frozen=True)
class Option:
    """A memory option: the ``pgbench transfer`` flags it stands for and how to build its step."""

    name: str
    param_dtype: str
    freeze: tuple[str, ...] = ()
    lora_rank: int = 0  # > 0: --lora-rank (adapters on every decoder projection, base frozen)

    @property
    def flags(self) -> str:
        out = [f"--param-dtype {self.param_dtype}"] if self.param_dtype != "float32" else []
        out += [f"--freeze {f}" for f in self.freeze]
        if self.lora_rank:
            out.append(f"--lora-rank {self.lora_rank}")
        return " ".join(out) or "(defaults)"


def options(lora_rank: int = 16) -> dict[str, Option]:
    opts = [Option("full-f32", "float32"), Option("full-bf16", "bfloat16"),
            Option("freeze-img-f32", "float32", ("img",)), Option("freeze-img-bf16", "bfloat16", ("img",))]
    if lora_rank:
        opts += [Option(f"lora-r{lora_rank}-{s}", d, lora_rank=lora_rank)
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


def partition(model, option: Option, *, abstract: bool = True):
    """(trainable, frozen) as ``run_transfer`` splits them: the base frozen and fresh adapters
    attached under ``--lora-rank`` (seed 0), else the ``--freeze`` patterns. The masks tell
    arrays from static fields with ``eqx.is_array``, so they read the names off scalar stand-ins."""
    import equinox as eqx
    import jax

    from pgbench import lora, optim
    from pgbench.train import LORA_KEY

    if option.lora_rank:
        spec = lora.make_spec(option.lora_rank)
        key = jax.random.fold_in(jax.random.key(0), LORA_KEY)
        model = (jax.eval_shape(lambda m: lora.attach(m, spec, key), model) if abstract
                 else lora.attach(model, spec, key))
    stand_in = jax.tree.map(lambda a: np.zeros((), a.dtype), model)
    mask = lora.trainable_mask(stand_in) if option.lora_rank else optim.trainable_mask(stand_in, option.freeze)
    return model, eqx.partition(model, mask)


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

    model, (trainable, frozen) = partition(abstract_model(cfg, option.param_dtype), option)
    tx, schedule = optim.bigvision_optimizer(trainable, lr=1e-5, wd=wd, total_steps=1000)
    opt_state = jax.eval_shape(tx.init, trainable)
    # The stacked (lax.scan) form: what transfer runs on an accelerator and on any mesh (on one
    # CPU device LossConfig's "auto" runs the layers unrolled, whose memory differs).
    step_fn = make_train_step(tx, schedule, lr=1e-5, lcfg=LossConfig(remat=remat, layers="stacked"), seed=0)
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
    """Parameters of rank-``rank`` adapters (A: r x d_in, B: d_out x r) on every decoder
    layer's q, k, v, attn_out, gate, up and down projections (a formula, for extrapolating)."""
    llm = cfg.llm
    d, q, kv, f = llm.width, llm.num_heads * llm.head_dim, llm.num_kv_heads * llm.head_dim, llm.mlp_dim
    dims = {"q": (d, q), "k": (d, kv), "v": (d, kv), "attn_out": (q, d), "gate": (d, f), "up": (d, f),
            "down": (f, d)}
    return llm.depth * rank * sum(a + b for a, b in dims.values())


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
           "peak_bytes": peak, "compile_s": round(compile_s, 2)}
    row["other_bytes"] = row["peak_bytes"] - row["params_bytes"] - row["grads_bytes"] - row["opt_state_bytes"]
    return row


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
    _, (trainable, frozen) = partition(model, option, abstract=False)
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


def summary(rows: list[dict]) -> list[str]:
    """Peak GiB per device, one table per micro-batch: presets down, options across."""
    ok = [r for r in rows if "error" not in r]
    opts = list(dict.fromkeys(r["option"] for r in ok))
    peak = {(r["preset"], r["option"], r["micro_batch"]): r["peak_bytes"] for r in ok}
    out = []
    for mb in dict.fromkeys(r["micro_batch"] for r in ok):
        out += ["", f"Peak GiB per device, micro-batch {mb}:", "",
                "| preset | " + " | ".join(opts) + " |", "| --- |" + " --: |" * len(opts)]
        for preset in dict.fromkeys(r["preset"] for r in ok):
            cells = [_gib(peak[(preset, o, mb)]) if (preset, o, mb) in peak else "-" for o in opts]
            out.append(f"| {preset} | " + " | ".join(cells) + " |")
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Transfer memory per device (XLA's compiled training step)", "",
        f"{m['date']}; {m['cpu']} ({m['cores']} cores), jax {m['jax']} ({m['jax_backend']} backend); "
        + (f"`XLA_FLAGS={m['xla_flags']}` " if m.get("xla_flags") else "")
        + f"`python -m benchmarks.transfer_memory {' '.join(map(shlex.quote, res['argv']))}`"
        + ".", "",
        f"One optimizer step of `pgbench transfer` (suffix loss, big_vision's optimizer, "
        f"`--remat {res['remat']}`), micro-batch m examples of {res['text_len']} text tokens "
        "plus the image tokens, compiled from abstract inputs; figures from "
        "`compiled.memory_analysis()`, GiB (2^30 bytes). peak = parameters + optimizer state + "
        "batch (arguments) + temporaries + outputs not donated. grads = one gradient per trained "
        "parameter in its dtype; other = peak - params - grads - optimizer state (activations "
        "kept for the backward pass, update buffers, workspace). XLA-CPU buffer assignment; XLA "
        "on a GPU assigns its own.",
    ] + summary(res["rows"]) + [
        "", "Every figure:", "",
        "| preset | option | m | params | trained | params GiB | grads GiB | opt state GiB | temp GiB "
        "| other GiB | **peak GiB** |",
        "| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: |"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['option']} | {r['micro_batch']} | error: {r['error']} |")
            continue
        lines.append(
            f"| {r['preset']} | {r['option']} | {r['micro_batch']} | {_count(r['params'])} "
            f"| {_count(r['trainable_params'])} | {_gib(r['params_bytes'])} | {_gib(r['grads_bytes'])} "
            f"| {_gib(r['opt_state_bytes'])} | {_gib(r['temp_bytes'])} | {_gib(r['other_bytes'])} "
            f"| **{_gib(r['peak_bytes'])}** |")
    if res.get("accumulation"):
        lines += ["", "Gradient accumulation (`--micro-batch m`, K = batch / m micro-batches per step, "
                  "scanned; the gradient sum is carried in float32):", "",
                  "| preset | option | m | K | peak GiB | K = 1 peak GiB |", "| --- | --- | --: | --: | --: | --: |"]
        for r in res["accumulation"]:
            lines.append(f"| {r['preset']} | {r['option']} | {r['micro_batch']} | {r['accum']} "
                         f"| {_gib(r['peak_bytes'])} | {_gib(r['k1_peak_bytes'])} |")
    if res.get("lora_rank"):
        lines += ["", f"LoRA rows: `--lora-rank {res['lora_rank']}` (alpha = rank), adapters on q, k, v, "
                  "attn_out, gate, up, down of every decoder layer, float32 (with their gradients and "
                  "Adam moments); the base model frozen in the row's dtype."]
    c = res.get("check")
    if c:
        lines += ["", "## Check: a real step measured",
                  "", f"`{c['config']}` ({c['params'] / 1e6:.0f}M parameters), {c['option']}, micro-batch "
                  f"{c['micro_batch']}: the executable compiled from abstract inputs run on real arrays; the "
                  "process's resident memory rose by "
                  f"{c['measured_rise_bytes'] / 2**20:.0f} MiB (high-water mark during the second step over the "
                  f"resident set before the first) against the compiled {c['predicted_rise_bytes'] / 2**20:.0f} MiB "
                  f"(temporaries + non-donated outputs): ratio {c['measured_rise_bytes'] / c['predicted_rise_bytes']:.3f}. "
                  f"Arguments held before the step: {c['argument_bytes'] / 2**20:.0f} MiB compiled, "
                  f"resident set {c['rss_before_bytes'] / 2**20:.0f} MiB (with the Python process and jax)."]
    return "\n".join(lines) + "\n"


def _save(stem: Path, res: dict) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    stem.with_suffix(".md").write_text(markdown(res))


def _earlier_rows(stem: Path, res: dict) -> dict:
    """Rows of an earlier (killed) run into ``stem``.json, by (preset, option, m, K), when it
    compiled with the same jax, remat and text length."""
    path = stem.with_suffix(".json")
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if (old["machine"]["jax"], old["remat"], old["text_len"]) != (res["machine"]["jax"], res["remat"],
                                                                   res["text_len"]):
        return {}
    return {(r["preset"], r["option"], r["micro_batch"], r.get("accum", 1)): r
            for r in old["rows"] + old.get("accumulation", []) if "error" not in r}


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
    ap.add_argument("--resume", action="store_true",
                    help="reuse the rows of --out's .json (same jax, remat, text length)")
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
    done = _earlier_rows(Path(args.out), res) if args.resume else {}

    def measured(cfg, opt, mb, accum=1):
        key = (cfg.name, opt.name, mb, accum)
        if key in done:
            return done[key]
        try:
            row = step_memory(cfg, opt, micro_batch=mb, accum=accum, text_len=args.text_len, remat=remat)
        except Exception as e:  # noqa: BLE001 - one failed compile must not lose the table
            row = {"preset": cfg.name, "option": opt.name, "micro_batch": mb, "accum": accum,
                   "error": f"{type(e).__name__}: {e}"}
        print(f"[transfer_memory] {cfg.name} {opt.name} m={mb} K={accum}: "
              f"{row.get('peak_bytes', 0) / GIB:.2f} GiB ({row.get('compile_s', '-')} s)",
              file=sys.stderr, flush=True)
        jax.clear_caches()
        return row

    for name in args.presets:
        cfg = get_config(name)
        for opt in chosen:
            for mb in args.micro_batches:
                res["rows"].append(measured(cfg, opt, mb))
        if args.accum > 1 and (name.endswith("-224") or args.quick):
            k1 = res["rows"][-len(chosen) * len(args.micro_batches)]  # first option, first micro-batch
            acc = measured(cfg, chosen[0], args.micro_batches[0], args.accum)
            res["accumulation"].append({**acc, "k1_peak_bytes": k1.get("peak_bytes", 0)})
        _save(Path(args.out), res)  # a killed run resumes from here with --resume
    if args.check_config:
        res["check"] = measure_in_subprocess(args.check_config, args.check_option, args.check_micro_batch,
                                             args.text_len)
    res["load_after"] = load_average()
    write_results(Path(args.out), res, markdown(res))
    return 1 if any("error" in r for r in res["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
