"""Training-step benchmark on the CPU: pgbench's jitted step against a transformers step.

One optimizer step = forward + backward + update on a batch of (image, prefix, suffix)
examples, the loss on the suffix (and EOS) only, per-example mean then batch mean
(big_vision's). Both sides start from the very same weights (seeded numpy streams,
``pgbench.checkpoints.random_params``; transformers reads a Hugging Face directory written
by pgbench's own writer), see the same batch and run at the same dtype:

- pgbench: ``train_step.make_train_step`` with big_vision's optimizer (``optim``: clip 1.0 ->
  Adam -> lr -> cosine schedule; float32 optimizer state), the model ``stacked`` as
  ``pgbench transfer`` holds it, run in the layer form ``--layers`` (default auto: per layer
  on one CPU device, as ``pgbench transfer`` runs it), ``--remat`` (default none, as
  transformers' default);
- transformers: ``PaliGemmaForConditionalGeneration`` in ``train()`` mode, logits kept for
  the text positions only (``logits_to_keep``), the same suffix loss written in torch,
  ``clip_grad_norm_(1.0)`` and ``torch.optim.AdamW`` (torch's defaults otherwise; its state
  has the parameters' dtype).

"bfloat16" means bfloat16 parameters and activations on both sides. Both processes tell glibc
to keep freed host memory for the next step (``pgbench.host_memory``, as ``pgbench transfer``
does): an allocator setting, not part of either library, so neither side pays page faults
the other is spared.

Each side is ONE process per dtype that builds its model, compiles / warms up with one
step, then waits for orders: the driver alternates single timed steps between the two
processes (pgbench, transformers, pgbench, ...), so load from other processes hits both
sides alike, and asks each for a dense GEMM probe at the model's MLP shapes and dtype
(forward x·Wᵀ, backward dY·W and dYᵀ·X) before and after the steps: the matmul rate of the
same process, in the same minutes. The load average is recorded around every step.

FLOPs per step (stated, not measured): 3 x the forward's matrix products
(``benchmarks.flops``: SigLIP + Gemma over image + text positions, logits at the text
positions), i.e. backward = 2 x forward; norms, softmax, the optimizer update and any
rematerialised recomputation are not counted.

    python -m benchmarks.train_cpu            # train-mid (~130M params), batch 2: a few minutes
    python -m benchmarks.train_cpu --quick --out DIR/train   # pg1-tiny: seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.common import load_average, peer_missing, summarize, write_results
from benchmarks.flops import gemma_flops, siglip_flops

RESULTS = Path(__file__).resolve().parent / "results"
MODULE = "benchmarks.train_cpu"
MARK = "@@train_cpu "  # prefix of the workers' reply lines (libraries may print too)


def get_config(name: str):
    """A preset, or ``train-mid``: SigLIP 384 wide x 4 layers at 224 px (256 image tokens),
    Gemma-1 1024 wide x 6 layers (8 heads of 128, one KV head, MLP 4096), 32768-token
    vocabulary; about 130M parameters, the decoder's matmuls dominating a step."""
    from pgbench.config import PaliGemmaConfig, SigLIPConfig, GemmaConfig, get_preset

    if name != "train-mid":
        return get_preset(name)
    return PaliGemmaConfig(
        name="train-mid",
        vision=SigLIPConfig(width=384, depth=4, mlp_dim=1536, num_heads=6, patch_size=14, image_size=224),
        llm=GemmaConfig(family="gemma1", width=1024, depth=6, num_heads=8, num_kv_heads=1, head_dim=128,
                        mlp_dim=4096, vocab_size=32768))


def param_count(cfg) -> int:
    from pgbench.checkpoints.bigvision_layout import expected_shapes

    return int(sum(np.prod(s) for s in expected_shapes(cfg).values()))


