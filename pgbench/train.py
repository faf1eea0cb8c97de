"""Transfer: fine-tune a checkpoint on a task's training split at an example budget.

``run_transfer(TransferConfig(...))`` is what ``pgbench transfer`` runs:

1. check the run directory (writable; a resumed run's saved config equals this one);
2. draw the budget's examples (``budgets``) and build the grain pipeline (``train_data``);
3. build the device mesh (``sharding``: data parallel and/or FSDP, ``--mesh``), load the
   checkpoint straight onto its shards, split off the frozen parameters, build big_vision's
   optimizer (``optim``; its state created in the shards of its parameters) and the jitted
   step with gradient accumulation (``train_step``), batches split over the mesh;
4. resume from the newest complete Orbax checkpoint (``train_checkpoint``) if there is one;
5. train with a progress bar, one ``metrics.jsonl`` line per logged step, a checkpoint every
   ``ckpt_every`` steps (the last ``keep`` kept), evaluation every ``eval_every`` steps;
6. score the evaluation split and export the model as a big_vision ``.npz`` and a Hugging
   Face directory.

Same seed and flags -> bit-identical parameters, whether or not the run was killed and
resumed on the way (the data order, the drawn targets and the dropout masks are functions of
(seed, step), and the optimizer state is restored exactly).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pgbench import budgets, fingerprint, lora, optim, rundir
from pgbench.errors import InputError, PgbenchError

HPARAM_MODES = ("paper", "default")
LORA_KEY = 1  # the adapters' init key is fold_in(key(seed), LORA_KEY)
LORA_FILE = "lora.npz"
DEFAULT_EPOCH_CAP = 10
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUBSET_FILE = "subset.json"
# Flags that may differ between a run and its resumption (they do not change the result).
# The mesh may change too: a checkpoint is restored onto whatever shards the new mesh gives
# (the result then equals the uninterrupted run within float rounding, not to the bit).
RESUME_FREE = ("eval_every", "log_every", "ckpt_every", "keep", "threads", "progress", "export",
               "mesh", "resolved")


class TrainingError(PgbenchError):
    """Training cannot start or cannot go on (bad run directory, non-finite loss, changed flags)."""


@dataclasses.dataclass(frozen=True)
class TransferConfig:
    """Everything a transfer run depends on; ``None`` hyper-parameters come from ``hparams``."""

    task: str
    data: str
    checkpoint: str
    tokenizer: str
    run_dir: str
    budget: int | None = None  # None: the full split
    seed: int = 0
    hparams: str = "paper"
    epochs: float | None = None
    steps: int | None = None
    batch: int | None = None
    micro_batch: int | None = None  # examples per forward pass; batch = K micro-batches
    lr: float | None = None
    wd: float | None = None
    dropout: float | None = None
    label_smoothing: float | None = None
    freeze: tuple[str, ...] | None = None
    lora_rank: int | None = None  # LoRA adapters (pgbench.lora); None: full fine-tuning
    lora_alpha: float | None = None  # default: the rank (scale alpha / rank = 1)
    lora_targets: tuple[str, ...] | None = None  # default: every decoder projection
    warmup_percent: float = 0.05
    clip_norm: float = 1.0
    text_len: int | None = None  # default: fits the longest (prefix, target) of the subset
    truncate: str = "error"
    remat: str | None = "nothing_saveable"
    attn_impl: str = "xla"
    param_dtype: str | None = None  # e.g. bfloat16; default: as stored
    compute_dtype: str | None = None
    mesh: str | None = None  # "data=8", "fsdp=8", "data=2,fsdp=4"; None: data parallel on all devices
    family: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    tasks_dir: tuple[str, ...] = ()
    eval_every: int = 0  # steps; 0: only at the end
    eval_split: str | None = None
    log_every: int = 1
    ckpt_every: int = 100
    keep: int = 2
    threads: int | None = None
    progress: bool = True
    export: bool = True


def resolve_hparams(task_hparams: Mapping[str, Any], cfg: TransferConfig) -> dict[str, Any]:
    """The hyper-parameters a run uses: ``--hparams paper`` = the task's App. J settings,
    ``default`` = the paper's single default (lr 1e-5, batch 256, no wd / dropout / label
    smoothing / freezing, the task's epochs capped at 10); each flag given overrides."""
    if cfg.hparams not in HPARAM_MODES:
        raise InputError(f"--hparams {cfg.hparams!r}: expected one of {', '.join(HPARAM_MODES)}")
    epochs = task_hparams.get("epochs", DEFAULT_EPOCH_CAP)
    if cfg.hparams == "paper":
        freeze = task_hparams.get("freeze", False)
        base = {"epochs": epochs, "batch": task_hparams.get("batch", 256),
                "lr": task_hparams.get("lr", 1e-5), "wd": task_hparams.get("wd", 0.0),
                "dropout": task_hparams.get("dropout", 0.0),
                "label_smoothing": task_hparams.get("label_smoothing", 0.0),
                "freeze": ("img",) if freeze is True else tuple(freeze or ())}
    else:
        base = {"epochs": min(epochs, DEFAULT_EPOCH_CAP), "batch": 256, "lr": 1e-5, "wd": 0.0,
                "dropout": 0.0, "label_smoothing": 0.0, "freeze": ()}
    for k in base:
        if getattr(cfg, k) is not None:
            base[k] = tuple(getattr(cfg, k)) if k == "freeze" else getattr(cfg, k)
    return base


