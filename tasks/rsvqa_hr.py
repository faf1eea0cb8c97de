"""RSVQA high resolution (rsvqa.sylvainlobry.com; zenodo 6344367).

Format source: the zenodo release as big_vision's TFDS builder ``datasets/rsvqa_hr`` reads
it: ``USGS_split_<split>_{questions,answers,images}.json`` (split ``test_phili`` is the
paper's "test 2") and ``Data/<img_id>.png`` (the builder reads PNGs; when only
``Data/<img_id>.tif`` exists, the TIFFs are used). Default = "nonum" (area and count
questions dropped); ``numeric=True`` keeps them, areas binned as the builder does ("0 m2",
"between 1 m2 and 10 m2", ..., "more than 1000 m2"), counts as given. Prompt ``answer en
{question}``; lower-cased (``transfers/rsvqa_hr.py``). Metric ``rsvqa_accuracy`` (variant
hr), headline ``accuracy_average`` ("AA").
"""

import dataclasses
from pathlib import Path

from pgbench import taskio
from pgbench.scoring import short_answer
from pgbench.task import Task

SPLITS = ("train", "val", "test", "test_phili")
NUMERIC_TYPES = frozenset({"area", "count"})


def bin_answer(answer: str, question_type: str) -> str:
    if question_type != "area":
        return answer
    try:
        n = int(answer[:-2])
    except ValueError:
        return answer
    if n == 0:
        return "0 m2"
    for hi, lo in ((10, 1), (100, 11), (1000, 101)):
        if n <= hi:
            return f"between {lo} m2 and {hi} m2"
    return "more than 1000 m2"


def expected_files(data_dir: Path, split, options):
    return [data_dir / f"USGS_split_{split}_{kind}.json" for kind in ("questions", "answers", "images")]


def load(data_dir: Path, split, options):
    skip = frozenset() if options["numeric"] else NUMERIC_TYPES
    examples = taskio.rsvqa_layout(data_dir, "USGS_split", split, "Data", ".png", skip, bin_answer)
    if examples and not (data_dir / examples[0].image).exists() and \
            (data_dir / examples[0].image).with_suffix(".tif").exists():
        examples = [dataclasses.replace(e, image=e.image[:-4] + ".tif") for e in examples]
    return examples


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "rsvqa_hr")
    return short_answer.rsvqa_accuracy(taskio.aligned(examples, predictions), [list(e.references) for e in examples],
                                       [e.meta["question_type"] for e in examples], variant="hr", to_lower=True)


TASK = Task(
    name="rsvqa_hr", metric="rsvqa_accuracy", splits=SPLITS, eval_split="test", train_split="train",
    layout="USGS_split_<split>_{questions,answers,images}.json, Data/<img_id>.png (split test_phili = test 2)",
    expected_files=expected_files, load=load, score=score, postprocess=taskio.lower_strip, max_decode_len=32,
    paper="92.61 / 90.58 average accuracy test / test 2, nonum (pt-224, big_vision README)",
    hparams=taskio.hparams(1, 256, 1e-5),
    options={"numeric": False},
    source="zenodo 6344367; big_vision datasets/rsvqa_hr + transfers/rsvqa_hr.py",
)
