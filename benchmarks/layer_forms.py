"""Stacked (lax.scan) vs per-layer (unrolled) layers: greedy generation on the CPU.

Same model, same weights (random, seeded), float32, batch 1, a 5-token prompt, N new
tokens with EOS disabled: the first call's time (compile + run) and the best of the
next calls, for each form. Both forms must produce the same tokens.

    python -m benchmarks.layer_forms                      # pg1-3b-224, 16 new tokens
    python -m benchmarks.layer_forms --preset pg1-tiny    # seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import machine
from benchmarks.common import time_calls, write_results

RESULTS = Path(__file__).resolve().parent / "results"
NEVER = -7  # an EOS id no token equals


def run(args) -> dict:
    import jax.numpy as jnp

    from pgbench.checkpoints.random_params import RandomParams
    from pgbench import decode
    from pgbench.config import get_preset
    from pgbench.model import paligemma as pg
    from pgbench.checkpoints.bigvision_layout import from_bigvision_params

    cfg = get_preset(args.preset)
    model = from_bigvision_params(RandomParams(cfg, args.seed), cfg, stacked=False)
    rng = np.random.default_rng(args.seed)
    size = cfg.vision.image_size
    images = jnp.asarray(rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32))
    tokens = jnp.asarray([[2, *rng.integers(3, min(cfg.llm.vocab_size, 256000), 3), 108]], jnp.int32)
    mask, ar = jnp.ones_like(tokens, bool), jnp.zeros_like(tokens)
    res = {"benchmark": "layer forms: greedy generation", "preset": args.preset, "batch": 1,
           "prompt_tokens": int(tokens.shape[1]), "new_tokens": args.new_tokens,
           "machine": machine.describe(), "forms": {}}
    for form in ("per_layer", "stacked"):
        if form == "stacked":
            model = pg.with_layers(model, stacked=True)

        def gen():
            return np.asarray(decode.decode(model, images, tokens, mask, ar,
                                            max_new_tokens=args.new_tokens, eos_id=NEVER).tokens)

        t0 = time.perf_counter()
        out = gen()
        first = time.perf_counter() - t0
        times = time_calls(gen, args.repeats)
        res["forms"][form] = {"first_call_s": first, "best_s": min(times), "times_s": times,
                              "tokens": out[0].tolist()}
    f = res["forms"]
    res["same_tokens"] = f["per_layer"]["tokens"] == f["stacked"]["tokens"]
    res["speedup_per_layer"] = f["stacked"]["best_s"] / f["per_layer"]["best_s"]
    return res


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Layer forms, greedy generation on the CPU: {res['preset']}, float32, batch 1, "
             f"{res['prompt_tokens']} prompt + {res['new_tokens']} new tokens", "",
             machine.header(m), "",
             "| form | first call s (compile + run) | best of the next calls s |", "|---|---|---|"]
    for form, r in res["forms"].items():
        lines.append(f"| {form} | {r['first_call_s']:.1f} | {r['best_s']:.2f} |")
    lines += ["", f"Per-layer is {res['speedup_per_layer']:.2f}x the stacked form; same tokens: "
              f"{res['same_tokens']}.", "", "Reproduce: `make bench` (or `python -m benchmarks.layer_forms`)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="pg1-3b-224")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="results file stem (default benchmarks/results/layer_forms_<preset>)")
    args = ap.parse_args(argv)
    res = run(args)
    write_results(Path(args.out) if args.out else RESULTS / f"layer_forms_{args.preset}", res, markdown(res))
    return 0 if res["same_tokens"] else 1


if __name__ == "__main__":
    sys.exit(main())
