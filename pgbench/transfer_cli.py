"""``pgbench transfer``: its flags, and the evaluation it runs through the eval core."""

from __future__ import annotations

import argparse
from pathlib import Path

from pgbench import budgets, host_memory, lora, sharding
from pgbench.train import HPARAM_MODES, TransferConfig, parse_freeze, run_transfer


def add_arguments(p: argparse.ArgumentParser, *, single_run: bool = True) -> None:
    """Transfer's flags; ``single_run=False`` leaves out --budget, --seed and --no-eval (a
    sweep chooses budgets and seeds itself and always evaluates)."""
    p.add_argument("--task", required=True, help="task name (tasks/<name>.py or --tasks-dir)")
    p.add_argument("--data", required=True, metavar="DIR", help="the benchmark's files, official layout")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="big_vision .npz or Hugging Face directory")
    p.add_argument("--tokenizer", metavar="FILE",
                   help="tokenizer.model or tokenizer.json (default: the one in an HF checkpoint directory)")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="outputs; re-run with the same flags to resume")
    if single_run:
        p.add_argument("--budget", default="full", help="training examples: 64, 256, 1k, 4096, ... or full")
        p.add_argument("--seed", type=int, default=0, help="picks the examples, their order, targets and dropout")
    p.add_argument("--hparams", choices=HPARAM_MODES, default="paper",
                   help="paper: the task's App. J settings; default: lr 1e-5, batch 256, epochs <= 10")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="passes over the budget's examples")
    length.add_argument("--steps", type=int, help="optimizer steps (instead of --epochs)")
    p.add_argument("--batch", type=int, help="examples per optimizer step")
    p.add_argument("--micro-batch", type=int, help="examples per forward pass (gradient accumulation)")
    p.add_argument("--lr", type=float)
    p.add_argument("--wd", type=float, help="weight decay, not multiplied by lr (big_vision)")
    p.add_argument("--dropout", type=float, help="LLM dropout")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--freeze", action="append", metavar="PATTERN",
                   help="img, llm, llm/embed, or a regex over parameter names (repeatable; 'none')")
    p.add_argument("--lora-rank", type=int, metavar="R",
                   help="train LoRA adapters of rank R on the decoder's projections instead of the "
                        "model (the whole base model frozen)")
    p.add_argument("--lora-alpha", type=float, help="LoRA scale is alpha / rank (default alpha = rank: 1)")
    p.add_argument("--lora-targets", action="append", metavar="NAMES",
                   help="adapted projections: q, k, v, attn_out (o), gate, up, down, or the groups "
                        "attn, mlp, all (repeatable or comma-separated; default all)")
    p.add_argument("--warmup-percent", type=float, default=0.05)
    p.add_argument("--clip-norm", type=float, default=1.0, help="0 disables clipping")
    p.add_argument("--text-len", type=int, help="text tokens per example (default: the longest)")
    p.add_argument("--truncate", choices=["error", "suffix"], default="error")
    p.add_argument("--remat", default="nothing_saveable",
                   help="jax.checkpoint_policies name per decoder layer, or none")
    p.add_argument("--attention", choices=["xla", "pallas", "cudnn"], default="xla")
    p.add_argument("--param-dtype", choices=["float32", "bfloat16"], help="default: as stored")
    p.add_argument("--compute-dtype", choices=["float32", "bfloat16"])
    p.add_argument("--mesh", metavar="AXIS=N,...",
                   help="device mesh: data=8 (data parallel), fsdp=8 (parameters, gradients and "
                        "optimizer state sharded), data=2,fsdp=4; default: data parallel on every device")
    sharding.add_distributed_arguments(p)
    p.add_argument("--family", choices=["gemma1", "gemma2"], help="LLM family of a big_vision .npz")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="task option")
    p.add_argument("--tasks-dir", action="append", default=[], metavar="DIR")
    p.add_argument("--eval-every", type=int, default=0, metavar="K", help="evaluate every K steps")
    p.add_argument("--eval-split", help="default: the task's evaluation split")
    if single_run:
        p.add_argument("--no-eval", action="store_true", help="skip evaluation (also at the end)")
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--ckpt-every", type=int, default=100, metavar="N")
    p.add_argument("--keep", type=int, default=2, metavar="K", help="checkpoints kept")
    p.add_argument("--no-export", action="store_true", help="skip the .npz / Hugging Face export")
    p.add_argument("--no-progress", action="store_true")