def make_batch(cfg, batch: int, prefix: int, suffix: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch as ``pgbench transfer`` feeds it: images f32[B, H, W, 3] in [-1, 1]; tokens
    i32[B, T] = [BOS, prefix - 2 tokens, "\\n", suffix - 1 tokens, EOS] (T = prefix + suffix);
    input_mask all True; mask_ar 0 on the prefix, 1 on the suffix; mask_loss 1 on the suffix."""
    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size
    hi = min(cfg.llm.vocab_size, 256000)
    tokens = np.concatenate([np.full((batch, 1), 2), rng.integers(3, hi, (batch, prefix - 2)),
                             np.full((batch, 1), 108 % hi), rng.integers(3, hi, (batch, suffix - 1)),
                             np.full((batch, 1), 1)], axis=1).astype(np.int32)
    is_suffix = np.arange(prefix + suffix) >= prefix
    return {"images": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
            "tokens": tokens,
            "input_mask": np.ones(tokens.shape, bool),
            "mask_ar": np.broadcast_to(is_suffix, tokens.shape).astype(np.int32),
            "mask_loss": np.broadcast_to(is_suffix, tokens.shape).astype(np.int32)}


def step_flops(cfg, batch: int, text: int) -> int:
    """3 x the forward's matrix products; the model reads T - 1 text tokens (the last is
    only a target) and projects those T - 1 positions to the vocabulary."""
    seq = cfg.num_image_tokens + text - 1
    return 3 * (siglip_flops(cfg, batch) + gemma_flops(cfg, seq, batch, logits_positions=text - 1))


def gemm_shapes(cfg, batch: int, text: int) -> dict[str, tuple[int, int, int]]:
    """The decoder MLP's training products as (M, K, N) of an [M, K] x [K, N] product."""
    rows, d, f = batch * (cfg.num_image_tokens + text - 1), cfg.llm.width, cfg.llm.mlp_dim
    return {"forward x.W^T": (rows, d, f), "backward dY.W": (rows, f, d), "backward dY^T.X": (f, rows, d)}


def _probe_flops(cfg, batch: int, text: int) -> int:
    return sum(2 * m * k * n for m, k, n in gemm_shapes(cfg, batch, text).values())


# ----------------------------------------------------------------------------------------------
# Workers: one process per side and dtype, steered through stdin.


def _probe(matmul, shapes, repeats: int = 5) -> dict:
    """Best-of-``repeats`` seconds per shape and the rate over all of them: FLOPs / sum of seconds."""
    secs = {}
    for name, (m, k, n) in shapes.items():
        run = matmul(m, k, n)
        run()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
        secs[name] = best
    flops = sum(2 * m * k * n for m, k, n in shapes.values())
    return {"gflops": flops / sum(secs.values()) / 1e9, "seconds": secs}


class PgbenchSide:
    def __init__(self, args):
        import equinox as eqx
        import jax
        import jax.numpy as jnp

        from pgbench import optim
        from pgbench.checkpoints.bigvision_layout import from_bigvision_params
        from pgbench.checkpoints.random_params import RandomParams
        from pgbench.train_step import LossConfig, make_train_step, split_micro_batches

        self.jax, self.jnp = jax, jnp
        cfg = get_config(args.preset)
        self.cfg, self.args = cfg, args
        self.dtype = jnp.dtype(args.dtype)
        model = from_bigvision_params(RandomParams(cfg, args.seed), cfg, dtype=self.dtype, stacked=True)
        self.trainable, self.frozen = eqx.partition(model, optim.trainable_mask(model, ()))
        del model
        tx, schedule = optim.bigvision_optimizer(self.trainable, lr=1e-5, wd=0.0, total_steps=1000)
        self.opt_state = tx.init(self.trainable)
        remat = None if args.remat == "none" else args.remat
        self.step_fn = make_train_step(tx, schedule, lr=1e-5, lcfg=LossConfig(remat=remat, layers=args.layers),
                                       seed=args.seed)
        host = make_batch(cfg, args.batch, args.prefix, args.suffix, args.seed)
        self.batch = jax.tree.map(jnp.asarray, split_micro_batches(host, args.batch))
        self.n = 0

    def step(self) -> float:
        self.trainable, self.opt_state, m = self.step_fn(self.trainable, self.frozen, self.opt_state,
                                                         self.batch, self.jnp.int32(self.n + 100))
        self.n += 1
        return float(m["loss"])  # waits for the step

    def probe(self) -> dict:
        jax, jnp = self.jax, self.jnp
        rng = np.random.default_rng(0)
        f32 = self.dtype == jnp.float32

        def matmul(m, k, n):
            a = jnp.asarray(rng.standard_normal((m, k), np.float32), self.dtype)
            b = jnp.asarray(rng.standard_normal((k, n), np.float32), self.dtype)
            # float32 results: what lets XLA's CPU backend use its fast bf16 kernels (ops.dense)
            f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=None if f32 else jnp.float32))
            return lambda: f(a, b).block_until_ready()
        return _probe(matmul, gemm_shapes(self.cfg, self.args.batch, self.args.prefix + self.args.suffix))

    def info(self) -> dict:
        import jax
        from pgbench.train_step import LossConfig, runs_per_layer
        per_layer = runs_per_layer(self.trainable, LossConfig(layers=self.args.layers))
        return {"jax": jax.__version__, "remat": self.args.remat,
                "layers": "per layer" if per_layer else "stacked (lax.scan)"}


