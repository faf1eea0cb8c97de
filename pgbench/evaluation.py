"""Run a task: decode its examples, post-process, score, write the run directory.

Three layers, each usable alone:

- :func:`generate` - the decode loop over per-example prompts: prompts bucketed by padded
  length (one compilation per bucket), images streamed by ``pgbench.data``, batches padded to
  the batch size with copies of their first row, the batch split over every local device
  (data parallel), decoding stopped once every row emitted EOS. It yields the outputs batch by
  batch (``pgbench predict`` and ``pgbench eval`` both sit on it).
- :func:`score_predictions` - the task's metric over ``{id: prediction}``, the results dict.
- :func:`evaluate` - ``pgbench eval``: a resumable run in a run directory (``pgbench.rundir``),
  sharded over processes when ``jax.distributed`` is initialised.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from pgbench import data, fingerprint, rundir, sharding
from pgbench.errors import InputError
from pgbench.task import Example, Task

DEFAULT_MAX_PROMPT_LEN = 256

# config.json keys that decide the predictions: a run directory resumes only when they match.
IDENTITY_KEYS = ("task", "split", "data", "checkpoint", "tokenizer", "inputs", "family", "options", "limit",
                 "max_new_tokens", "max_prompt_len", "beam", "dtype", "weights", "resize")


# ---------------------------------------------------------------------------------------
# Devices


def round_batch(batch_size: int, mesh) -> int:
    """The batch size rounded up to a multiple of the mesh's device count."""
    n = mesh.devices.size
    return -(-batch_size // n) * n


# ---------------------------------------------------------------------------------------
# Decoding


@dataclasses.dataclass(frozen=True)
class Output:
    """One example's result: ``tokens`` i32[K] (-1 after EOS) and ``text`` (decoded, EOS
    stripped), or ``error`` (then ``tokens`` is None and ``text`` is "")."""

    index: int
    text: str = ""
    tokens: np.ndarray | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """How :func:`generate` decodes. ``beam`` > 1 is beam search (``sampler`` is ignored)."""

    max_new_tokens: int = 32
    max_prompt_len: int = DEFAULT_MAX_PROMPT_LEN
    batch_size: int = 8
    beam: int = 1
    sampler: Any = None  # pgbench.decode.Sampler; None = greedy
    seed: int = 0
    attn_impl: str = "xla"
    cache_dtype: str = "float32"
    resize: str = "bigvision"
    threads: int | None = None

    def check(self) -> None:
        for name in ("max_new_tokens", "batch_size", "beam"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_prompt_len < 2:
            raise InputError(f"max-prompt-len must be >= 2, got {self.max_prompt_len}")


def resolve_tokenizer_path(checkpoint: str | Path, tokenizer: str | Path | None) -> Path:
    """--tokenizer if given, else the tokenizer file inside an HF checkpoint directory."""
    from pgbench.errors import TokenizerError

    if tokenizer is not None:
        return Path(tokenizer)
    ckpt = Path(checkpoint)
    if ckpt.is_dir():
        for name in ("tokenizer.model", "tokenizer.json"):
            if (ckpt / name).is_file():
                return ckpt / name
        raise TokenizerError(f"{ckpt}: checkpoint directory has no tokenizer.model or "
                             "tokenizer.json; pass --tokenizer PATH")
    raise TokenizerError(f"{ckpt}: a .npz checkpoint carries no tokenizer; pass --tokenizer PATH "
                         "(e.g. paligemma_tokenizer.model)")


def _check_vocab(prompts: Sequence[data.Prompt], vocab_size: int, tok) -> None:
    for p in prompts:
        if p.tokens is not None and np.any(p.tokens >= vocab_size):
            bad = sorted(set(p.tokens[p.tokens >= vocab_size].tolist()))
            raise InputError(f"prompt token ids {bad[:5]} are outside the model's vocabulary "
                             f"({vocab_size} ids): the tokenizer {tok.path} does not belong to "
                             "this checkpoint")


def generate(model, cfg, tok, examples: Sequence[Example], settings: DecodeSettings, *,
             data_dir: Path = Path("."), todo: Sequence[int] | None = None, mesh=None,
             ) -> Iterator[list[Output]]:
    """Decode ``examples[i]`` for ``i`` in ``todo`` (default: all), yielding one list of
    :class:`Output` per decoded batch (write it, then flush: that is the unit a kill can lose).

    Failed examples (prompt over ``max_prompt_len``, missing or unreadable image) come as
    ``Output(error=...)`` with the next batch. Within a prompt bucket, outputs follow
    ``todo``'s order; buckets come shortest first. Greedy and beam outputs do not depend on
    the batch size or the number of devices.
    """
    import jax

    from pgbench import decode

    settings.check()
    todo = list(range(len(examples)) if todo is None else todo)
    mesh = mesh if mesh is not None else sharding.local_mesh()
    batch_size = round_batch(settings.batch_size, mesh)
    model = sharding.replicate(model, mesh)
    sampler = settings.sampler or decode.Sampler()
    key = jax.random.key(settings.seed)

    prompts = data.encode_prompts(tok, [examples[i] for i in todo],
                                  max_prompt_len=settings.max_prompt_len, threads=settings.threads)
    prompts_by_index = dict(zip(todo, prompts))
    _check_vocab(prompts, cfg.llm.vocab_size, tok)
    pending = [Output(i, error=p.error) for i, p in zip(todo, prompts) if p.error]
    plan = data.plan_batches(prompts, range(len(todo)), len(todo) or 1,
                             max_prompt_len=settings.max_prompt_len)  # one group per bucket
    order = [todo[j] for _, group in plan for j in group]
    length_of = {todo[j]: length for length, group in plan for j in group}
    stream = data.image_stream(examples, order, data_dir=data_dir, image_size=cfg.image_size,
                               resize=settings.resize, threads=settings.threads,
                               prefetch=2 * batch_size)

    def run(batch: list[data.Loaded], length: int, number: int) -> list[Output]:
        n = len(batch)
        idx = [b.index for b in batch]
        pad = [idx[0]] * (batch_size - n)  # copies of the first row: same shapes, one compile
        text = data.text_batch(prompts_by_index, idx + pad, length, tok.pad_id)
        imgs = np.stack([b.image for b in batch] + [batch[0].image] * len(pad))
        args = [sharding.shard_rows(a, mesh) for a in (imgs, text["tokens"], text["input_mask"],
                                         text["mask_ar"])]
        if settings.beam > 1:
            out = decode.beam_decode(model, *args, max_new_tokens=settings.max_new_tokens,
                                     beam_size=settings.beam, eos_id=tok.eos_id,
                                     cache_dtype=settings.cache_dtype, attn_impl=settings.attn_impl)
        else:
            out = decode.decode(model, *args, max_new_tokens=settings.max_new_tokens,
                                eos_id=tok.eos_id, cache_dtype=settings.cache_dtype,
                                attn_impl=settings.attn_impl, sampler=sampler,
                                key=jax.random.fold_in(key, number))
        tokens = np.asarray(out.tokens)[:n]
        return [Output(i, tok.decode(t), t) for i, t in zip(idx, tokens)]

    batch: list[data.Loaded] = []
    number = 0
    for item in stream:
        if item.error is not None:
            pending.append(Output(item.index, error=item.error))
            continue
        if batch and length_of[item.index] != length_of[batch[0].index]:
            yield pending + run(batch, length_of[batch[0].index], number)
            pending, batch, number = [], [], number + 1
        batch.append(item)
        if len(batch) == batch_size:
            yield pending + run(batch, length_of[batch[0].index], number)
            pending, batch, number = [], [], number + 1
    if batch:
        yield pending + run(batch, length_of[batch[0].index], number)
        pending = []
    if pending:
        yield pending


# ---------------------------------------------------------------------------------------
# Scoring


def score_predictions(task: Task, split: str, examples: Sequence[Example],
                      predictions: Mapping[str, str], options: Mapping[str, Any], *,
                      failed: Mapping[str, str] | None = None, seconds: float | None = None,
                      num_decoded: int | None = None) -> dict:
    """``results.json``'s content: the task's metric over ``predictions`` ({id: post-processed
    text}). An example without a prediction scores as "" (wrong) and is counted as missing;
    ``failed`` ({id: reason}) are the examples whose decoding failed (also scored as "")."""
    failed = dict(failed or {})
    ids = [ex.id for ex in examples]
    missing = [i for i in ids if i not in predictions and i not in failed]
    full = {i: predictions.get(i, "") for i in ids}
    metrics = task.score(examples, full, options)
    results = {"task": task.name, "split": split, "num_examples": len(ids),
               "num_failed": len(failed), "num_missing": len(missing),
               "metrics": _plain(metrics)}
    if missing:
        results["missing_ids"] = missing[:10]
    if failed:
        results["failed_ids"] = list(failed)[:10]
    if seconds is not None:
        results["seconds"] = round(seconds, 3)
        n = len(ids) if num_decoded is None else num_decoded
        results["examples_per_second"] = round(n / seconds, 3) if seconds > 0 else None
        if num_decoded is not None:
            results["num_decoded_this_run"] = num_decoded
    return results


def _plain(x):
    """numpy scalars/arrays -> JSON values, recursively."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


# ---------------------------------------------------------------------------------------
# A full run


@dataclasses.dataclass
class EvalRequest:
    """Everything ``pgbench eval`` needs (the CLI fills it from its flags)."""

    task: Task
    data: Path
    checkpoint: Path
    tokenizer: Path
    run_dir: Path
    split: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    limit: int | None = None
    family: str | None = None
    dtype: str = "float32"
    weights: str = "float"  # or "int8": the decoder's weight-only int8 (model/quantize.py)
    settings: DecodeSettings = DecodeSettings()
    progress: bool = False


def resolved_config(req: EvalRequest, split: str, options: Mapping[str, Any], mesh,
                    process_count: int) -> dict:
    s = req.settings
    return {
        "command": "eval",
        "task": req.task.name, "split": split, "data": str(Path(req.data).resolve()),
        "checkpoint": str(Path(req.checkpoint).resolve()),
        "tokenizer": str(Path(req.tokenizer).resolve()), "family": req.family,
        "inputs": fingerprint.inputs(req.checkpoint, req.tokenizer),
        "options": _plain(dict(options)), "limit": req.limit,
        "max_new_tokens": s.max_new_tokens, "max_prompt_len": s.max_prompt_len,
        "beam": s.beam, "dtype": req.dtype, "resize": s.resize,
        # null for the checkpoint's own weights, as in run directories made before the option
        "weights": None if req.weights == "float" else req.weights,
        "batch_size": s.batch_size, "attention": s.attn_impl,
        "metric": req.task.metric, "devices": [str(d) for d in mesh.devices.flat],
        "processes": process_count, "versions": rundir.versions(),
    }


def _prediction_row(ex: Example, out: Output, postprocess) -> dict:
    row = {"id": ex.id, "prompt": ex.prefix,
           "prediction": "" if out.error else postprocess(out.text)}
    if ex.references and all(isinstance(r, str) for r in ex.references):
        row["references"] = list(ex.references)
    if out.error:
        row["error"] = out.error
    return row


def _load_model(req: EvalRequest):
    import jax.numpy as jnp

    from pgbench.checkpoints import load_checkpoint
    from pgbench.model.layer_forms import default_stacked
    from pgbench.model.quantize import quantize_decoder
    from pgbench.tokenizer import Tokenizer

    tok = Tokenizer(req.tokenizer, require_locseg=False)
    model, cfg = load_checkpoint(req.checkpoint, family=req.family, dtype=jnp.dtype(req.dtype),
                                 stacked=default_stacked())
    return quantize_decoder(model, req.weights), cfg, tok


def _rows_by_id(paths: Sequence[Path]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for p in paths:
        for row in rundir.read_predictions(p):
            rows.setdefault(row["id"], row)
    return rows


def evaluate(req: EvalRequest, *, process_index: int = 0, process_count: int = 1,
             barrier=None, mesh=None, loaded=None, log=print) -> dict | None:
    """Run (or resume) ``pgbench eval`` in ``req.run_dir``; returns the results dict (process 0)
    or None (other processes of a multi-process run).

    With ``process_count`` > 1 each process decodes examples ``process_index::process_count``
    into ``predictions.<process_index>.jsonl``; after ``barrier()`` process 0 merges them into
    ``predictions.jsonl`` and scores. ``loaded``: an already loaded ``(model, cfg,
    tokenizer)`` to use instead of reading ``req.checkpoint`` (benchmarks, notebooks).
    """
    start = time.perf_counter()
    task = req.task
    split = task.check_split(req.split or task.eval_split)
    options = task.resolve_options(req.options)
    examples = task.examples(req.data, split, options)
    if req.limit is not None:
        if req.limit < 1:
            raise InputError(f"--limit must be >= 1, got {req.limit}")
        examples = examples[:req.limit]
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"task {task.name} split {split!r}: example id {dup!r} occurs twice")
    mesh = mesh if mesh is not None else sharding.local_mesh()
    run_dir = Path(req.run_dir)
    config = resolved_config(req, split, options, mesh, process_count)
    if process_index == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        resuming = rundir.check_config(run_dir, config, IDENTITY_KEYS)
        rundir.write_json(run_dir / rundir.CONFIG, config)
        if resuming:
            log(f"resuming the run in {run_dir}")
    if barrier is not None:
        barrier("pgbench-eval-config")

    merged = rundir.predictions_path(run_dir)
    mine = merged if process_count == 1 else rundir.predictions_path(run_dir, process_index)
    done = _rows_by_id([merged, mine])
    shard = list(range(process_index, len(examples), process_count))
    todo = [i for i in shard if examples[i].id not in done]
    decoded = 0
    if todo:
        model, cfg, tok = loaded if loaded is not None else _load_model(req)
        bar = None
        if req.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(shard), initial=len(shard) - len(todo), unit="ex",
                       desc=f"eval {task.name}", file=sys.stderr, smoothing=0.1)
        try:
            with rundir.PredictionWriter(mine) as writer:
                for outputs in generate(model, cfg, tok, examples, req.settings,
                                        data_dir=Path(req.data), todo=todo, mesh=mesh):
                    writer.write(_prediction_row(examples[o.index], o, task.postprocess)
                                 for o in outputs)
                    decoded += len(outputs)
                    if bar is not None:
                        bar.update(len(outputs))
        finally:
            if bar is not None:
                bar.close()
    if barrier is not None:
        barrier("pgbench-eval-decoded")
    if process_index != 0:
        return None
    if process_count > 1:
        rundir.merge_shards(run_dir, process_count)
    rows = _rows_by_id([merged])
    predictions = {i: r.get("prediction", "") for i, r in rows.items() if "error" not in r}
    failed = {i: r["error"] for i, r in rows.items() if "error" in r}
    results = score_predictions(task, split, examples, predictions, options, failed=failed,
                                seconds=time.perf_counter() - start, num_decoded=decoded)
    rundir.write_results(run_dir, results)
    return results


def score_file(task: Task, data_dir: Path, split: str, predictions_file: Path, *,
               options: Mapping[str, Any] | None = None, run_dir: Path | None = None) -> dict:
    """``pgbench score``: score a predictions file made anywhere (lines ``{"id", "prediction"}``)
    with the task's post-processing and metric; writes results.json/.md into ``run_dir``.

    Ids not in the split are an error naming a few; a line that is not a JSON object with an
    ``id`` and a string ``prediction``, or an id given twice, is an error naming the line.
    """
    start = time.perf_counter()
    split = task.check_split(split)
    opts = task.resolve_options(options)
    examples = task.examples(data_dir, split, opts)
    rows = rundir.read_predictions(predictions_file, strict=True)
    predictions: dict[str, str] = {}
    for n, row in enumerate(rows, start=1):
        if not isinstance(row.get("prediction"), str):
            raise rundir.RunDirError(f"{predictions_file}: line {n} has no string \"prediction\"")
        if row["id"] in predictions:
            raise rundir.RunDirError(f"{predictions_file}: line {n} repeats id {row['id']!r}")
        predictions[row["id"]] = task.postprocess(row["prediction"])
    known = {ex.id for ex in examples}
    unknown = [i for i in predictions if i not in known]
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:5])
        raise InputError(f"{predictions_file}: {len(unknown)} id(s) are not in {task.name} split "
                         f"{split!r}, e.g. {shown}")
    results = score_predictions(task, split, examples, predictions, opts,
                                seconds=time.perf_counter() - start)
    results["predictions"] = str(Path(predictions_file).resolve())
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        rundir.write_json(Path(run_dir) / rundir.CONFIG, {
            "command": "score", "task": task.name, "split": split,
            "data": str(Path(data_dir).resolve()), "options": _plain(opts),
            "predictions": results["predictions"], "metric": task.metric,
            "versions": rundir.versions()})
        rundir.write_results(run_dir, results)
    return results


def dumps(results: Mapping[str, Any]) -> str:
    return json.dumps(results, indent=2, ensure_ascii=False)