def _options(pairs):
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            from pgbench.errors import InputError
            raise InputError(f"--option {pair!r}: expected KEY=VALUE")
        out.append((key, value))
    return tuple(out)


def config_from_args(args: argparse.Namespace) -> TransferConfig:
    """The TransferConfig of the flags (a sweep's namespace has no --budget / --seed: full, 0)."""
    from pgbench.evaluation import resolve_tokenizer_path

    tokenizer = str(resolve_tokenizer_path(args.checkpoint, args.tokenizer))
    return TransferConfig(
        task=args.task, data=args.data, checkpoint=args.checkpoint, tokenizer=tokenizer,
        run_dir=args.run_dir, budget=budgets.parse_budget(getattr(args, "budget", None)),
        seed=getattr(args, "seed", 0),
        hparams=args.hparams, epochs=args.epochs, steps=args.steps, batch=args.batch,
        micro_batch=args.micro_batch, lr=args.lr, wd=args.wd, dropout=args.dropout,
        label_smoothing=args.label_smoothing, freeze=parse_freeze(args.freeze),
        lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_targets=lora.parse_targets(args.lora_targets),
        warmup_percent=args.warmup_percent,
        clip_norm=args.clip_norm, text_len=args.text_len,
        truncate=args.truncate, remat=None if args.remat == "none" else args.remat,
        attn_impl=args.attention, param_dtype=args.param_dtype, compute_dtype=args.compute_dtype,
        mesh=args.mesh, family=args.family, options=_options(args.option), tasks_dir=tuple(args.tasks_dir),
        eval_every=args.eval_every, eval_split=args.eval_split, log_every=args.log_every,
        ckpt_every=args.ckpt_every, keep=args.keep, progress=not args.no_progress,
        export=not args.no_export)


def evaluator(cfg: TransferConfig):
    """The one place transfer calls the evaluation core: ``(model, split, out_dir) -> results``.
    Decodes the split with the task's decode length and beam, scores it with its metric and
    writes ``predictions.jsonl`` and ``results.json`` / ``results.md`` into ``out_dir``."""
    from pgbench import evaluation, rundir
    from pgbench.task import load_task
    from pgbench.tokenizer import Tokenizer

    task = load_task(cfg.task, cfg.tasks_dir)
    tok = Tokenizer(cfg.tokenizer, require_locseg=False)
    options = task.resolve_options(dict(cfg.options))
    settings = evaluation.DecodeSettings(max_new_tokens=task.max_decode_len, beam=task.beam,
                                         attn_impl=cfg.attn_impl, threads=cfg.threads)

    def evaluate(model, split: str, out_dir: Path):
        examples = task.examples(Path(cfg.data), split, options)
        out_dir.mkdir(parents=True, exist_ok=True)
        rundir.predictions_path(out_dir).unlink(missing_ok=True)  # a fresh model: decode anew
        predictions, failed = {}, {}
        with rundir.PredictionWriter(rundir.predictions_path(out_dir)) as writer:
            for outputs in evaluation.generate(model, model.cfg, tok, examples, settings,
                                               data_dir=Path(cfg.data)):
                rows = []
                for o in outputs:
                    ex = examples[o.index]
                    row = {"id": ex.id, "prompt": ex.prefix,
                           "prediction": "" if o.error else task.postprocess(o.text)}
                    if o.error:
                        row["error"] = failed[ex.id] = o.error
                    else:
                        predictions[ex.id] = row["prediction"]
                    rows.append(row)
                writer.write(rows)
        results = evaluation.score_predictions(task, split, examples, predictions, options,
                                               failed=failed)
        rundir.write_results(out_dir, results)
        return results
    return evaluate


def main(args: argparse.Namespace) -> int:
    host_memory.keep_freed_memory()  # before JAX's threads start: no page faults step after step
    sharding.initialize_distributed(args)  # before any other JAX call
    cfg = config_from_args(args)
    summary = run_transfer(cfg, evaluate=None if args.no_eval else evaluator(cfg))
    print(f"pgbench transfer: {summary['steps']} steps on {summary['examples']} examples, "
          f"final loss {summary['final_loss']:.4f}; outputs in {summary['run_dir']}")
    if summary.get("eval"):
        print(f"pgbench transfer: {cfg.eval_split or 'evaluation split'}: {summary['eval']}")
    return 0