class TransformersSide:
    def __init__(self, args):
        import torch
        import transformers

        self.torch = torch
        cfg = get_config(args.preset)
        self.cfg, self.args = cfg, args
        self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
        torch.manual_seed(args.seed)
        hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(args.hf_dir, dtype=self.dtype)
        self.hf = hf.train()
        self.opt = torch.optim.AdamW(hf.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        b = make_batch(cfg, args.batch, args.prefix, args.suffix, args.seed)
        n_img = cfg.num_image_tokens
        fed = b["tokens"][:, :-1]
        self.ids = torch.from_numpy(np.concatenate(
            [np.full((args.batch, n_img), hf.config.image_token_id), fed], 1).astype(np.int64))
        self.token_type = torch.from_numpy(np.concatenate(
            [np.zeros((args.batch, n_img)), b["mask_ar"][:, :-1]], 1).astype(np.int64))
        self.pixels = torch.from_numpy(b["images"].transpose(0, 3, 1, 2).copy()).to(self.dtype)
        self.targets = torch.from_numpy(b["tokens"][:, 1:].astype(np.int64))
        self.weights = torch.from_numpy(b["mask_loss"][:, 1:].astype(np.float32))
        self.n_text = fed.shape[1]

    def loss(self):
        torch = self.torch
        out = self.hf(input_ids=self.ids, pixel_values=self.pixels, token_type_ids=self.token_type,
                      attention_mask=torch.ones_like(self.ids), use_cache=False, logits_to_keep=self.n_text)
        logp = torch.log_softmax(out.logits.float(), dim=-1)  # [B, T-1, V], text positions only
        nll = -logp.gather(-1, self.targets[..., None])[..., 0]
        per_example = (nll * self.weights).sum(-1) / self.weights.sum(-1).clamp(min=1.0)
        return per_example.mean()

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.hf.parameters(), 1.0)
        self.opt.step()
        return float(loss.detach())

    def probe(self) -> dict:
        torch = self.torch
        rng = np.random.default_rng(0)

        def matmul(m, k, n):
            a = torch.from_numpy(rng.standard_normal((m, k), np.float32)).to(self.dtype)
            b = torch.from_numpy(rng.standard_normal((k, n), np.float32)).to(self.dtype)
            return lambda: torch.mm(a, b)
        with torch.no_grad():
            return _probe(matmul, gemm_shapes(self.cfg, self.args.batch, self.args.prefix + self.args.suffix))

    def info(self) -> dict:
        import transformers
        return {"torch": self.torch.__version__, "transformers": transformers.__version__,
                "torch_threads": self.torch.get_num_threads(),
                "attn_implementation": self.hf.config._attn_implementation}


def role_write_hf(args) -> None:
    from pgbench.checkpoints import write_hf_dir
    from pgbench.checkpoints.random_params import RandomParams

    cfg = get_config(args.preset)
    write_hf_dir(RandomParams(cfg, args.seed), cfg, args.hf_dir)


