"""``pgbench sweep``: transfer at several example budgets and seeds, against the zero-shot score.

::

    <run-dir>/zero_shot/          the checkpoint scored without fine-tuning (an eval run dir)
    <run-dir>/runs/<budget>-s<seed>/   one ``pgbench transfer`` run directory per budget x seed
    <run-dir>/sweep.json          per-run records and the per-budget summary
    <run-dir>/sweep.md            the same as tables
    <run-dir>/sweep.png           score against budget (``pgbench.sweep_report.plot``)

Each run is :func:`pgbench.train.run_transfer` in-process, so a sweep resumes the way transfer
does: a run whose ``summary.json`` and final ``eval/results.json`` exist is finished and read
back, not run again; an interrupted one resumes from its newest checkpoint; a run directory
holding other settings is refused (before anything trains). The report files are rewritten
after every run, so a sweep in progress can be looked at.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pgbench import budgets, rundir, sweep_report
from pgbench.errors import InputError
from pgbench.train import TrainingError, TransferConfig, check_run_dir, _identity

DEFAULT_BUDGETS = "64,256,1024,4096,full"
ZERO_SHOT_DIR = "zero_shot"
RUNS_DIR = "runs"
SWEEP_JSON, SWEEP_MD, SWEEP_PNG = "sweep.json", "sweep.md", "sweep.png"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep: ``base`` is the transfer every run shares (its budget, seed and run_dir are
    replaced per run); ``budgets`` are labels (``"64"``, ``"full"``); seeds are 0..seeds-1."""

    base: TransferConfig
    budgets: tuple[str, ...]
    seeds: int
    run_dir: str
    metric: str | None = None  # results key to report; default: the metric's headline


def parse_budgets(text: str) -> tuple[str, ...]:
    """``"64,256,1k,4096,full"`` -> ``("64", "256", "1024", "4096", "full")`` (ascending, full
    last). An unknown or repeated budget is an :class:`InputError`."""
    labels: list[str] = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        try:
            n = budgets.parse_budget(part)
        except InputError:
            raise InputError(f"--budgets: {part.strip()!r} is not a budget (a number of examples "
                             f"such as 64, 256, 1k, 4096, or 'full')") from None
        label = budgets.FULL if n is None else str(n)
        if label in labels:
            raise InputError(f"--budgets: {part.strip()!r} is listed twice")
        labels.append(label)
    if not labels:
        raise InputError(f"--budgets {text!r}: give at least one budget (e.g. {DEFAULT_BUDGETS})")
    return tuple(sorted(labels, key=lambda b: float("inf") if b == budgets.FULL else int(b)))


def run_config(sweep: SweepConfig, budget: str, seed: int) -> TransferConfig:
    """The transfer of one (budget, seed): its own run directory under ``runs/``."""
    return dataclasses.replace(sweep.base, budget=budgets.parse_budget(budget), seed=seed,
                               run_dir=str(Path(sweep.run_dir) / RUNS_DIR / f"{budget}-s{seed}"))


def is_finished(run_dir: Path) -> bool:
    """run_transfer writes summary.json last, after the final evaluation's results.json."""
    return (run_dir / "summary.json").is_file() and (run_dir / "eval" / rundir.RESULTS_JSON).is_file()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_record(run_dir: Path, budget: str, seed: int, key: str | None, sweep_dir: Path) -> dict[str, Any]:
    """What a run directory says about its run: examples, steps, final loss, score (``key`` of
    the final evaluation's metrics) and status (done, or not finished)."""
    rec: dict[str, Any] = {"budget": budget, "seed": seed, "run_dir": os.path.relpath(run_dir, sweep_dir),
                           "status": "not finished", "score": None, "examples": None,
                           "split_examples": None, "steps": None, "final_loss": None}
    resolved = (_read_json(run_dir / "config.json") or {}).get("resolved") or {}
    rec["examples"], rec["split_examples"] = resolved.get("examples"), resolved.get("split_examples")
    rec["steps"] = resolved.get("steps")
    if is_finished(run_dir):
        summary = _read_json(run_dir / "summary.json") or {}
        results = _read_json(run_dir / "eval" / rundir.RESULTS_JSON) or {}
        metrics = results.get("metrics") or {}
        rec.update(steps=summary.get("steps"), final_loss=summary.get("final_loss"))
        if key in metrics:
            rec.update(status="done", score=float(metrics[key]))
        else:
            rec.update(status="failed", error=f"its results.json has no {key!r}")
    return rec


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"--run-dir {path} is not writable: {e.strerror or e}") from None


def zero_shot(sweep: SweepConfig, task, log=print) -> dict:
    """The checkpoint scored without fine-tuning, through the eval core (resumable, in
    ``zero_shot/``), with the settings transfer's own evaluation uses."""
    from pgbench import evaluation

    cfg = sweep.base
    settings = evaluation.DecodeSettings(max_new_tokens=task.max_decode_len, beam=task.beam,
                                         attn_impl=cfg.attn_impl, threads=cfg.threads)
    req = evaluation.EvalRequest(
        task=task, data=Path(cfg.data), checkpoint=Path(cfg.checkpoint), tokenizer=Path(cfg.tokenizer),
        run_dir=Path(sweep.run_dir) / ZERO_SHOT_DIR, split=cfg.eval_split or task.eval_split,
        options=dict(cfg.options), family=cfg.family, dtype=cfg.param_dtype or "float32",
        settings=settings, progress=cfg.progress and sys.stderr.isatty())
    return evaluation.evaluate(req, log=log)


