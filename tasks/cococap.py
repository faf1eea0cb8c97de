"""COCO captions, Karpathy split.

Format source: Karpathy's ``dataset_coco.json`` (from ``caption_datasets.zip``, Stanford
"Deep Visual-Semantic Alignments"), ``images[{filepath, filename, split, sentences[{raw}],
cocoid}]``, with COCO 2014 JPEGs at ``<filepath>/<filename>``; big_vision reads the same
split through TFDS ``coco_captions``. Prompt ``caption en``, target one sampled caption,
beam 2 (big_vision ``transfers/cococap.py``). Metric ``coco_caption`` (pycocoevalcap; needs
Java); one example per image, id = ``cocoid``, references = the ``raw`` captions.
"""

from pathlib import Path

from pgbench import taskio
from pgbench.scoring import caption
from pgbench.task import Example, Task

SPLITS = ("train", "restval", "val", "test")


def expected_files(data_dir: Path, split, options):
    return [data_dir / "dataset_coco.json"]


def load(data_dir: Path, split, options):
    path = data_dir / "dataset_coco.json"
    out = []
    for k, r in enumerate(taskio.items(taskio.read_json(path), "images", path)):
        where = f"images[{k}]"
        if taskio.field(r, "split", path, where, str) != split:
            continue
        cocoid = taskio.field(r, "cocoid", path, where, int)
        image = f"{taskio.field(r, 'filepath', path, where, str)}/{taskio.field(r, 'filename', path, where, str)}"
        sentences = taskio.field(r, "sentences", path, where, list)
        refs = tuple(taskio.field(s, "raw", path, f"{where}['sentences'][{j}]", str) for j, s in enumerate(sentences))
        out.append(Example(id=str(cocoid), image=image, prefix="caption en", references=refs))
    return out


def score(examples, predictions, options):
    examples = taskio.labelled(examples, "cococap")
    return caption.coco_caption(taskio.aligned(examples, predictions), [list(e.references) for e in examples])


TASK = Task(
    name="cococap", metric="coco_caption", splits=SPLITS, eval_split="val", train_split="train",
    layout="dataset_coco.json (Karpathy), train2014/COCO_train2014_<id:012d>.jpg, val2014/COCO_val2014_<id:012d>.jpg",
    expected_files=expected_files, load=load, score=score, max_decode_len=32, beam=2,
    paper="141.92 CIDEr Karpathy val (pt-224, big_vision README)",
    hparams=taskio.hparams(5, 256, 1e-5, wd=1e-6),
    source="Karpathy caption_datasets.zip; TFDS coco_captions; big_vision transfers/cococap.py",
)