def serve(args) -> None:
    """Build the side, run one warm-up (compiling) step, then obey stdin: step | probe | quit."""
    def reply(obj):
        sys.stdout.write(MARK + json.dumps(obj) + "\n")
        sys.stdout.flush()

    # Both sides, before their libraries start threads (pgbench transfer does the same).
    from pgbench.host_memory import keep_freed_memory
    kept = keep_freed_memory()
    t0 = time.perf_counter()
    side = (PgbenchSide if args.role == "pgbench" else TransformersSide)(args)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first_loss = side.step()
    reply({"ready": True, "build_s": build_s, "first_step_s": time.perf_counter() - t0,
           "first_loss": first_loss, **side.info(), **({"keeps_freed_memory": kept} if kept else {})})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            t = time.perf_counter()
            loss = side.step()
            reply({"step_s": time.perf_counter() - t, "loss": loss})
        elif cmd == "probe":
            reply(side.probe())
        elif cmd == "quit":
            return


class Worker:
    """A side's process, talking one line at a time."""

    def __init__(self, args, role: str, dtype: str, hf_dir: str | None, log_dir: str):
        cmd = [sys.executable, "-m", MODULE, "--role", role, "--dtype", dtype, "--preset", args.preset,
               "--batch", str(args.batch), "--prefix", str(args.prefix), "--suffix", str(args.suffix),
               "--seed", str(args.seed), "--remat", args.remat, "--layers", args.layers]
        if hf_dir:
            cmd += ["--hf-dir", hf_dir]
        self.name = f"{role} {dtype}"
        self.stderr = open(Path(log_dir) / f"{role}-{dtype}.log", "w+")
        print(f"[{MODULE}] starting {self.name}", file=sys.stderr, flush=True)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, bufsize=1)

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.proc.wait()
        self.stderr.seek(0)
        tail = [x for x in self.stderr.read().strip().splitlines() if x.strip()]
        raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {tail[-1] if tail else ''}")

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.stderr.close()


# ----------------------------------------------------------------------------------------------
# Driver


def measure_dtype(args, dtype: str, hf_dir: str | None, log_dir: str) -> dict:
    """Both sides at one dtype: probes, ``repeats`` interleaved steps each, probes again."""
    workers = {"pgbench": Worker(args, "pgbench", dtype, None, log_dir)}
    if hf_dir:
        workers["transformers"] = Worker(args, "transformers", dtype, hf_dir, log_dir)
    sides: dict[str, dict] = {name: {"steps": [], "probes": []} for name in workers}
    try:
        for name, w in workers.items():  # both build and compile at once: nothing is timed yet
            try:
                sides[name]["setup"] = w.read()
            except RuntimeError as e:
                sides[name]["error"] = str(e)
        live = {n: w for n, w in workers.items() if "error" not in sides[n]}
        for name, w in live.items():
            sides[name]["probes"].append(w.ask("probe"))
        for r in range(args.repeats):
            for name, w in live.items():
                before = load_average()
                res = w.ask("step")
                sides[name]["steps"].append({**res, "round": r, "load_before": before,
                                             "load_after": load_average()})
        for name, w in live.items():
            sides[name]["probes"].append(w.ask("probe"))
    finally:
        for w in workers.values():
            w.close()
    return sides


def summarize_dtype(sides: dict, flops: int, tokens: int) -> dict:
    entry = {}
    for name, s in sides.items():
        times = [x["step_s"] for x in s["steps"]]
        if not times:
            entry[name] = {"error": s.get("error", "no steps")}
            continue
        e = summarize(times)
        e["tokens_per_s"] = tokens / e["median_s"]
        e["gflops"] = flops / e["median_s"] / 1e9
        rates = [p["gflops"] for p in s["probes"]]
        e["probe_gflops"] = float(np.median(rates))
        e["probe_gflops_all"] = rates
        e["of_own_probe"] = e["gflops"] / e["probe_gflops"]
        e["first_loss"] = s["setup"]["first_loss"]
        entry[name] = e
    probes = [e["probe_gflops"] for e in entry.values() if "probe_gflops" in e]
    for e in entry.values():
        if "gflops" in e:
            e["of_best_probe"] = e["gflops"] / max(probes)
    if "median_s" in entry.get("pgbench", {}) and "median_s" in entry.get("transformers", {}):
        entry["speedup"] = entry["transformers"]["median_s"] / entry["pgbench"]["median_s"]
        a, b = entry["pgbench"]["first_loss"], entry["transformers"]["first_loss"]
        entry["first_loss_rel_diff"] = abs(a - b) / abs(b)
    return entry