def _train(cfg: TransferConfig, log) -> dict:
    from pgbench.train import run_transfer
    from pgbench.transfer_cli import evaluator

    return run_transfer(cfg, evaluate=evaluator(cfg), log=log)


def build_report(sweep: SweepConfig, task, key: str, zs: dict, runs: list[dict]) -> dict[str, Any]:
    paper = sweep_report.paper_score(task.paper)
    return {
        "task": task.name, "metric": task.metric, "metric_key": key,
        "eval_split": sweep.base.eval_split or task.eval_split,
        "checkpoint": sweep.base.checkpoint, "budgets": list(sweep.budgets),
        "seeds": list(range(sweep.seeds)),
        "zero_shot": {"score": float(zs["metrics"][key]), "run_dir": ZERO_SHOT_DIR,
                      "num_examples": zs.get("num_examples")},
        "paper": None if paper is None else {"score": paper, "text": task.paper},
        "summary": sweep_report.aggregate(runs, sweep.budgets),
        "runs": runs,
    }


def write_report(run_dir: Path, report: dict) -> None:
    rundir.write_json(run_dir / SWEEP_JSON, report)
    tmp = run_dir / (SWEEP_MD + ".tmp")
    tmp.write_text(sweep_report.markdown(report))
    tmp.replace(run_dir / SWEEP_MD)
    sweep_report.plot(report, run_dir / SWEEP_PNG)


def run_sweep(sweep: SweepConfig, *, log: Callable[[str], Any] = print,
              train: Callable[[TransferConfig, Callable], dict] = _train,
              evaluate_zero_shot: Callable = zero_shot) -> dict[str, Any]:
    """Zero-shot once, then every budget x seed (finished ones read back), then the report.

    Returns the report (what sweep.json holds). A run that fails in training (a non-finite
    loss) is recorded as failed and the sweep goes on; bad input stops it before any work.
    ``train(cfg, log)`` runs one transfer (run_transfer with transfer's evaluation) and
    ``evaluate_zero_shot(sweep, task, log)`` returns the zero-shot results dict; tests of the
    bookkeeping replace them."""
    from pgbench.task import load_task

    if sweep.seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {sweep.seeds}")
    out = Path(sweep.run_dir)
    _check_writable(out)
    task = load_task(sweep.base.task, sweep.base.tasks_dir)
    task.check_split(sweep.base.eval_split or task.eval_split)
    plan = [(b, s) for b in sweep.budgets for s in range(sweep.seeds)]
    configs = {(b, s): run_config(sweep, b, s) for b, s in plan}
    for cfg in configs.values():  # a run directory made with other flags: refuse before training
        check_run_dir(Path(cfg.run_dir), _identity(cfg))

    log(f"pgbench sweep: {task.name}, budgets {', '.join(sweep.budgets)} x {sweep.seeds} seed(s) "
        f"= {len(plan)} runs in {out}")
    t0 = time.perf_counter()
    zs = evaluate_zero_shot(sweep, task, log=log)
    key = sweep_report.headline_key(task.metric, zs["metrics"], sweep.metric)
    log(f"pgbench sweep: zero-shot {key} {zs['metrics'][key]:.4f} ({time.perf_counter() - t0:.1f} s)")

    runs: dict[tuple[str, int], dict] = {}
    for i, (b, s) in enumerate(plan, start=1):
        cfg = configs[(b, s)]
        run_dir = Path(cfg.run_dir)
        head = f"pgbench sweep: [{i}/{len(plan)}] budget {b}, seed {s}:"
        if is_finished(run_dir):
            rec = run_record(run_dir, b, s, key, out)
            log(f"{head} finished earlier, skipped ({key} {sweep_report.fmt_score(rec['score'])})")
        else:
            log(f"{head} training in {run_dir}")
            t = time.perf_counter()
            try:
                train(cfg, log)
                rec = run_record(run_dir, b, s, key, out)
                log(f"{head} {key} {sweep_report.fmt_score(rec['score'])} after {rec['steps']} steps on "
                    f"{rec['examples']} examples ({time.perf_counter() - t:.1f} s)")
            except TrainingError as e:
                rec = {**run_record(run_dir, b, s, key, out), "status": "failed", "error": str(e)}
                log(f"{head} failed: {e}")
        runs[(b, s)] = rec
        pending = [runs.get(p) or run_record(Path(configs[p].run_dir), *p, key, out) for p in plan]
        write_report(out, build_report(sweep, task, key, zs, pending))
    report = build_report(sweep, task, key, zs, [runs[p] for p in plan])
    write_report(out, report)
    return report
