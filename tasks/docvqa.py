"""DocVQA, single-page task 1 (rrc.cvc.uab.es/?ch=17).

Format source: the RRC release as big_vision's TFDS builder ``datasets/docvqa`` reads it:
``train_v1.0_withQT.json``, ``val_v1.0_withQT.json``, ``test_v1.0.json`` at the root
(``data[{questionId, question, image: "documents/<name>.png", answers}]``), PNGs at
``<split>/<image>``. Prompt = the question itself (``copy(question → prefix)`` in
``transfers/docvqa.py``, no "answer en"); target one answer. Post-processing lower-cases
(the evaluator's ``to_lower``). Metric ``anls``; ``mode`` "rrc" (default) is the RRC server's
scorer behind the paper's test number, "big_vision" its in-training ``anls_metric``.
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import anls
from pgbench.task import Example, Task

SPLITS = ("train", "val", "test")


def _file(split):
    return "test_v1.0.json" if split == "test" else f"{split}_v1.0_withQT.json"


def expected_files(data_dir: Path, split, options):
    return [data_dir / _file(split)]


def load(data_dir: Path, split, options):
    path = data_dir / _file(split)
    out = []
    for k, r in enumerate(taskio.items(taskio.read_json(path), "data", path)):
        where = f"data[{k}]"
        qid = taskio.field(r, "questionId", path, where, (int, str))
        question = taskio.field(r, "question", path, where, str)
        image = taskio.field(r, "image", path, where, str)
        answers = taskio.string_list(r, "answers", path, where, default=[])
        out.append(Example(id=str(qid), image=f"{split}/{image}", prefix=question, references=answers))
    return out


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "docvqa")
    return anls.anls(taskio.aligned(examples, predictions), [[r.lower() for r in e.references] for e in examples],
                     mode=options["mode"])


TASK = Task(
    name="docvqa", metric="anls", splits=SPLITS, eval_split="val", train_split="train",
    layout="train_v1.0_withQT.json, val_v1.0_withQT.json, test_v1.0.json, <split>/documents/<name>.png",
    expected_files=expected_files, load=load, score=score, postprocess=taskio.lower_strip, max_decode_len=32,
    paper="43.74 ANLS test (pt-224, big_vision README)",
    hparams=taskio.hparams(10, 256, 1e-5, wd=1e-6),
    options={"mode": "rrc"},
    source="rrc.cvc.uab.es DocVQA; big_vision datasets/docvqa + transfers/docvqa.py",
)