def run(args) -> dict:
    cfg = get_config(args.preset)
    text = args.prefix + args.suffix
    flops = step_flops(cfg, args.batch, text)
    tokens = args.batch * (cfg.num_image_tokens + text - 1)
    res = {"benchmark": "training step (forward + backward + optimizer update), loss on the suffix",
           "preset": args.preset, "config": dataclasses.asdict(cfg), "params": param_count(cfg),
           "batch": args.batch, "image_tokens": cfg.num_image_tokens, "prefix_tokens": args.prefix,
           "suffix_tokens": args.suffix, "tokens_per_step": tokens, "flops_per_step": flops,
           "flops_formula": "3 x forward matrix products (benchmarks.flops), image + T-1 text positions, "
                            "logits at T-1 text positions",
           "gemm_probe_shapes": {k: list(v) for k, v in gemm_shapes(cfg, args.batch, text).items()},
           "remat": args.remat, "layers": args.layers, "repeats": args.repeats, "machine": machine.describe(),
           "load_before": load_average(), "dtypes": {}, "raw": {}}
    # each side's warm-up and timed steps, and its GEMM probes (5 repeats of 3 products, twice)
    missing = {dtype: peer_missing(dtype, flops * (args.repeats + 1) + 10 * _probe_flops(cfg, args.batch, text))
               for dtype in args.dtypes}
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="pgbench-train-") as tmp:
        hf_dir = None
        if not all(missing.values()):  # no copy of the weights for a side that will not run
            hf_dir = f"{tmp}/hf"
            subprocess.run([sys.executable, "-m", MODULE, "--role", "write_hf", "--preset", args.preset,
                            "--seed", str(args.seed), "--hf-dir", hf_dir], check=True)
        for dtype in args.dtypes:
            sides = measure_dtype(args, dtype, None if missing[dtype] else hf_dir, tmp)
            res["raw"][dtype] = sides
            res["dtypes"][dtype] = summarize_dtype(sides, flops, tokens)
            if missing[dtype]:
                res["dtypes"][dtype]["transformers"] = {"error": missing[dtype]}
    res["load_after"] = load_average()
    best = {side: max((e[side]["tokens_per_s"] for e in res["dtypes"].values() if "tokens_per_s" in e.get(side, {})),
                      default=None) for side in ("pgbench", "transformers")}
    if best["pgbench"] and best["transformers"]:
        res["pgbench_best_over_transformers_best"] = best["pgbench"] / best["transformers"]
    return res


def _layer_forms(res: dict) -> str:
    """The layer form(s) pgbench's workers reported running."""
    forms = {v["pgbench"]["setup"].get("layers") for v in res["raw"].values()
             if "setup" in v.get("pgbench", {})}
    return ", ".join(sorted(f for f in forms if f)) or "not reported"


def _kept_memory(res: dict) -> bool:
    """Whether every side's process kept freed host memory (glibc mallopt)."""
    sides = [side for v in res["raw"].values() for side in v.values() if isinstance(side, dict) and "setup" in side]
    return bool(sides) and all(side["setup"].get("keeps_freed_memory") for side in sides)


