"""`make bench`: every CPU benchmark, each writing its figures to benchmarks/results/.

    python -m benchmarks.run            # full size (minutes; needs ~16 GB free memory)
    python -m benchmarks.run --quick    # tiny sizes, seconds: proves the benchmarks still run
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

FULL = [
    ["benchmarks.forward_cpu"],
    ["benchmarks.decode_cpu"],
    ["benchmarks.layer_forms"],
    ["benchmarks.dense_orientation"],
    ["benchmarks.metrics_bench"],
]
QUICK = [
    ["benchmarks.forward_cpu", "--preset", "pg1-tiny", "--repeats", "1", "--out", "/tmp/pgbench-quick-forward"],
    ["benchmarks.layer_forms", "--preset", "pg1-tiny", "--repeats", "1", "--out", "/tmp/pgbench-quick-layer-forms"],
    ["benchmarks.dense_orientation", "--quick", "--repeats", "1", "--out", "/tmp/pgbench-quick-dense-orientation"],
    ["benchmarks.metrics_bench", "--quick"],
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    failed = []
    for cmd in QUICK if args.quick else FULL:
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
