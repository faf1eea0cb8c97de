"""`make bench`: every benchmark, each writing its figures to benchmarks/results/.

    python -m benchmarks.run            # full size (hours; a quiet machine, ~16 GB free memory)
    python -m benchmarks.run --quick    # tiny sizes, a few minutes: proves every benchmark still runs

The quick run writes its figure files into a fresh temporary folder (printed, then removed),
never over the real results.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile

# Every benchmark module, full size. kernels runs its tiny interpret-mode shapes on a CPU.
FULL = [
    ["benchmarks.forward_cpu"],
    ["benchmarks.decode_cpu", "--int8"],
    ["benchmarks.layer_forms"],
    ["benchmarks.dense_orientation"],
    ["benchmarks.decode_attention"],
    ["benchmarks.decode_profile"],
    ["benchmarks.kernels"],
    ["benchmarks.metrics_bench"],
    ["benchmarks.eval_cpu"],
    ["benchmarks.train_cpu"],
    ["benchmarks.train_profile"],
    ["benchmarks.weight_grad"],
    ["benchmarks.lora_memory"],
    ["benchmarks.transfer_memory"],
]


def quick(out: str) -> list[list[str]]:
    """The same benchmarks at tiny sizes, their files under `out`."""
    return [
        ["benchmarks.forward_cpu", "--preset", "pg1-tiny", "--rounds", "1", "--repeats", "1", "--out", f"{out}/forward"],
        ["benchmarks.decode_cpu", "--presets", "pg1-tiny", "--batches", "1", "2", "--rounds", "1",
         "--new-tokens", "4", "--int8", "--out", f"{out}/decode"],
        ["benchmarks.layer_forms", "--preset", "pg1-tiny", "--repeats", "1", "--new-tokens", "4",
         "--out", f"{out}/layer_forms"],
        ["benchmarks.dense_orientation", "--quick", "--repeats", "1", "--out", f"{out}/dense_orientation"],
        ["benchmarks.decode_attention", "--quick", "--rounds", "1", "--repeats", "1",
         "--out", f"{out}/decode_attention"],
        ["benchmarks.decode_profile", "--quick", "--steps", "3", "--repeats", "1",
         "--out", f"{out}/decode_profile"],
        ["benchmarks.kernels", "--quick", "--out", out],
        ["benchmarks.metrics_bench", "--quick", "--out", out],
        ["benchmarks.eval_cpu", "--quick", "--out", f"{out}/eval"],
        ["benchmarks.train_cpu", "--quick", "--out", f"{out}/train"],
        ["benchmarks.train_profile", "--quick", "--out", f"{out}/train_profile"],
        ["benchmarks.weight_grad", "--quick", "--out", f"{out}/weight_grad"],
        ["benchmarks.lora_memory", "--config", "pg1-tiny", "--rank", "2", "--out", f"{out}/lora_memory"],
        ["benchmarks.transfer_memory", "--quick", "--out", f"{out}/transfer_memory"],
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    failed = []
    with tempfile.TemporaryDirectory(prefix="pgbench-bench-quick-") as tmp:
        for cmd in quick(tmp) if args.quick else FULL:
            try:
                importlib.import_module(cmd[0])
            except ImportError as e:
                print(f"[bench] skipping {cmd[0]}: {e}", file=sys.stderr)
                continue
            print(f"[bench] {' '.join(cmd)}", file=sys.stderr, flush=True)
            if subprocess.run([sys.executable, "-m", *cmd]).returncode:
                failed.append(cmd[0])
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