def markdown(res: dict) -> str:
    m, c = res["machine"], res["config"]
    v, g = c["vision"], c["llm"]
    lines = [f"# Training step on the CPU: {res['preset']} ({res['params'] / 1e6:.4g}M parameters), batch "
             f"{res['batch']}, {res['image_tokens']} image + {res['prefix_tokens']} prefix + "
             f"{res['suffix_tokens']} suffix tokens", "",
             f"Model: SigLIP {v['width']} wide x {v['depth']} layers ({v['image_size']} px, patch {v['patch_size']}); "
             f"Gemma ({g['family']}) {g['width']} wide x {g['depth']} layers, {g['num_heads']} heads of {g['head_dim']}, "
             f"{g['num_kv_heads']} KV head(s), MLP {g['mlp_dim']}, vocabulary {g['vocab_size']}. Same random weights "
             f"and batch on both sides; loss on the suffix only; pgbench remat: {res['remat']}; pgbench layers: "
             f"{_layer_forms(res)} (--layers {res.get('layers', 'auto')})"
             + ("; each side's process keeps freed host memory (pgbench.host_memory, as pgbench transfer)"
                if _kept_memory(res) else "") + ".", "",
             machine.header(m, res), "",
             f"FLOPs per step: {res['flops_per_step'] / 1e9:.4g} GFLOP ({res['flops_formula']}); "
             f"{res['tokens_per_step']} tokens per step.", "",
             "GEMM probe: the decoder MLP's training products " + ", ".join(
                 f"{k} {'x'.join(map(str, s))}" for k, s in res["gemm_probe_shapes"].items())
             + " (M x K x N), timed in each side's own process before and after its steps, in its library "
             "and dtype; rate = their FLOPs / their summed best times.", "",
             f"Each side: one process per dtype; after a warm-up step, {res['repeats']} timed steps interleaved "
             "one for one with the other side's.", "",
             "| dtype (both sides) | side | median s | min s | max s | spread | tokens/s | GFLOP/s | GEMM probe GFLOP/s "
             "| of own probe | of best probe | speed-up (transformers s / pgbench s) | first loss |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for dtype, e in res["dtypes"].items():
        for side in ("pgbench", "transformers"):
            r = e.get(side, {})
            if "median_s" not in r:
                lines.append(f"| {dtype} | {side} | — | — | — | — | — | — | — | — | — | {r.get('error', '')} | — |")
                continue
            sp = f"{e['speedup']:.2f}x" if side == "pgbench" and "speedup" in e else ""
            lines.append(f"| {dtype} | {side} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
                         f"{r['spread']:.0%} | {r['tokens_per_s']:.0f} | {r['gflops']:.3g} | {r['probe_gflops']:.3g} | "
                         f"{r['of_own_probe']:.0%} | {r['of_best_probe']:.0%} | {sp} | {r['first_loss']:.5f} |")
    if "pgbench_best_over_transformers_best" in res:
        lines += ["", "pgbench's best dtype against transformers' best dtype (tokens/s): "
                  f"{res['pgbench_best_over_transformers_best']:.2f}x."]
    loads = [f"{dtype} {side} {s['load_before'][0]}->{s['load_after'][0]}"
             for dtype, sides in res["raw"].items() for side, v in sides.items() for s in v["steps"][:1]]
    all_loads = [x for sides in res["raw"].values() for v in sides.values() for s in v["steps"]
                 for x in (s["load_before"][:1] + s["load_after"][:1])]
    if all_loads:
        lines += ["", f"Load average (1 min) around the timed steps: {min(all_loads)} to {max(all_loads)} "
                  f"(first step of each side: {'; '.join(loads)}). The machine is shared: figures are indicative."]
    lines += ["", "Reproduce: `python -m benchmarks.train_cpu` (`make bench`)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["pgbench", "transformers", "write_hf"])
    ap.add_argument("--quick", action="store_true", help="pg1-tiny, 2 repeats (seconds)")
    ap.add_argument("--preset", default=None, help="train-mid (default) or a pgbench preset")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--prefix", type=int, default=16, help="prefix tokens (BOS .. separator)")
    ap.add_argument("--suffix", type=int, default=16, help="suffix tokens (answer + EOS)")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per side and dtype (default 7)")
    ap.add_argument("--remat", default="none", help="pgbench's per-layer remat policy (none, nothing_saveable, ...)")
    ap.add_argument("--layers", default="auto", choices=["auto", "stacked", "per_layer"],
                    help="the layer form pgbench's loss runs in (train_step.LossConfig.layers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", help="(one worker's dtype)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--hf-dir")
    ap.add_argument("--tmp-dir", default=os.environ.get("PGBENCH_BENCH_TMP"))
    ap.add_argument("--out", default=None, help="results file stem (default benchmarks/results/train_cpu_<preset>)")
    args = ap.parse_args(argv)
    args.preset = args.preset or ("pg1-tiny" if args.quick else "train-mid")
    args.repeats = args.repeats or (2 if args.quick else 7)
    if args.role == "write_hf":
        role_write_hf(args)
        return 0
    if args.role:
        serve(args)
        return 0
    res = run(args)
    write_results(Path(args.out) if args.out else RESULTS / f"train_cpu_{args.preset}", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