def _identity(cfg: TransferConfig) -> dict[str, Any]:
    """The resolved config as JSON (what config.json holds and a resume must match), with
    ``inputs``: fingerprints of the checkpoint's and tokenizer's bytes (``fingerprint``), so
    that a checkpoint replaced at the same path is not resumed into."""
    out = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    return {**out, "inputs": fingerprint.inputs(cfg.checkpoint, cfg.tokenizer)}


def check_run_dir(run_dir: Path, identity: Mapping[str, Any]) -> bool:
    """Create/verify the run directory; True when it holds an earlier run of this config.

    Raises :class:`TrainingError` if it cannot be written, or if its config.json differs
    from ``identity`` in a flag that changes the result (naming every difference)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"--run-dir {run_dir} is not writable: {e.strerror or e}") from None
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.exists():
        return False
    try:
        saved = json.loads(saved_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrainingError(f"{saved_path}: unreadable ({e}); remove it or use another --run-dir") from None
    diffs = [f"{k}: saved {saved.get(k)!r}, now {identity.get(k)!r}"
             for k in sorted(set(saved) | set(identity))
             if k not in RESUME_FREE and rundir.key_differs(saved, identity, k)]
    if diffs:
        raise TrainingError(f"{run_dir} holds a run with other settings; resume it with the same "
                            "flags or use another --run-dir. Differences: " + "; ".join(diffs))
    return True


def check_subset(run_dir: Path, ids: list[str]) -> None:
    """A resumed run must train on the examples it started with (``subset.json``): the same
    flags over a training split that changed would otherwise continue on other data."""
    path = run_dir / SUBSET_FILE
    if not path.exists():  # a kill before the first write: nothing to compare
        return
    saved = json.loads(path.read_text())
    if saved != ids:
        first = next((i for i, (a, b) in enumerate(zip(saved, ids)) if a != b), min(len(saved), len(ids)))
        then = saved[first] if first < len(saved) else "(end)"
        now = ids[first] if first < len(ids) else "(end)"
        raise TrainingError(f"{run_dir} was started on other training examples than --data now gives "
                            f"({len(saved)} then, {len(ids)} now; example {first}: {then!r} then, {now!r} now); "
                            "resume it with the same data or use another --run-dir")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _metrics_log(run_dir: Path, resume_step: int) -> Any:
    """metrics.jsonl opened for appending, without lines past ``resume_step`` (written after
    the checkpoint the run resumes from)."""
    path = run_dir / METRICS_FILE
    if path.exists():
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= resume_step:
                    keep.append(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: drop it and everything after
        path.write_text("".join(line + "\n" for line in keep))
    return path.open("a")


def _micro_batch(batch: int, micro: int | None, devices: int = 1) -> int:
    micro = micro or batch
    if micro <= 0 or batch % micro:
        raise InputError(f"--micro-batch {micro} must divide the batch size {batch}")
    if micro % devices:
        raise InputError(f"the (micro-)batch of {micro} examples does not split over the mesh's "
                         f"{devices} devices; give --batch / --micro-batch a multiple of {devices}")
    return micro


def run_transfer(cfg: TransferConfig, *, evaluate: Callable | None = None, log=print) -> dict[str, Any]:
    """Train (or resume) and return a summary: steps, final loss, paths, eval results.

    ``evaluate(model, split, out_dir) -> dict`` scores a split (periodic and final
    evaluation); None skips evaluation."""
    from pgbench import sharding
    from pgbench.checkpoints import load_checkpoint
    from pgbench.task import load_task
    from pgbench.tokenizer import Tokenizer
    from pgbench.train_checkpoint import TrainCheckpoints, check_disk
    from pgbench.train_data import TrainData, fit_text_len
    from pgbench.train_step import LossConfig, make_train_step, split_micro_batches

    run_dir = Path(cfg.run_dir)
    lora_spec = lora_spec_of(cfg)  # bad LoRA flags: an error before anything is written
    identity = _identity(cfg)
    check_run_dir(run_dir, identity)
    mesh = sharding.make_mesh(cfg.mesh)
    primary = jax.process_index() == 0  # the one process that writes the run directory's files

    task = load_task(cfg.task, cfg.tasks_dir)
    hp = resolve_hparams(task.hparams, cfg)
    examples = task.examples(Path(cfg.data), task.train_split, dict(cfg.options))
    idx, note = budgets.budget_indices(len(examples), cfg.budget, cfg.seed)
    if note:
        log(f"pgbench transfer: {note}")
    subset = [examples[i] for i in idx]
    batch = int(hp["batch"])
    micro = _micro_batch(batch, cfg.micro_batch, mesh.devices.size)
    total = cfg.steps if cfg.steps is not None else optim.steps_for(hp["epochs"], len(subset), batch)
    if total <= 0:
        raise InputError(f"training would run {total} steps; give --steps or --epochs > 0")

    tok = Tokenizer(cfg.tokenizer, require_locseg=False)
    text_len = cfg.text_len or fit_text_len(tok, subset)
    # Each tensor goes straight onto its shards: the model never sits whole on one device.
    model, mcfg = load_checkpoint(cfg.checkpoint, family=cfg.family, dtype=cfg.param_dtype, mesh=mesh)
    if lora_spec is None:
        mask = optim.trainable_mask(model, hp["freeze"])
    else:  # the whole base model frozen, only the adapters train
        model = lora.attach(model, lora_spec, jax.random.fold_in(jax.random.key(cfg.seed), LORA_KEY))
        mask = lora.trainable_mask(model)
    trainable, frozen = eqx.partition(model, mask)
    del model
    if lora_spec is not None:  # fresh adapters: onto the mesh, beside their projections
        trainable = sharding.shard_tree(trainable, mesh)
    tx, schedule = optim.bigvision_optimizer(trainable, lr=hp["lr"], wd=hp["wd"], total_steps=total,
                                             warmup_percent=cfg.warmup_percent, clip_norm=cfg.clip_norm)
    opt_state = sharding.init_opt_state(tx, trainable, mesh)
    check_disk(run_dir, trainable, opt_state)

    lora_info = None if lora_spec is None else {**dataclasses.asdict(lora_spec), "scale": lora_spec.scale}
    freeze = list(hp["freeze"]) if lora_spec is None else ["all (LoRA: only the adapters train)"]
    resolved = {**identity, "resolved": {**hp, "freeze": freeze, "lora": lora_info, "steps": total,
                                         "micro_batch": micro, "text_len": text_len,
                                         "examples": len(subset), "split_examples": len(examples),
                                         "model": mcfg.name, "mesh": sharding.describe(mesh),
                                         "trained_params": int(sum(a.size for a in jax.tree.leaves(trainable)))}}
    ckpts = TrainCheckpoints(run_dir, keep=cfg.keep)
    start = ckpts.latest_step() or 0
    data_state = None
    subset_ids = [examples[i].id for i in idx]
    if start:
        check_subset(run_dir, subset_ids)
        trainable, opt_state, data_state = ckpts.restore(start, trainable, opt_state)
        log(f"pgbench transfer: resuming {run_dir} at step {start} of {total}")
    if primary:
        _write_json(run_dir / CONFIG_FILE, resolved)
        (run_dir / SUBSET_FILE).write_text(json.dumps(subset_ids) + "\n")

    data = TrainData(subset, tok=tok, data_dir=cfg.data, image_size=mcfg.image_size, text_len=text_len,
                     batch_size=batch, seed=cfg.seed, truncate=cfg.truncate, threads=cfg.threads)
    batches = data.iterator(total, data_state)
    lcfg = LossConfig(label_smoothing=hp["label_smoothing"], dropout=hp["dropout"], remat=cfg.remat,
                      attn_impl=cfg.attn_impl, compute_dtype=cfg.compute_dtype)
    step_fn = sharding.shard_train_step(make_train_step(tx, schedule, lr=hp["lr"], lcfg=lcfg, seed=cfg.seed),
                                        mesh, trainable, frozen, opt_state)

    def model_now():  # the plain model: adapters, if any, merged into their projections
        return lora.merged(eqx.combine(trainable, frozen))

    def run_eval(step: int, final: bool = False):
        if evaluate is None:
            return None
        split = cfg.eval_split or task.eval_split
        out = run_dir / ("eval" if final else f"eval/step_{step}")
        return evaluate(model_now(), split, out)

    bar = _progress(cfg.progress and primary, total, start)
    last_loss, t0, n0 = math.nan, time.perf_counter(), start
    with (_metrics_log(run_dir, start) if primary else open(os.devnull, "w")) as metrics_out:
        for step in range(start, total):
            micro_batches = sharding.shard_batch(split_micro_batches(next(batches), micro), mesh, leading=1)
            trainable, opt_state, m = step_fn(trainable, frozen, opt_state, micro_batches, jnp.int32(step))
            loss = float(m["loss"])
            if not math.isfinite(loss):
                last = ckpts.latest_step()
                where = f"{ckpts.path(last)} (step {last})" if last else "none (no checkpoint was saved)"
                raise TrainingError(f"loss is {loss} at step {step + 1}; stopped. Last good checkpoint: {where}")
            done = step + 1
            last_loss = loss
            rate = (done - n0) * batch / max(time.perf_counter() - t0, 1e-9)
            if done % cfg.log_every == 0 or done == total:
                rec = {"step": done, "loss": loss, "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"]),
                       "examples_per_s": rate, "examples_seen": done * batch}
                if cfg.eval_every and done % cfg.eval_every == 0 and done != total:
                    rec["eval"] = run_eval(done)
                metrics_out.write(json.dumps(rec, default=float) + "\n")
                metrics_out.flush()
            if done % cfg.ckpt_every == 0 or done == total:
                ckpts.save(done, trainable, opt_state, batches.get_state())
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{float(m['lr']):.2e}", ex_s=f"{rate:.1f}")
    bar.close()
    ckpts.close()

    summary: dict[str, Any] = {"steps": total, "final_loss": last_loss, "run_dir": str(run_dir),
                               "examples": len(subset)}
    if cfg.export:
        summary["export"] = export_model(model_now(), run_dir / "export", write=primary)
        if lora_spec is not None:
            adapters = host_copy(trainable)
            if primary:
                lora.save_npz(adapters, lora_spec, run_dir / "export" / LORA_FILE)
            summary["export"]["lora_npz"] = str(run_dir / "export" / LORA_FILE)
    summary["eval"] = run_eval(total, final=True)
    if primary:
        _write_json(run_dir / "summary.json", summary)
    return summary


def host_copy(model):
    """The model with every array as one numpy array in host memory, gathered from its shards
    (from every process's devices when there are several processes)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True))
                            if eqx.is_array(a) else a, model)
    return jax.tree.map(lambda a: np.asarray(a) if eqx.is_array(a) else a, model)


