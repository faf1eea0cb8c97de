"""OK-VQA (okvqa.allenai.org).

Format source: okvqa.allenai.org (VQA-layout JSONs ``OpenEnded_mscoco_<split>_questions.json``,
``mscoco_<split>_annotations.json``; COCO 2014 images) as read by big_vision's TFDS builder
``datasets/okvqa``; prompt/target from ``transfers/okvqa.py`` (``answer en {question}``, one
sampled answer). Metric: ``vqa_accuracy`` with ``mode="simple"`` — big_vision's ``vqa``
evaluator (min(1, #matches/3), no normalisation, no leave-one-out), which produced the
paper's val number.
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import vqa
from pgbench.task import Task

SPLITS = ("train2014", "val2014")


def _files(split):
    return f"OpenEnded_mscoco_{split}_questions.json", f"mscoco_{split}_annotations.json"


def expected_files(data_dir: Path, split, options):
    return [data_dir / f for f in _files(split)]


def load(data_dir: Path, split, options):
    return taskio.vqa_layout(data_dir, *_files(split), split)


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "okvqa")
    return vqa.vqa_accuracy(taskio.aligned(examples, predictions), [list(e.references) for e in examples],
                            mode=options["mode"])


TASK = Task(
    name="okvqa", metric="vqa_accuracy", splits=SPLITS, eval_split="val2014", train_split="train2014",
    layout=("OpenEnded_mscoco_<split>_questions.json, mscoco_<split>_annotations.json, "
            "<split>/COCO_<split>_<image_id:012d>.jpg (split train2014|val2014)"),
    expected_files=expected_files, load=load, score=score, max_decode_len=32,
    paper="63.54 accuracy val (pt-224, big_vision README)",
    hparams=taskio.hparams(10, 128, 5e-6),
    options={"mode": "simple"},
    source="okvqa.allenai.org; big_vision datasets/okvqa + transfers/okvqa.py",
)
