"""InfographicVQA (rrc.cvc.uab.es/?ch=17, task 3).

Format source: the RRC release as big_vision's TFDS builder ``datasets/infovqa`` reads it:
``infographicsVQA_train_v1.0.json``, ``infographicsVQA_val_v1.0_withQT.json``,
``infographicsVQA_test_v1.0.json`` (``data[{questionId, question, image_local_name,
answers}]``) and ``images/<image_local_name>``. On val, an answer containing ", " also
stands for every permutation of its parts (as the builder does). Prompt ``answer en
{question}``; answers and predictions lower-cased (``transfers/infovqa.py``). Metric
``anls``, ``mode`` "rrc" (server, default) or "big_vision".
"""

import itertools
from pathlib import Path

from pgbench import taskio
from pgbench.scoring import anls
from pgbench.task import Example, Task

SPLITS = ("train", "val", "test")
FILES = {"train": "infographicsVQA_train_v1.0.json", "val": "infographicsVQA_val_v1.0_withQT.json",
         "test": "infographicsVQA_test_v1.0.json"}


def expected_files(data_dir: Path, split, options):
    return [data_dir / FILES[split]]


def _permuted(answers):
    out = []
    for a in answers:
        out.extend(", ".join(p) for p in itertools.permutations(a.split(", "))) if ", " in a else out.append(a)
    return tuple(out)


def load(data_dir: Path, split, options):
    path = data_dir / FILES[split]
    out = []
    for k, r in enumerate(taskio.items(taskio.read_json(path), "data", path)):
        where = f"data[{k}]"
        qid = taskio.field(r, "questionId", path, where, (int, str))
        question = taskio.field(r, "question", path, where, str)
        image = taskio.field(r, "image_local_name", path, where, str)
        answers = tuple(a.lower() for a in taskio.string_list(r, "answers", path, where, default=[]))
        if split == "val":
            answers = _permuted(answers)
        out.append(Example(id=str(qid), image=f"images/{image}", prefix=f"answer en {question}", references=answers))
    return out


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "infovqa")
    return anls.anls(taskio.aligned(examples, predictions), [list(e.references) for e in examples],
                     mode=options["mode"])


TASK = Task(
    name="infovqa", metric="anls", splits=SPLITS, eval_split="val", train_split="train",
    layout=("infographicsVQA_train_v1.0.json, infographicsVQA_val_v1.0_withQT.json, "
            "infographicsVQA_test_v1.0.json, images/<image_local_name>"),
    expected_files=expected_files, load=load, score=score, postprocess=taskio.lower_strip, max_decode_len=48,
    paper="28.46 ANLS test (pt-224, big_vision README)",
    hparams=taskio.hparams(3, 256, 1e-5, wd=1e-6, label_smoothing=0.4),
    options={"mode": "rrc"},
    source="rrc.cvc.uab.es InfographicVQA; big_vision datasets/infovqa + transfers/infovqa.py",
)
