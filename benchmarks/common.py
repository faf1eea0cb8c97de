"""Helpers shared by the benchmarks: timing, one process per measurement."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
import sys
import time


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


def have_transformers() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def write_results(stem: Path, res: dict, markdown: str) -> None:
    """Write ``stem``.json (every figure) and ``stem``.md (the table), and print the table."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
