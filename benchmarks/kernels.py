"""Attention kernel benchmark: forward and forward+backward at PaliGemma's shapes.

    python -m benchmarks.kernels           # on an accelerator: the real shapes
    python -m benchmarks.kernels --quick   # anywhere (CPU: Pallas interpret mode, tiny shapes)

Implementations: ``pallas`` (pgbench.kernels), ``xla`` (the model's reference
attention), ``cudnn`` (``jax.nn.dot_product_attention``; cuDNN on a GPU with bf16,
XLA's own elsewhere) and ``jax_pallas`` (jax's bundled Pallas flash attention, which
has no prefix-LM mask: it runs full bidirectional attention, so its useful-FLOP rate
is computed over the same prefix-LM work and flatters nothing). TFLOP/s counts only
unmasked (query, key) pairs: 4*D FLOPs per pair and head forward, 2.5x that backward.
The fraction of peak divides by a big bf16 matmul measured in the same run.
Writes benchmarks/results/kernels_<backend>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.machine import describe
from pgbench.kernels import prefix_lm_attention

RESULTS = Path(__file__).parent / "results"
# (name, image tokens, text tokens); text = half prefix, half suffix
RESOLUTIONS = [("224px", 256, 64), ("448px", 1024, 128), ("896px", 4096, 512)]
# (model, heads, kv heads, head_dim): PaliGemma 1 (Gemma 2B, MQA), PaliGemma 2 3B / 10B
HEADS = [("pg1-3b", 8, 1, 256), ("pg2-3b", 8, 4, 256), ("pg2-10b", 16, 8, 256)]
QUICK_RESOLUTIONS = [("tiny", 48, 16)]
QUICK_HEADS = [("tiny-gqa", 4, 2, 32)]


def _problem(batch, n_img, n_txt, h, kvh, d, dtype, seed=0):
    n = n_img + n_txt
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    q = (jax.random.normal(keys[0], (batch, n, h, d), jnp.float32) / np.sqrt(d)).astype(dtype)
    k = jax.random.normal(keys[1], (batch, n, kvh, d), jnp.float32).astype(dtype)
    v = jax.random.normal(keys[2], (batch, n, kvh, d), jnp.float32).astype(dtype)
    ar = (jnp.arange(n) >= n_img + n_txt // 2).astype(jnp.int32)
    cumsum = jnp.broadcast_to(jnp.cumsum(ar), (batch, n))
    valid = jnp.ones((batch, n), bool)
    return q, k, v, cumsum, valid


def _useful_pairs(cumsum, valid):
    c, m = np.asarray(cumsum), np.asarray(valid)
    mask = (c[:, None, :] <= c[:, :, None]) & m[:, None, :] & m[:, :, None]
    return int(mask.sum())


def _impls(backend, quick):
    from pgbench.model.attention import attention
    from pgbench.model.masks import SegmentInfo

    def info(c, m):
        return SegmentInfo(c, m, jnp.broadcast_to(jnp.arange(c.shape[1], dtype=jnp.int32), c.shape))

    def pallas(q, k, v, c, m):
        return prefix_lm_attention(q, k, v, info(c, m))

    def xla(q, k, v, c, m):
        return attention(q, k, v, info(c, m), impl="xla")

    def cudnn(q, k, v, c, m):
        mask = (c[:, None, :] <= c[:, :, None]) & m[:, None, :] & m[:, :, None]
        impl = "cudnn" if backend == "gpu" and q.dtype == jnp.bfloat16 else None
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=1.0,
                                            implementation=impl)

    out = {"pallas": pallas, "xla": xla, "cudnn": cudnn}
    if backend == "gpu" or quick:
        from jax.experimental.pallas.ops.gpu import attention as gpu_attention

        def jax_pallas(q, k, v, c, m):  # no GQA support: K/V repeated per head
            rep = q.shape[2] // k.shape[2]
            k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
            return gpu_attention.mha(q, k, v, segment_ids=None, interpret=backend == "cpu")

        out["jax_pallas"] = jax_pallas
    elif backend == "tpu":
        from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

        def jax_pallas(q, k, v, c, m):
            rep = q.shape[2] // k.shape[2]
            k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
            t = lambda x: x.transpose(0, 2, 1, 3)
            return t(tpu_flash.flash_attention(t(q), t(k), t(v)))

        out["jax_pallas"] = jax_pallas
    return out


def _time(fn, args, repeats):
    out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _matmul_peak(n, repeats):
    """TFLOP/s of an n x n x n bf16 matmul with f32 accumulation."""
    a = jnp.ones((n, n), jnp.bfloat16)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    return 2 * n**3 / _time(f, (a, a), repeats) / 1e12


def run(quick: bool):
    backend = jax.default_backend()
    backend = "gpu" if backend in ("cuda", "rocm") else backend
    repeats = 3 if quick else 20
    dtype = jnp.bfloat16
    resolutions = QUICK_RESOLUTIONS if quick else RESOLUTIONS
    heads = QUICK_HEADS if quick else HEADS
    peak = _matmul_peak(256 if quick else 8192, repeats)
    rows = []
    for res, n_img, n_txt in resolutions:
        batch = 1 if quick else max(1, 8192 // (n_img + n_txt))
        for model, h, kvh, d in heads:
            q, k, v, c, m = _problem(batch, n_img, n_txt, h, kvh, d, dtype)
            pairs = _useful_pairs(c, m)
            fwd_flops = 4 * d * h * pairs
            for name, impl in _impls(backend, quick).items():
                row = dict(resolution=res, model=model, batch=batch, tokens=n_img + n_txt, heads=h,
                           kv_heads=kvh, head_dim=d, impl=name)
                fwd = jax.jit(impl)
                loss = lambda q, k, v, c, m, impl=impl: impl(q, k, v, c, m).astype(jnp.float32).sum()
                fwd_bwd = jax.jit(jax.grad(loss, (0, 1, 2)))
                for label, fn, flops in [("fwd", fwd, fwd_flops), ("fwd_bwd", fwd_bwd, 3.5 * fwd_flops)]:
                    try:
                        s = _time(fn, (q, k, v, c, m), repeats)
                        tflops = flops / s / 1e12
                        row.update({f"{label}_ms": round(s * 1e3, 3), f"{label}_tflops": round(tflops, 4),
                                    f"{label}_peak_frac": round(tflops / peak, 4)})
                    except Exception as e:  # one implementation failing must not hide the others
                        row[f"{label}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                rows.append(row)
                print(json.dumps(row), flush=True)
    device = jax.devices()[0].device_kind
    return dict(machine=describe(), device=device, backend=backend, quick=quick,
                interpret=backend == "cpu", dtype="bfloat16", matmul_peak_tflops=round(peak, 4),
                flop_count="unmasked pairs x heads x 4 x head_dim (fwd); x3.5 for fwd+bwd",
                rows=rows)


def _markdown(res):
    lines = [f"# Attention kernels on {res['device']} ({res['backend']}"
             f"{', Pallas interpret mode, tiny shapes' if res['interpret'] else ''})", "",
             f"bf16 matmul peak measured in this run: {res['matmul_peak_tflops']} TFLOP/s. "
             f"FLOPs: {res['flop_count']}.", "",
             "| res | model | B | N | impl | fwd ms | fwd TFLOP/s | fwd % peak | fwd+bwd ms "
             "| fwd+bwd TFLOP/s | fwd+bwd % peak |", "|" + "---|" * 11]
    for r in res["rows"]:
        def cell(label, key, scale=1.0):
            v = r.get(f"{label}_{key}")
            return "error" if f"{label}_error" in r else f"{v * scale:.3g}"
        lines.append(f"| {r['resolution']} | {r['model']} | {r['batch']} | {r['tokens']} | {r['impl']} | "
                     f"{cell('fwd', 'ms')} | {cell('fwd', 'tflops')} | {cell('fwd', 'peak_frac', 100)} | "
                     f"{cell('fwd_bwd', 'ms')} | {cell('fwd_bwd', 'tflops')} | "
                     f"{cell('fwd_bwd', 'peak_frac', 100)} |")
    lines += ["", "Machine: " + ", ".join(f"{k}={v}" for k, v in res["machine"].items())]
    errors = [f"- {r['impl']} {r['resolution']} {r['model']}: {r.get('fwd_error') or r.get('fwd_bwd_error')}"
              for r in res["rows"] if "fwd_error" in r or "fwd_bwd_error" in r]
    if errors:
        lines += ["", "Errors:"] + errors
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes (CPU: interpret mode)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    quick = args.quick or jax.default_backend() == "cpu"
    res = run(quick)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"kernels_{res['backend']}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    stem.with_suffix(".md").write_text(_markdown(res))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
