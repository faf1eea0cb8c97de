"""ChartQA (github.com/vis-nlp/ChartQA).

Format source: the release's ``ChartQA Dataset/`` folder (point ``--data`` at it), as
big_vision's TFDS builder ``datasets/chartqa`` reads it: ``<split>/<split>_human.json`` and
``<split>/<split>_augmented.json`` (lists of ``{imgname, query, label}``) and
``<split>/png/<imgname>``. Both subsets are in every split; id ``human/<index in file>`` or
``augmented/<index in file>``. Prompt = the query itself, target the label
(``transfers/chartqa.py``). Post-processing lower-cases; metric ``relaxed_accuracy``
(to_lower) per subset, headline ``relaxed_accuracy`` = mean of the human and augmented
accuracies, as the paper reports.
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import short_answer
from pgbench.task import Example, Task

SPLITS = ("train", "val", "test")
SUBSETS = ("human", "augmented")


def expected_files(data_dir: Path, split, options):
    return [data_dir / split / f"{split}_{s}.json" for s in SUBSETS]


def load(data_dir: Path, split, options):
    out = []
    for subset in SUBSETS:
        path = data_dir / split / f"{split}_{subset}.json"
        for k, r in enumerate(taskio.items(taskio.read_json(path), None, path)):
            where = f"[{k}]"
            label = taskio.field(r, "label", path, where, (str, int, float))
            out.append(Example(id=f"{subset}/{k}", image=f"{split}/png/{taskio.field(r, 'imgname', path, where, str)}",
                               prefix=taskio.field(r, "query", path, where, str), references=(str(label),),
                               meta={"subset": subset}))
    return out


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "chartqa")
    out, parts = {}, []
    for subset in SUBSETS:
        chosen = [e for e in examples if e.meta["subset"] == subset]
        if chosen:
            acc = short_answer.relaxed_accuracy(taskio.aligned(chosen, predictions),
                                                [list(e.references) for e in chosen], to_lower=True)["relaxed_accuracy"]
            out[f"relaxed_accuracy/{subset}"] = acc
            parts.append(acc)
    return {"relaxed_accuracy": sum(parts) / len(parts), **out}


TASK = Task(
    name="chartqa", metric="relaxed_accuracy", splits=SPLITS, eval_split="test", train_split="train",
    layout="<split>/<split>_human.json, <split>/<split>_augmented.json, <split>/png/<imgname> (the 'ChartQA Dataset' folder)",
    expected_files=expected_files, load=load, score=score, postprocess=taskio.lower_strip, max_decode_len=48,
    paper="57.08 mean relaxed accuracy (human 40.0, augmented 74.2) test (pt-224, big_vision README)",
    hparams=taskio.hparams(30, 256, 1e-5, wd=1e-6, dropout=0.1, label_smoothing=0.2),
    source="github.com/vis-nlp/ChartQA; big_vision datasets/chartqa + transfers/chartqa.py",
)
