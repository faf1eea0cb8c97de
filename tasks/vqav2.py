"""VQAv2 (visualqa.org), open-ended.

Format source: visualqa.org/download.html (v2 question/annotation JSONs, COCO images) as read by
big_vision's TFDS builder ``datasets/vqa``; prompt and target from big_vision
``configs/proj/paligemma/transfers/vqav2.py`` (``answer en {question}``; one of the 10 human
answers per step). Metric: ``vqa_accuracy`` per answer type; ``mode`` "official" (default) is
GT-Vision-Lab's vqaEval.py, what the test server behind the paper's test-std number runs;
``mode="big_vision"`` gives big_vision's in-training val numbers.
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import vqa
from pgbench.task import Task

SPLITS = ("train2014", "val2014", "test-dev2015", "test2015")
LABELLED = ("train2014", "val2014")


def _files(split):
    q = f"v2_OpenEnded_mscoco_{split}_questions.json"
    return q, (f"v2_mscoco_{split}_annotations.json" if split in LABELLED else None)


def _image_folder(split):
    return "test2015" if split == "test-dev2015" else split


def expected_files(data_dir: Path, split, options):
    return [data_dir / f for f in _files(split) if f]


def load(data_dir: Path, split, options):
    return taskio.vqa_layout(data_dir, *_files(split), _image_folder(split))


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "vqav2")
    return vqa.vqa_accuracy(taskio.aligned(examples, predictions), [list(e.references) for e in examples],
                            answer_types=[e.meta.get("answer_type", "other") for e in examples],
                            mode=options["mode"])


TASK = Task(
    name="vqav2", metric="vqa_accuracy", splits=SPLITS, eval_split="val2014", train_split="train2014",
    layout=("v2_OpenEnded_mscoco_<split>_questions.json, v2_mscoco_<split>_annotations.json "
            "(train2014/val2014), <split>/COCO_<split>_<image_id:012d>.jpg (test-dev2015 images in test2015/)"),
    expected_files=expected_files, load=load, score=score, max_decode_len=32,
    paper="83.19 accuracy test-std (pt-224, big_vision README)",
    hparams=taskio.hparams(10, 256, 1e-5, wd=1e-6),
    options={"mode": "official"},
    source="visualqa.org; big_vision datasets/vqa + transfers/vqav2.py",
)
