"""ST-VQA task 3, open vocabulary (rrc.cvc.uab.es/?ch=11).

Format source: the RRC release as big_vision's TFDS builder ``datasets/stvqa`` reads it:
``train_task_3.json`` / ``test_task_3.json`` (``data[{question_id, question, answers,
file_path}]``), images ``train_images/<file_path>`` / ``test_task3_images/<file_path>``.
Splits are the release's ``train`` and ``test``; big_vision carves a pseudo-val out of train
from a fixed list of image paths — pass such a list (one ``file_path`` per line) as option
``val_ids`` to get ``val`` (and ``train`` without those images). Option ``coco_images``
swaps ``coco-text/<name>`` for the high-resolution COCO ``train2014/<name>`` as big_vision
does. Prompt ``answer en {question}``; answers and predictions lower-cased
(``transfers/stvqa.py``). Metric ``anls``, ``mode`` "rrc" (server, default) or "big_vision".
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import anls
from pgbench.task import Example, Task, TaskError

SPLITS = ("train", "val", "test")


def _file(split):
    return "test_task_3.json" if split == "test" else "train_task_3.json"


def expected_files(data_dir: Path, split, options):
    files = [data_dir / _file(split)]
    if split == "val" and options["val_ids"]:
        files.append(Path(options["val_ids"]))
    return files


def _val_ids(options, split):
    if not options["val_ids"]:
        if split == "val":
            raise TaskError("stvqa: the release has no val split; pass option val_ids=<file with one "
                            "file_path per line> (big_vision's pseudo-val list) to carve it out of train")
        return set()
    path = Path(options["val_ids"])
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except OSError as e:
        raise TaskError(f"stvqa: cannot read val_ids file {path} ({e})") from None


def load(data_dir: Path, split, options):
    path = data_dir / _file(split)
    val = _val_ids(options, split) if split != "test" else set()
    folder = "test_task3_images" if split == "test" else "train_images"
    out = []
    for k, r in enumerate(taskio.items(taskio.read_json(path), "data", path)):
        where = f"data[{k}]"
        file_path = taskio.field(r, "file_path", path, where, str)
        if split != "test" and (file_path in val) != (split == "val"):
            continue
        qid = taskio.field(r, "question_id", path, where, (int, str))
        question = taskio.field(r, "question", path, where, str)
        answers = tuple(a.lower() for a in taskio.string_list(r, "answers", path, where, default=[]))
        image = f"{folder}/{file_path}"
        if options["coco_images"] and file_path.startswith("coco-text/"):
            image = "train2014/" + file_path[len("coco-text/"):]
        out.append(Example(id=str(qid), image=image, prefix=f"answer en {question}", references=answers))
    return out


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "stvqa")
    return anls.anls(taskio.aligned(examples, predictions), [list(e.references) for e in examples],
                     mode=options["mode"])


TASK = Task(
    name="stvqa", metric="anls", splits=SPLITS, eval_split="test", train_split="train",
    layout="train_task_3.json, test_task_3.json, train_images/<file_path>, test_task3_images/<file_path>",
    expected_files=expected_files, load=load, score=score, postprocess=taskio.lower_strip, max_decode_len=48,
    paper="63.29 ANLS test (pt-224, big_vision README)",
    hparams=taskio.hparams(3, 256, 1e-5, wd=1e-6, label_smoothing=0.1),
    options={"mode": "rrc", "val_ids": "", "coco_images": False},
    source="rrc.cvc.uab.es ST-VQA; big_vision datasets/stvqa + transfers/stvqa.py",
)
