"""``pgbench eval | score | tasks``: the command lines over ``pgbench.evaluation`` (docs/eval.md).

    pgbench eval  --task vqav2 --data DIR --checkpoint CKPT [--tokenizer TOK] [--split S] ...
    pgbench score --task vqav2 --data DIR --split S --predictions P.jsonl [--run-dir R]
    pgbench tasks [--tasks-dir D]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pgbench import sharding
from pgbench.errors import CheckpointError, InputError
from pgbench.model.quantize import WEIGHT_CHOICES, WEIGHTS_HELP


def _task_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, metavar="T", help="task name (`pgbench tasks` lists them)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the benchmark's files, as its official source distributes them")
    p.add_argument("--tasks-dir", action="append", default=[], metavar="D",
                   help="extra folder of task adapters (repeatable; also $PGBENCH_TASKS)")
    p.add_argument("--subset", help="task option `subset` (refcoco_seg: refcoco|refcoco+|refcocog)")
    p.add_argument("--split-by", dest="split_by", help="task option `split_by` (refcoco_seg: unc|umd|google)")
    p.add_argument("--numeric", action="store_const", const=True, default=None,
                   help="task option `numeric` (rsvqa: include the count/area questions)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other task option (VALUE read as JSON when it parses, else a string)")


def task_options(args: argparse.Namespace) -> dict:
    """The task options given on the command line (only those given)."""
    opts = {k: getattr(args, k) for k in ("subset", "split_by", "numeric")
            if getattr(args, k, None) is not None}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--option {item!r}: expected KEY=VALUE")
        try:
            opts[key] = json.loads(value)
        except ValueError:
            opts[key] = value
    return opts


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    _task_arguments(p)
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="big_vision .npz file or Hugging Face PaliGemma directory")
    p.add_argument("--tokenizer", metavar="TOK",
                   help="tokenizer.model / tokenizer.json (default: the one inside an HF "
                        "checkpoint directory; required for a .npz checkpoint)")
    p.add_argument("--family", choices=["gemma1", "gemma2"],
                   help="LLM family of a .npz checkpoint (default: inferred from its keys)")
    p.add_argument("--split", metavar="S", help="split name as the benchmark spells it "
                   "(default: the split the paper reports)")
    p.add_argument("--run-dir", metavar="R",
                   help="run directory (default runs/eval/<task>-<split>-<checkpoint name>); "
                        "re-running with the same one resumes")
    p.add_argument("--limit", type=int, metavar="N", help="only the split's first N examples")
    p.add_argument("--batch-size", type=int, default=8, metavar="B",
                   help="examples per decode batch, rounded up to a multiple of the device "
                        "count (default 8)")
    p.add_argument("--max-new-tokens", type=int, metavar="M",
                   help="tokens to generate (default: the task's decode length)")
    p.add_argument("--max-prompt-len", type=int, default=256, metavar="N",
                   help="text budget of a prompt in tokens (longer: that example fails)")
    p.add_argument("--beam", type=int, metavar="W",
                   help="beam width (default: the task's; 1 = greedy)")
    p.add_argument("--attention", choices=["xla", "pallas", "cudnn"], default="xla",
                   help="attention implementation")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="parameter dtype (default float32)")
    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="float", help=WEIGHTS_HELP)
    p.add_argument("--resize", choices=["bigvision", "hf"], default="bigvision",
                   help="image resize: big_vision's bilinear (default) or HF's bicubic")
    p.add_argument("--vae", metavar="PATH",
                   help="vae-oid.npz for segmentation tasks (passed as the task option `vae`)")
    p.add_argument("--threads", type=int, metavar="N", help="image-loading threads (default: CPUs, at most 8)")
    sharding.add_distributed_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    _task_arguments(p)
    p.add_argument("--split", required=True, metavar="S", help="split the predictions are for")
    p.add_argument("--predictions", required=True, metavar="P.jsonl",
                   help='JSON lines {"id": ..., "prediction": ...} (the benchmark\'s own ids)')
    p.add_argument("--run-dir", metavar="R", help="where results.json / results.md go "
                   "(default: beside the predictions file)")


def add_tasks_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks-dir", action="append", default=[], metavar="D",
                   help="extra folder of task adapters (repeatable; also $PGBENCH_TASKS)")


def _print_results(results: dict, run_dir: Path | None) -> None:
    from pgbench import rundir

    print(rundir.results_markdown(results), end="")
    if results.get("num_missing"):
        shown = ", ".join(map(str, results.get("missing_ids", [])[:5]))
        print(f"{results['num_missing']} example(s) had no prediction and count as wrong "
              f"(e.g. {shown})", file=sys.stderr)
    if run_dir is not None:
        print(f"results in {run_dir / rundir.RESULTS_JSON}", file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    from pgbench import evaluation
    from pgbench.task import load_task

    task = load_task(args.task, args.tasks_dir)
    options = task_options(args)
    if args.vae:
        if "vae" not in task.options:
            raise InputError(f"task {task.name!r} does not use --vae")
        if not Path(args.vae).is_file():
            raise InputError(f"--vae {args.vae}: no such file")
        options["vae"] = str(Path(args.vae).resolve())
    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: no such checkpoint file or directory")
    tokenizer = evaluation.resolve_tokenizer_path(ckpt, args.tokenizer)
    if not tokenizer.exists():
        raise InputError(f"--tokenizer {tokenizer}: no such file")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    split = task.check_split(args.split or task.eval_split)
    settings = evaluation.DecodeSettings(
        max_new_tokens=args.max_new_tokens or task.max_decode_len,
        max_prompt_len=args.max_prompt_len, batch_size=args.batch_size,
        beam=args.beam or task.beam, attn_impl=args.attention, resize=args.resize,
        threads=args.threads)
    settings.check()
    run_dir = Path(args.run_dir) if args.run_dir else (
        Path("runs") / "eval" / f"{task.name}-{split}-{ckpt.name.removesuffix('.npz')}")
    process_index, process_count, barrier = sharding.initialize_distributed(args)
    req = evaluation.EvalRequest(
        task=task, data=Path(args.data), checkpoint=ckpt, tokenizer=tokenizer, run_dir=run_dir,
        split=split, options=options, limit=args.limit, family=args.family, dtype=args.dtype,
        weights=args.weights, settings=settings, progress=not args.no_progress and sys.stderr.isatty())
    results = evaluation.evaluate(req, process_index=process_index, process_count=process_count,
                                  barrier=barrier,
                                  log=lambda m: print(m, file=sys.stderr))
    if results is not None:
        _print_results(results, run_dir)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from pgbench import evaluation
    from pgbench.task import load_task

    task = load_task(args.task, args.tasks_dir)
    preds = Path(args.predictions)
    run_dir = Path(args.run_dir) if args.run_dir else preds.resolve().parent
    results = evaluation.score_file(task, Path(args.data), args.split, preds,
                                    options=task_options(args), run_dir=run_dir)
    _print_results(results, run_dir)
    return 0


def describe_tasks(extra_dirs=()) -> list[str]:
    """One block per task: name, metric, splits (eval split marked), expected layout."""
    from pgbench.task import available, load_task

    blocks = []
    for name in sorted(available(extra_dirs)):
        try:
            t = load_task(name, extra_dirs)
        except Exception as e:  # noqa: BLE001 - a broken user file must not hide the others
            blocks.append(f"{name}: cannot load ({e})")
            continue
        splits = ", ".join(f"{s}*" if s == t.eval_split else s for s in t.splits)
        head = f"{name}  metric={t.metric}  splits: {splits}"
        if t.options:
            head += "  options: " + ", ".join(f"{k}={v!r}" for k, v in t.options.items())
        layout = "\n".join(f"    {line}" for line in t.layout.strip().splitlines())
        blocks.append(head + ("\n" + layout if layout else ""))
    return blocks


def cmd_tasks(args: argparse.Namespace) -> int:
    blocks = describe_tasks(args.tasks_dir)
    if not blocks:
        print("no tasks found (tasks/ is empty and no --tasks-dir / $PGBENCH_TASKS given)")
        return 0
    print("tasks (* = the split `pgbench eval` uses by default); files expected under --data:\n")
    print("\n".join(blocks))
    return 0
