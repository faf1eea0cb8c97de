"""``pgbench sweep``: its flags (transfer's, with --budgets and --seeds) and its exit status."""

from __future__ import annotations

import argparse

from pgbench import sweep, transfer_cli
from pgbench.sweep_report import fmt_score as _fmt


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budgets", default=sweep.DEFAULT_BUDGETS,
                   help=f"comma-separated budgets: numbers of examples (1k = 1024) or full "
                        f"(default {sweep.DEFAULT_BUDGETS})")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds 0..N-1 per budget (default 3)")
    p.add_argument("--metric", metavar="KEY",
                   help="results key to report (default: the task metric's headline, e.g. accuracy, cider)")
    transfer_cli.add_arguments(p, single_run=False)


def main(args: argparse.Namespace) -> int:
    from pgbench import host_memory

    host_memory.keep_freed_memory()  # before JAX's threads start (see pgbench.host_memory)
    budgets = sweep.parse_budgets(args.budgets)  # bad input first: nothing loaded yet
    if args.seeds < 1:
        from pgbench.errors import InputError
        raise InputError(f"--seeds must be at least 1, got {args.seeds}")
    cfg = sweep.SweepConfig(base=transfer_cli.config_from_args(args), budgets=budgets,
                            seeds=args.seeds, run_dir=args.run_dir, metric=args.metric)
    report = sweep.run_sweep(cfg, log=lambda m: print(m, flush=True))
    for row in report["summary"]:
        print(f"pgbench sweep: budget {row['budget']:>5s} ({row['examples']} examples): "
              f"mean {_fmt(row['mean'])} std {_fmt(row['std'])} best {_fmt(row['best'])} "
              f"over {row['n']} seed(s)" + (f"; {row['note']}" if row["note"] else ""))
    print(f"pgbench sweep: wrote {args.run_dir}/{sweep.SWEEP_JSON}, {sweep.SWEEP_MD}, {sweep.SWEEP_PNG}")
    failed = [r for r in report["runs"] if r["status"] != "done"]
    if failed:
        print(f"pgbench sweep: {len(failed)} run(s) did not finish: "
              + ", ".join(f"{r['budget']}-s{r['seed']}" for r in failed))
        return 1
    return 0
