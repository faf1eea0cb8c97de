"""A user's own data: JSON lines ``{"image", "prefix", "suffix"}`` (+ optional ``"id"``).

Layout: ``<split>.jsonl`` under ``--data`` (splits train/val/test); ``image`` is a path
relative to the data directory (or absolute); ``suffix`` is one reference string or a list of
them (each is both a reference and a training target). Example id =
the line's ``id`` if given, else its 1-based line number. Option ``metric`` picks the
scorer: exact_match (default), vqa_accuracy, anls, relaxed_accuracy, coco_caption,
detection_map (prediction and first reference parsed as PaliGemma detection strings
``<locY1><locX1><locY2><locX2> label ; …``; boxes compared in loc-bin units, which gives the
pixel IoUs since box IoU does not change when x and y are scaled; no confidence, so every
box scores 1.0); option ``to_lower`` lower-cases predictions and references for exact_match/relaxed_accuracy.
This is pgbench's own format (big_vision's ``datasets/jsonl.py`` reads the same kind of lines).
"""

import json
from pathlib import Path

from pgbench import structured, taskio
from pgbench.scoring import anls, caption, detection, short_answer, vqa
from pgbench.task import Example, Task, TaskError

SPLITS = ("train", "val", "test")
METRICS = ("exact_match", "vqa_accuracy", "anls", "relaxed_accuracy", "coco_caption", "detection_map")


def expected_files(data_dir: Path, split, options):
    return [data_dir / f"{split}.jsonl"]


def load(data_dir: Path, split, options):
    path = data_dir / f"{split}.jsonl"
    if options["metric"] not in METRICS:
        raise TaskError(f"jsonl: option metric={options['metric']!r} is not one of {', '.join(METRICS)}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: cannot read it ({e})") from None
    out, seen = [], set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
        where = f"line {n}"
        image = taskio.field(r, "image", path, where, str)
        prefix = taskio.field(r, "prefix", path, where, str)
        suffix = taskio.field(r, "suffix", path, where, (str, list), default=[])
        refs = (suffix,) if isinstance(suffix, str) else taskio.string_list(r, "suffix", path, where, default=[])
        ex_id = str(taskio.field(r, "id", path, where, (str, int), default=n))
        if ex_id in seen:
            raise TaskError(f"{path}: line {n} repeats id {ex_id!r}")
        seen.add(ex_id)
        out.append(Example(id=ex_id, image=image, prefix=prefix, references=refs))
    return out


def _boxes(text: str) -> list[dict]:
    """Objects of a detection string as ``{"box": [x1, y1, x2, y2] in loc bins, "label"}``."""
    return [{"box": [o.bins[1], o.bins[0], o.bins[3], o.bins[2]], "label": o.label}
            for o in structured.parse_detections(text).objects]


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "jsonl")
    preds, refs = taskio.aligned(examples, predictions), [list(e.references) for e in examples]
    metric = options["metric"]
    if metric == "exact_match":
        return short_answer.exact_match(preds, refs, to_lower=options["to_lower"])
    if metric == "relaxed_accuracy":
        return short_answer.relaxed_accuracy(preds, refs, to_lower=options["to_lower"])
    if metric == "vqa_accuracy":
        return vqa.vqa_accuracy(preds, refs)
    if metric == "anls":
        return anls.anls(preds, refs)
    if metric == "coco_caption":
        return caption.coco_caption(preds, refs)
    if metric == "detection_map":
        return detection.detection_map([_boxes(p) for p in preds], [_boxes(r[0] if r else "") for r in refs])
    raise TaskError(f"jsonl: option metric={metric!r} is not one of {', '.join(METRICS)}")


TASK = Task(
    name="jsonl", metric="exact_match", splits=SPLITS, eval_split="test", train_split="train",
    layout='<split>.jsonl: one {"image", "prefix", "suffix"[, "id"]} per line; images relative to --data',
    expected_files=expected_files, load=load, score=score, max_decode_len=32,
    paper="", hparams=taskio.hparams(10, 256, 1e-5),
    options={"metric": "exact_match", "to_lower": False},
    source="pgbench's own format",
)
