"""TextCaps 0.1 (textvqa.org/textcaps).

Format source: textvqa.org/textcaps/dataset (``TextCaps_0.1_<split>.json``, one ``data``
entry per caption with ``image_id``, ``image_name``, ``caption_str``; TextVQA images
``train_images/<image_name>.jpg`` for train/val, ``test_images/`` for test), grouped by
``image_id`` as big_vision's TFDS builder ``datasets/textcaps`` does. Prompt ``caption en``;
target one sampled caption, lower-cased (``transfers/textcaps.py``); beam 3. Metric
``coco_caption`` (pycocoevalcap; needs Java); id = ``image_id``.
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import caption
from pgbench.task import Example, Task

SPLITS = ("train", "val", "test")


def expected_files(data_dir: Path, split, options):
    return [data_dir / f"TextCaps_0.1_{split}.json"]


def load(data_dir: Path, split, options):
    path = data_dir / f"TextCaps_0.1_{split}.json"
    folder = "test_images" if split == "test" else "train_images"
    grouped: dict[str, dict] = {}
    for k, r in enumerate(taskio.items(taskio.read_json(path), "data", path)):
        where = f"data[{k}]"
        image_id = taskio.field(r, "image_id", path, where, str)
        entry = grouped.setdefault(image_id, {"name": taskio.field(r, "image_name", path, where, str), "caps": []})
        cap = taskio.field(r, "caption_str", path, where, str, default="")
        if cap:
            entry["caps"].append(cap)
    return [Example(id=i, image=f"{folder}/{e['name']}.jpg", prefix="caption en", references=tuple(e["caps"]),
                    targets=tuple(c.lower() for c in e["caps"]))
            for i, e in grouped.items()]


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "textcaps")
    return caption.coco_caption(taskio.aligned(examples, predictions), [list(e.references) for e in examples])


TASK = Task(
    name="textcaps", metric="coco_caption", splits=SPLITS, eval_split="val", train_split="train",
    layout="TextCaps_0.1_<split>.json, train_images/<image_name>.jpg (train, val), test_images/<image_name>.jpg",
    expected_files=expected_files, load=load, score=score, max_decode_len=32, beam=3,
    paper="127.48 CIDEr val (pt-224, big_vision README)",
    hparams=taskio.hparams(5, 256, 1e-5, wd=1e-6),
    source="textvqa.org/textcaps; big_vision datasets/textcaps + transfers/textcaps.py",
)
