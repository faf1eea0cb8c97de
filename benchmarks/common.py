"""Helpers shared by the benchmarks: timing, one process per measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def time_calls(fn, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after one warm-up (compile) call."""
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def spawn(module: str, role: str, **flags) -> dict:
    """Run ``python -m module --role role --flag value ...`` and parse its last stdout line as JSON.

    A separate process per measurement keeps one big model in memory at a time and
    keeps one library's threads from disturbing the other's timings.
    """
    cmd = [sys.executable, "-m", module, "--role", role]
    for k, v in flags.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    print(f"[{module}] {role} {flags}", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        tail = out.stderr.strip().splitlines()
        return {"error": tail[-1] if tail else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def random_prompt(cfg, batch: int, n_text: int, seed: int = 0):
    """(images f32[batch, S, S, 3] in [-1, 1], tokens i32[batch, n_text]): a seeded random prompt,
    BOS first and the separator (108) last, the same on every side of a comparison."""
    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    tokens = np.concatenate([np.full((batch, 1), 2), rng.integers(3, min(cfg.llm.vocab_size, 256000),
                                                                   (batch, n_text - 2)),
                             np.full((batch, 1), 108)], axis=1).astype(np.int32)
    return images, tokens


def have_transformers() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def torch_rate(dtype: str) -> float:
    """GFLOP/s of a 64x256x256 torch product at ``dtype`` ("float32" or "bfloat16"), best of 3
    after a warm-up."""
    import torch

    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    x, y = torch.ones(64, 256, dtype=dt), torch.ones(256, 256, dtype=dt)
    x @ y
    best = min(time_calls(lambda: x @ y, 3))  # a process's first products are slow ones
    return 2 * 64 * 256 * 256 / max(best, 1e-9) / 1e9


def torch_skip_note(dtype: str, flops: float, limit_s: float = 120.0, floor_gflops: float = 5.0) -> str | None:
    """Why torch's side of a comparison of ``flops`` matrix FLOPs at ``dtype`` is skipped, or None.

    A CPU without a dtype's instructions (bfloat16 without AVX-512 or AMX) sends torch's
    products to a slow fallback: 0.3 GFLOP/s measured on a 2-core AMD EPYC, where a
    real-size bfloat16 comparison would run for hours. Skipped when the small product runs
    below ``floor_gflops`` GFLOP/s AND ``flops`` at that rate would take over ``limit_s``
    seconds, so tiny presets still compare both sides everywhere. The small product
    overstates the fallback's rate at real sizes (1 against 0.3 GFLOP/s there), hence the
    low default limit."""
    rate = torch_rate(dtype)
    secs = flops / (rate * 1e9)
    if rate >= floor_gflops or secs <= limit_s:
        return None
    took = f"{secs / 3600:.1f} h" if secs >= 3600 else f"{secs / 60:.0f} min"
    return (f"skipped: torch's {dtype} products run at {rate:.1f} GFLOP/s on this CPU (no {dtype} "
            f"instructions); this side would take at least {took}")


def peer_missing(dtype: str, flops: float) -> str | None:
    """Why transformers' side of a comparison of ``flops`` matrix FLOPs at ``dtype`` does not
    run (not installed, or ``torch_skip_note``), or None when it runs."""
    if not have_transformers():
        return "transformers not installed (make install-reference)"
    return torch_skip_note(dtype, flops)


def write_results(stem: Path, res: dict, markdown: str) -> None:
    """Write ``stem``.json (every figure) and ``stem``.md (the table), and print the table."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (how busy the machine was around a measurement)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def summarize(times: list[float]) -> dict:
    """Median, best, worst and relative spread ((max - min) / median) of some timings."""
    if not times:
        return {}
    med = float(np.median(times))
    return {"median_s": med, "min_s": float(min(times)), "max_s": float(max(times)),
            "spread": (max(times) - min(times)) / med if med else float("nan"), "n": len(times)}


def interleaved(module: str, sides: dict[str, dict], rounds: int) -> dict[str, list[dict]]:
    """Run every side once per round, in turn (A B A B ...), each in its own process.

    sides: name -> flags for `spawn(module, **flags)` (a "role" key among them). Returns
    name -> the per-round results, each with the load average before and after its process.
    """
    out: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, flags in sides.items():
            before = load_average()
            res = spawn(module, **flags)
            res.update(round=r, load_before=before, load_after=load_average())
            out[name].append(res)
    return out