def export_model(model, out_dir: Path, *, write: bool = True) -> dict[str, str]:
    """The trained model as a big_vision ``.npz`` and a Hugging Face directory (gathered
    from its shards; ``write=False``: gather only, on processes other than the first)."""
    from pgbench.checkpoints import write_bigvision_npz, write_hf_dir
    from pgbench.checkpoints.bigvision_layout import to_bigvision_params

    model = host_copy(model)
    npz, hf = out_dir / "model.npz", out_dir / "hf"
    if not write:
        return {"bigvision_npz": str(npz), "hf_dir": str(hf)}
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = {k: np.ascontiguousarray(v) for k, v in to_bigvision_params(model).items()}
    write_bigvision_npz(flat, npz)
    write_hf_dir(flat, model.cfg, hf)
    return {"bigvision_npz": str(npz), "hf_dir": str(hf)}


class _NoBar:
    def update(self, n): pass
    def set_postfix(self, **kw): pass
    def close(self): pass


def _progress(enabled: bool, total: int, start: int):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, initial=start, desc="transfer", unit="step", dynamic_ncols=True)


def lora_spec_of(cfg: TransferConfig) -> "lora.LoraSpec | None":
    """The run's LoRA settings (None: full fine-tuning); bad values or --freeze alongside
    LoRA (which freezes the whole base model itself) are an :class:`InputError`."""
    spec = lora.make_spec(cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    if spec is not None and cfg.freeze is not None:
        raise InputError("--freeze does not combine with --lora-rank: with LoRA the whole base "
                         "model is frozen and only the adapters train")
    return spec


def parse_freeze(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """--freeze img --freeze llm/embed, or --freeze img,llm/embed; "none" -> nothing frozen."""
    if values is None:
        return None
    out = [p.strip() for v in values for p in v.split(",") if p.strip()]
    return () if out == ["none"] else tuple(out)
