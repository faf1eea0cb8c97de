"""TextVQA 0.5.1 (textvqa.org).

Format source: textvqa.org/dataset (``TextVQA_0.5.1_<split>.json``; OpenImages JPEGs in
``train_images/`` for train and val, ``test_images/`` for test) as read by big_vision's TFDS
builder ``datasets/textvqa``; prompt/target from ``transfers/textvqa.py`` (``answer en
{question}``, one sampled answer). big_vision also un-rotates images listed in OpenImages'
``rotation.csv``, which is not part of the TextVQA release; pgbench reads the images as shipped.
Metric: ``vqa_accuracy`` with every answer_type forced to "other" (as the config does);
``mode`` "official" (default) = vqaEval.py, the EvalAI server's metric behind the paper's
test-std number; "big_vision" = big_vision's vqav2 evaluator.
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import vqa
from pgbench.task import Example, Task

SPLITS = ("train", "val", "test")


def expected_files(data_dir: Path, split, options):
    return [data_dir / f"TextVQA_0.5.1_{split}.json"]


def load(data_dir: Path, split, options):
    path = data_dir / f"TextVQA_0.5.1_{split}.json"
    folder = "test_images" if split == "test" else "train_images"
    out = []
    for k, r in enumerate(taskio.items(taskio.read_json(path), "data", path)):
        where = f"data[{k}]"
        qid = taskio.field(r, "question_id", path, where, int)
        image_id = taskio.field(r, "image_id", path, where, str)
        question = taskio.field(r, "question", path, where, str)
        answers = taskio.string_list(r, "answers", path, where, default=[])
        out.append(Example(id=str(qid), image=f"{folder}/{image_id}.jpg", prefix=f"answer en {question}",
                           references=answers, meta={"answer_type": "other"}))
    return out


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "textvqa")
    return vqa.vqa_accuracy(taskio.aligned(examples, predictions), [list(e.references) for e in examples],
                            answer_types=["other"] * len(examples), mode=options["mode"])


TASK = Task(
    name="textvqa", metric="vqa_accuracy", splits=SPLITS, eval_split="val", train_split="train",
    layout="TextVQA_0.5.1_<split>.json, train_images/<image_id>.jpg (train, val), test_images/<image_id>.jpg",
    expected_files=expected_files, load=load, score=score, max_decode_len=32,
    paper="55.47 accuracy test-std (pt-224, big_vision README)",
    hparams=taskio.hparams(5, 256, 3e-6),
    options={"mode": "official"},
    source="textvqa.org; big_vision datasets/textvqa + transfers/textvqa.py",
)
