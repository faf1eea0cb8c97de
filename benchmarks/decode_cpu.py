"""Decoding on the CPU at the real size: pgbench vs transformers `generate`, same dtype and batch.

For each preset (default pg1-3b-224 and pg2-3b-224), dtype (float32, bfloat16) and batch
(1, 8, 32): a 10-token prompt after the image, 16 new tokens, greedy, EOS disabled so every
row generates all of them; the same seeded random weights on both sides (transformers reads
an HF directory that pgbench wrote). The two sides run interleaved, one process each per
round (pgbench, transformers, pgbench, transformers, ...); the load average is recorded
before and after every process.

What is timed, per repeat, on both sides:
  - the decode loop itself, 15 steps (each feeds the previous token, reads all decoder
    weights once and picks the next token). pgbench: a jitted loop over `decode.step` and
    `decode._select`, the body of `decode.decode`'s while-loop, run on the cache its prefill
    left (the tokens are checked against `decode.decode`'s). transformers: the time between
    the first and the last call of a stopping criterion inside one `generate` call (it is
    called once per new token);
  - the prefill (image + prompt, first token): pgbench its jitted prefill; transformers
    `generate`'s start to its first new token;
  - end-to-end generation: transformers the whole `generate` call; pgbench prefill + loop.
Each process first runs one untimed generation at batch 1 (pgbench: at the smallest batch),
so neither side's first timed run pays its first-run costs (buffers, thread pools).

The read bound: every step reads every decoder weight once, so a step cannot take less
than (weight bytes at this dtype) / (read bandwidth), the bandwidth measured as decoding
reads (`benchmarks.read_bound`: all cores, read-only, a weight-sized buffer). A loop
measured faster than that bound is marked ABOVE BOUND in the results: either the bound or
the measurement is wrong, and the figure must not be quoted.

Both sides generate the same tokens (`tokens_head` in the results) except where the
semantics differ on purpose: pg2-tiny's 8-token sliding window, which transformers applies
to generated tokens and big_vision does not (reference_outputs/README.md); the real 3B
presets' window (4096) is longer than these sequences.

`--int8` adds a third interleaved side to the float32 tables: pgbench with weight-only int8
decoder weights (`--weights int8`, model/quantize.py), float32 activations, timed the same way,
with its own read bound (a quarter of the float32 weight bytes) and its speed-up against
pgbench float32 only: transformers' side keeps float32 weights, so setting int8 against it
would compare unlike things.

The results file is rewritten after every (preset, dtype) table; `--resume` keeps the tables
it already holds and measures the rest.

    python -m benchmarks.decode_cpu                                   # full (hours; quiet machine)
    python -m benchmarks.decode_cpu --presets pg1-tiny --batches 1 2 --rounds 1 --out DIR/decode  # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import machine, read_bound
from benchmarks.common import (interleaved, load_average, peer_missing, random_prompt, spawn, summarize,
                               write_results)
from benchmarks.flops import prefill_flops, weight_bytes_per_token

RESULTS = Path(__file__).resolve().parent / "results"
NEVER = -7  # an EOS id no token can equal: every row decodes all new tokens
MODULE = "benchmarks.decode_cpu"


def role_read_bound(args) -> dict:
    return read_bound.measure(args.bytes)


def decode_fns(steps: int):
    """(prefill, loop) as both pgbench sides time them, for ``steps`` new tokens.

    prefill(model, images, tokens) -> (state, first token i32[B]); loop(model, state, token)
    -> i32[B, steps]: ``decode.decode``'s while-loop body, greedy, no EOS, the ``steps - 1``
    further tokens fed one at a time on the cache the prefill left."""
    import jax
    import jax.numpy as jnp

    from pgbench import decode

    def prefill(model, images, tokens):
        mask, ar = jnp.ones_like(tokens, bool), jnp.zeros_like(tokens)
        state = decode.prefill(model, images, tokens, mask, ar, max_new_tokens=steps)
        return state, decode._select(state.logits, None, decode.Sampler())[0]

    def loop(model, state, tok):
        def body(i, carry):
            out, cache, tok = carry
            logits, cache = decode.step(model, state._replace(cache=cache), tok, i=i - 1)
            tok = decode._select(logits, None, decode.Sampler())[0]
            return jax.lax.dynamic_update_slice_in_dim(out, tok[:, None], i, 1), cache, tok

        out = jnp.zeros((tok.shape[0], steps), jnp.int32).at[:, 0].set(tok)
        return jax.lax.fori_loop(1, steps, body, (out, state.cache, tok))[0]

    return prefill, loop


def role_pgbench(args) -> dict:
    import jax
    import jax.numpy as jnp

    from pgbench.checkpoints.random_params import RandomParams
    from pgbench import decode
    from pgbench.config import get_preset
    from pgbench.checkpoints.bigvision_layout import from_bigvision_params
    from pgbench.model.quantize import quantize_decoder

    cfg = get_preset(args.preset)
    model = from_bigvision_params(RandomParams(cfg, args.seed), cfg, dtype=jnp.dtype(args.dtype),
                                  stacked=False)
    model = quantize_decoder(model, args.weights)
    steps = args.new_tokens
    prefill, loop = decode_fns(steps)

    prefill_j = jax.jit(prefill)
    loop_j = jax.jit(loop, donate_argnums=1)  # the cache is updated in place, as inside decode()
    res = {"batches": {}}
    jax.block_until_ready(model)  # its arrays may still be in flight (asynchronous dispatch)
    compiled = {}
    for batch in args.batches:
        images, tokens = (jnp.asarray(a) for a in random_prompt(cfg, batch, args.text_tokens))
        # Compile ahead (no warm-up run per batch: at batch 32 one prefill takes minutes).
        state_shape = jax.eval_shape(prefill, model, images, tokens)
        compiled[batch] = (images, tokens, prefill_j.lower(model, images, tokens).compile(),
                           loop_j.lower(model, *state_shape).compile())
    # One untimed generation at the smallest batch, as the transformers side's warm-up: the
    # first run of a program pays for its buffers' first touch, not for its arithmetic.
    images, tokens, pre_c, loop_c = compiled[min(args.batches)]
    state, tok = pre_c(model, images, tokens)
    loop_c(model, state, tok).block_until_ready()
    for batch in args.batches:
        images, tokens, pre_c, loop_c = compiled[batch]
        runs = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            state, tok = jax.block_until_ready(pre_c(model, images, tokens))
            t1 = time.perf_counter()
            out = loop_c(model, state, tok).block_until_ready()
            t2 = time.perf_counter()
            runs.append({"prefill_s": t1 - t0, "loop_s": t2 - t1, "generate_s": t2 - t0})
        entry = {"runs": runs, "tokens_head": np.asarray(out)[0, :8].tolist()}
        if batch == min(args.batches):  # the split loop generates what decode.decode generates
            mask, ar = jnp.ones_like(tokens, bool), jnp.zeros_like(tokens)
            ref = decode.decode(model, images, tokens, mask, ar, max_new_tokens=steps, eos_id=NEVER).tokens
            entry["same_tokens_as_decode"] = bool(np.array_equal(np.asarray(ref), np.asarray(out)))
        res["batches"][str(batch)] = entry
    return res


def role_write_hf(args) -> dict:
    from pgbench.checkpoints.random_params import RandomParams
    from pgbench.checkpoints import write_hf_dir
    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    t0 = time.perf_counter()
    write_hf_dir(RandomParams(cfg, args.seed), cfg, args.hf_dir)
    return {"write_s": time.perf_counter() - t0}


def role_transformers(args) -> dict:
    import torch
    import transformers

    from pgbench.config import get_preset

    cfg = get_preset(args.preset)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    hf = transformers.PaliGemmaForConditionalGeneration.from_pretrained(args.hf_dir, dtype=dtype).eval()

    class Clock(transformers.StoppingCriteria):
        """Called once per new token, right after it is chosen: timestamps every step."""

        def __init__(self):
            self.stamps = []

        def __call__(self, input_ids, scores, **kwargs):
            self.stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    def generate(batch: int, new_tokens: int):
        images, tokens = random_prompt(cfg, batch, args.text_tokens)
        ids = torch.from_numpy(np.concatenate([np.full((batch, cfg.num_image_tokens), hf.config.image_token_id),
                                               tokens], 1))
        kw = dict(input_ids=ids, pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(dtype),
                  token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids))
        clock = Clock()
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = hf.generate(**kw, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              pad_token_id=0, stopping_criteria=transformers.StoppingCriteriaList([clock]))
            t1 = time.perf_counter()
        assert len(clock.stamps) == new_tokens, (len(clock.stamps), new_tokens)
        run = {"prefill_s": clock.stamps[0] - t0, "loop_s": clock.stamps[-1] - clock.stamps[0],
               "generate_s": t1 - t0}
        return run, out[0, ids.shape[1]: ids.shape[1] + 8].tolist()

    generate(1, 2)  # warm-up: oneDNN primitives, allocator
    res = {"batches": {}, "torch_threads": torch.get_num_threads()}
    for batch in args.batches:
        runs = [generate(batch, args.new_tokens) for _ in range(args.repeats)]
        res["batches"][str(batch)] = {"runs": [r for r, _ in runs], "tokens_head": runs[-1][1]}
    return res


ROLES = {"read_bound": role_read_bound, "pgbench": role_pgbench, "write_hf": role_write_hf,
         "transformers": role_transformers}


def _summarize_side(rounds: list[dict], batch: str, batch_size: int, steps: int) -> dict:
    runs = [run for r in rounds for run in r.get("batches", {}).get(batch, {}).get("runs", [])]
    errors = [r["error"] for r in rounds if "error" in r]
    if not runs:
        return {"error": errors[0] if errors else "no runs"}
    out = {k: summarize([run[k] for run in runs]) for k in ("loop_s", "prefill_s", "generate_s")}
    out["loop_tokens_per_s"] = batch_size * (steps - 1) / out["loop_s"]["median_s"]
    out["step_s"] = out["loop_s"]["median_s"] / (steps - 1)
    out["generate_tokens_per_s"] = batch_size * steps / out["generate_s"]["median_s"]
    out["tokens_head"] = rounds[-1]["batches"][batch]["tokens_head"]
    same = [r["batches"][batch]["same_tokens_as_decode"] for r in rounds
            if "same_tokens_as_decode" in r.get("batches", {}).get(batch, {})]
    if same:
        out["same_tokens_as_decode"] = all(same)
    if errors:
        out["errors"] = errors
    return out


def _generate_flops(cfg, args) -> float:
    """Matrix FLOPs of one side's whole run: every batch, round and repeat generates
    ``new_tokens`` after the prompt (counted as a prefill over prompt + new tokens)."""
    return args.rounds * args.repeats * sum(
        prefill_flops(cfg, args.text_tokens + args.new_tokens, batch=b) for b in args.batches)


def _finish(res: dict) -> dict:
    res["load_after"] = load_average()
    res["above_read_bound"] = [f"{k} batch {b} {side}" for k, e in res["results"].items()
                               for b, row in e["batches"].items() for side, v in row.items()
                               if isinstance(v, dict) and v.get("above_read_bound")]
    return res


def run(args, save=None) -> dict:
    """All presets x dtypes; `save(res)` after each (preset, dtype), so a stopped run keeps
    what it measured, and `--resume` skips what the results file already holds."""
    from pgbench.config import get_preset

    common = dict(text_tokens=args.text_tokens, new_tokens=args.new_tokens, repeats=args.repeats, seed=args.seed)
    batches = " ".join(map(str, args.batches))
    res = {"benchmark": "decode loop and generate, pgbench vs transformers at the same dtype and batch",
           "new_tokens": args.new_tokens, "loop_steps": args.new_tokens - 1, "text_tokens": args.text_tokens,
           "rounds": args.rounds, "repeats_per_round": args.repeats, "machine": machine.describe(),
           "load_before": load_average(), "results": {}}
    if args.resume and Path(args.out).with_suffix(".json").exists():
        old = json.loads(Path(args.out).with_suffix(".json").read_text())
        same = all(old.get(k) == res[k] for k in ("new_tokens", "text_tokens", "rounds", "repeats_per_round"))
        res["results"] = {k: v for k, v in old.get("results", {}).items()
                          if same and set(map(str, args.batches)) <= set(v.get("batches", {}))}
    for preset in args.presets:
        # One HF copy of the weights on disk at a time (12 GB per 3B preset in float32).
        if all(f"{preset} {dtype}" in res["results"] for dtype in args.dtypes):
            continue
        with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="pgbench-decode-") as tmp:
            cfg = get_preset(preset)
            hf_dir = os.path.join(tmp, preset)
            missing = {dtype: peer_missing(dtype, _generate_flops(cfg, args))
                       for dtype in args.dtypes if f"{preset} {dtype}" not in res["results"]}
            if not all(missing.values()):  # no copy of the weights for a side that will not run
                spawn(MODULE, "write_hf", preset=preset, hf_dir=hf_dir, seed=args.seed)
            for dtype in args.dtypes:
                if f"{preset} {dtype}" in res["results"]:
                    continue
                wbytes = weight_bytes_per_token(cfg, 4 if dtype == "float32" else 2)
                bound = [spawn(MODULE, "read_bound", bytes=wbytes)]
                sides = {"pgbench": dict(role="pgbench", preset=preset, dtype=dtype, batches=batches, **common)}
                if args.int8 and dtype == "float32":  # weight-only int8 decoder, float32 activations
                    sides["pgbench int8"] = dict(sides["pgbench"], weights="int8")
                if not missing[dtype]:
                    sides["transformers"] = dict(role="transformers", preset=preset, dtype=dtype, batches=batches,
                                                 hf_dir=hf_dir, **common)
                rounds = interleaved(MODULE, sides, args.rounds)
                bound.append(spawn(MODULE, "read_bound", bytes=wbytes))
                rates = [b["bytes_per_s"] for b in bound if "bytes_per_s" in b]
                entry = {"weight_bytes_per_step": wbytes, "read_bound_runs": bound,
                         "raw_rounds": rounds, "batches": {}}
                bound_s = wbytes / max(rates) if rates else None
                entry["read_bound_s_per_step"] = bound_s
                if "pgbench int8" in sides:
                    entry["int8_weight_bytes_per_step"] = weight_bytes_per_token(cfg, 1)
                    entry["int8_read_bound_s_per_step"] = (entry["int8_weight_bytes_per_step"] / max(rates)
                                                           if rates else None)
                for b in args.batches:
                    row = {side: _summarize_side(rounds[side], str(b), b, args.new_tokens) for side in sides}
                    if missing[dtype]:
                        row["transformers"] = {"error": missing[dtype]}
                    p, t = row["pgbench"], row["transformers"]
                    if "loop_s" in p and "loop_s" in t:
                        row["loop_speedup"] = t["loop_s"]["median_s"] / p["loop_s"]["median_s"]
                        row["generate_speedup"] = t["generate_s"]["median_s"] / p["generate_s"]["median_s"]
                        row["prefill_speedup"] = t["prefill_s"]["median_s"] / p["prefill_s"]["median_s"]
                    q = row.get("pgbench int8", {})
                    if "loop_s" in q and "loop_s" in p:  # against float32 weights only: like with like
                        q["loop_speedup_vs_float"] = p["loop_s"]["median_s"] / q["loop_s"]["median_s"]
                        q["generate_speedup_vs_float"] = p["generate_s"]["median_s"] / q["generate_s"]["median_s"]
                        q["same_tokens_as_float"] = q.get("tokens_head") == p.get("tokens_head")
                    for name, side in row.items():
                        bound = entry["int8_read_bound_s_per_step"] if name == "pgbench int8" else bound_s
                        if isinstance(side, dict) and "step_s" in side and bound:
                            side["fraction_of_read_bound"] = bound / side["step_s"]
                            side["above_read_bound"] = side["step_s"] < bound
                    entry["batches"][str(b)] = row
                res["results"][f"{preset} {dtype}"] = entry
                if save:
                    save(_finish(res))
    return _finish(res)


def _fmt(d: dict, key: str, f: str = "{:.2f}") -> str:
    v = d.get(key)
    if isinstance(v, dict):
        return (f"{v['median_s']:.2f} ({v['min_s']:.2f}–{v['max_s']:.2f})" if "median_s" in v else "—")
    return f.format(v) if v is not None else d.get("error", "—")


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Decoding on the CPU: pgbench vs transformers generate, same dtype and batch", "",
             machine.header(m, res),
             "", f"Prompt: image + {res['text_tokens']} text tokens; {res['new_tokens']} new tokens, greedy, "
             f"no EOS; the loop is the {res['loop_steps']} steps after the first token. {res['rounds']} "
             f"interleaved rounds x {res['repeats_per_round']} repeats per side; seconds are median "
             "(min–max).", ""]
    if res["above_read_bound"]:
        lines += ["**ERROR: faster than the read bound (the bound or the timing is wrong; do not quote):** "
                  + "; ".join(res["above_read_bound"]), ""]
    for key, e in res["results"].items():
        bs = e["read_bound_s_per_step"]
        rates = [b["bytes_per_s"] for b in e["read_bound_runs"] if "bytes_per_s" in b]
        lines += [f"## {key}", "",
                  (f"Read bound: {e['weight_bytes_per_step'] / 1e9:.2f} GB of weights per step at "
                   f"{max(rates) / 1e9:.1f} GB/s (all cores, read-only; runs: "
                   + ", ".join(f"{r / 1e9:.1f}" for r in rates) + f") = {bs * 1e3:.0f} ms per step.")
                  if bs else "Read bound: not measured.", "",
                  "| batch | side | loop s | ms/step | loop tok/s | of read bound | prefill s | generate s | "
                  "loop speed-up | generate speed-up |", "|---|---|---|---|---|---|---|---|---|---|"]
        for b, row in e["batches"].items():
            for side in [n for n in ("pgbench", "pgbench int8", "transformers") if n in row]:
                d = row[side]
                if "loop_s" not in d:  # not measured: the reason once, not in every column
                    lines.append(f"| {b} | {side} {key.split()[-1]} | — | — | — | — | — | — | — | "
                                 f"{d.get('error', 'no runs')} |")
                    continue
                frac = d.get("fraction_of_read_bound")
                frac_s = ("—" if frac is None else f"{frac:.0%}" + (" **ABOVE BOUND**" if d.get("above_read_bound") else ""))
                sp = (f"{row['loop_speedup']:.2f}x", f"{row['generate_speedup']:.2f}x") if (
                    side == "pgbench" and "loop_speedup" in row) else ("", "")
                if side == "pgbench int8" and "loop_speedup_vs_float" in d:
                    sp = tuple(f"{d[f'{k}_speedup_vs_float']:.2f}x vs pgbench float32" for k in ("loop", "generate"))
                lines.append(f"| {b} | {side} {key.split()[-1]} | {_fmt(d, 'loop_s')} | "
                             + (f"{d['step_s'] * 1e3:.0f}" if "step_s" in d else "—") + " | "
                             f"{_fmt(d, 'loop_tokens_per_s', '{:.1f}')} | {frac_s} | {_fmt(d, 'prefill_s')} | "
                             f"{_fmt(d, 'generate_s')} | {sp[0]} | {sp[1]} |")
        if "int8_read_bound_s_per_step" in e:
            same = [row["pgbench int8"].get("same_tokens_as_float") for row in e["batches"].values()
                    if "pgbench int8" in row]
            lines += ["", f"pgbench int8: weight-only int8 decoder (`--weights int8`; activations, norms and "
                      f"cache in float32), {e['int8_weight_bytes_per_step'] / 1e9:.2f} GB of weights per step, "
                      f"read bound {e['int8_read_bound_s_per_step'] * 1e3:.0f} ms per step; its first 8 tokens "
                      + ("equal float32's" if all(same) else "differ from float32's in some rows") + "."]
        lines.append("")
    lines += ["Speed-ups are transformers' median seconds over pgbench's, same dtype and batch. "
              "Reproduce: `python -m benchmarks.decode_cpu` (see its docstring)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=sorted(ROLES))
    ap.add_argument("--preset", help="(one role's preset)")
    ap.add_argument("--presets", nargs="+", default=["pg1-3b-224", "pg2-3b-224"])
    ap.add_argument("--dtype", default="float32", help="(one role's dtype)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split()] if " " in s else [int(s)],
                    nargs="+", default=[[1], [8], [32]])
    ap.add_argument("--weights", default="float", choices=["float", "int8"],
                    help="(one pgbench role's decoder weights)")
    ap.add_argument("--int8", action="store_true",
                    help="float32 tables: also time pgbench with weight-only int8 decoder weights "
                         "(a third interleaved side)")
    ap.add_argument("--text-tokens", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one process per side each)")
    ap.add_argument("--repeats", type=int, default=1, help="timed generations per batch per process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bytes", type=int, help="(read_bound role) buffer size")
    ap.add_argument("--hf-dir")
    ap.add_argument("--tmp-dir", default=os.environ.get("PGBENCH_BENCH_TMP"),
                    help="where the HF copy of the random weights goes (12 GB per 3B preset)")
    ap.add_argument("--out", default=str(RESULTS / "decode_cpu"), help="results file stem")
    ap.add_argument("--resume", action="store_true",
                    help="keep the (preset, dtype) tables already in the results file, measure the rest")
    args = ap.parse_args(argv)
    args.batches = [b for group in args.batches for b in group]
    if args.role:
        print(json.dumps(ROLES[args.role](args)))
        return 0
    t0 = time.perf_counter()

    def save(res):
        res["wall_s"] = time.perf_counter() - t0
        write_results(Path(args.out), res, markdown(res))

    res = run(args, save)
    save(res)
    return 1 if res["above_read_bound"] else 0


if __name__ == "__main__":
    sys.exit(main())
