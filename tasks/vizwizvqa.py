"""VizWiz-VQA (vizwiz.org).

Format source: vizwiz.org/tasks-and-datasets/vqa (``annotations/<split>.json``, a list of
``{image, question, answers[10]{answer, answer_confidence}, answer_type, answerable}``;
JPEGs ``<split>/VizWiz_<split>_<n:08d>.jpg``) as read by big_vision's TFDS builder
``datasets/vizwizvqa`` (empty answers dropped); prompt/target from ``transfers/vizwizvqa.py``.
Example id = the image file name (the server keys answers by it).
Metric: ``vqa_accuracy``. The paper's 73.7 is the VizWiz test-std server number, and that
server runs the VQA evaluation (leave-one-out, answer normalisation), so ``mode`` defaults to
"official"; ``mode="simple"`` reproduces big_vision's own ``vqa`` evaluator on val.
Questions whose answers are all empty are left out of the mean, as big_vision does.
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import vqa
from pgbench.task import Example, Task

SPLITS = ("train", "val", "test")


def expected_files(data_dir: Path, split, options):
    return [data_dir / "annotations" / f"{split}.json"]


def load(data_dir: Path, split, options):
    path = data_dir / "annotations" / f"{split}.json"
    out = []
    for k, r in enumerate(taskio.items(taskio.read_json(path), None, path)):
        where = f"[{k}]"
        image = taskio.field(r, "image", path, where, str)
        question = taskio.field(r, "question", path, where, str)
        answers = taskio.field(r, "answers", path, where, list, default=[])
        texts = tuple(t for j, a in enumerate(answers)
                      if (t := taskio.field(a, "answer", path, f"{where}['answers'][{j}]", str)))
        meta = {"answer_type": taskio.field(r, "answer_type", path, where, str, default="")}
        out.append(Example(id=image, image=f"{split}/{image}", prefix=f"answer en {question}",
                           references=texts, meta=meta))
    return out


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "vizwizvqa")
    return vqa.vqa_accuracy(taskio.aligned(examples, predictions), [list(e.references) for e in examples],
                            mode=options["mode"])


TASK = Task(
    name="vizwizvqa", metric="vqa_accuracy", splits=SPLITS, eval_split="val", train_split="train",
    layout="annotations/<split>.json, <split>/VizWiz_<split>_<n:08d>.jpg",
    expected_files=expected_files, load=load, score=score, max_decode_len=48,
    paper="73.7 accuracy test-std (pt-224, big_vision README)",
    hparams=taskio.hparams(10, 256, 1e-5),
    options={"mode": "official"},
    source="vizwiz.org; big_vision datasets/vizwizvqa + transfers/vizwizvqa.py",
)
