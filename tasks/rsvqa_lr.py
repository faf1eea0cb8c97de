"""RSVQA low resolution (rsvqa.sylvainlobry.com; zenodo 6344334).

Format source: the zenodo release as big_vision's TFDS builder ``datasets/rsvqa_lr`` reads
it: ``LR_split_<split>_{questions,answers,images}.json`` (one entry per id, inactive ones
``{"id", "active": false}``; questions and answers zipped by position) and
``Images_LR/<img_id>.tif``. Default = the paper's "nonum" version (count questions
dropped); option ``numeric=True`` keeps them with counts binned as the builder does (0,
between 1 and 10, between 11 and 100, between 101 and 1000, more than 1000). Prompt
``answer en {question}``; answers and predictions lower-cased (``transfers/rsvqa_lr.py``).
Metric ``rsvqa_accuracy`` (variant lr): per-type accuracy, ``accuracy_average`` = the
paper's "AA" (big_vision ``acc_avg``).
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import short_answer
from pgbench.task import Task

SPLITS = ("train", "val", "test")
NUMERIC_TYPES = frozenset({"count"})


def bin_answer(answer: str, question_type: str) -> str:
    if question_type != "count":
        return answer
    try:
        n = int(answer)
    except ValueError:
        return answer
    if n == 0:
        return "0"
    for hi, lo in ((10, 1), (100, 11), (1000, 101)):
        if n <= hi:
            return f"between {lo} and {hi}"
    return "more than 1000"


def expected_files(data_dir: Path, split, options):
    return [data_dir / f"LR_split_{split}_{kind}.json" for kind in ("questions", "answers", "images")]


def load(data_dir: Path, split, options):
    skip = frozenset() if options["numeric"] else NUMERIC_TYPES
    return taskio.rsvqa_layout(data_dir, "LR_split", split, "Images_LR", ".tif", skip, bin_answer)


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "rsvqa_lr")
    return short_answer.rsvqa_accuracy(taskio.aligned(examples, predictions), [list(e.references) for e in examples],
                                       [e.meta["question_type"] for e in examples], variant="lr", to_lower=True)


TASK = Task(
    name="rsvqa_lr", metric="rsvqa_accuracy", splits=SPLITS, eval_split="test", train_split="train",
    layout="LR_split_<split>_{questions,answers,images}.json, Images_LR/<img_id>.tif",
    expected_files=expected_files, load=load, score=score, postprocess=taskio.lower_strip, max_decode_len=32,
    paper="92.65 average accuracy test, nonum (pt-224, big_vision README)",
    hparams=taskio.hparams(3, 256, 3e-6, label_smoothing=0.2),
    options={"numeric": False},
    source="zenodo 6344334; big_vision datasets/rsvqa_lr + transfers/rsvqa_lr.py",
)
