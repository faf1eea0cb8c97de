"""RefCOCO / RefCOCO+ / RefCOCOg referring expression segmentation.

Format source: lichengunc/refer (the ``refcoco.zip``, ``refcoco+.zip``, ``refcocog.zip``
downloads): ``<subset>/instances.json`` (COCO annotations: polygons or RLE, image sizes) and
``<subset>/refs(<split_by>).p``, a Python-2 pickle of a list of refs ``{ref_id, ann_id,
image_id, split, sentences[{sent_id, sent}]}``; COCO 2014 images at
``train2014/COCO_train2014_<image_id:012d>.jpg``. The pickle is read with an unpickler that
admits only builtin containers and scalars (``pgbench.taskio.load_pickle_builtins``), so a
tampered file cannot execute code. big_vision reads the same refs through its TFDS builder
``datasets/refcoco`` (ground-truth mask = pycocotools ``annToMask`` of the referred object).

Options: ``subset`` refcoco | refcoco+ | refcocog; ``split_by`` unc | umd | google (default
unc, umd for refcocog); ``vae`` the path of ``vae-oid.npz`` (needed to score). Splits as the
refs spell them: train, val, testA, testB (unc), test (umd/google).

Evaluation (big_vision ``transfers/refcoco_seg.py``, ``*_flat`` splits): one example per
sentence, id = ``sent_id``, prompt = the sentence itself, greedy up to 48 tokens. The
prediction must keep its ``<loc>``/``<seg>`` tokens: its first 4 tokens are read as the box
and the next 16 as VQ-VAE codes, decoded into a mask pasted into the box at the original
resolution (``pgbench.segmentation``, big_vision's segmentation evaluator); anything else is
an empty mask. Metric ``refcoco_miou`` (``miou`` headline, ``ciou``). Training target
(``refcoco_mask2str``): :func:`target_string` (needs the VQ-VAE encoder).
"""

import re
from pathlib import Path

import numpy as np

from pgbench import segmentation, structured, taskio
from pgbench.scoring import mask_iou
from pgbench.task import Example, Task, TaskError
from pgbench.tokenizer import LocSegIds

SUBSETS = ("refcoco", "refcoco+", "refcocog")
SPLIT_BYS = ("unc", "umd", "google")
SPLITS = ("train", "val", "testA", "testB", "test")
CHUNK = 64  # masks decoded and compared per step (full-resolution masks are large)


def _split_by(options) -> str:
    subset = options["subset"]
    if subset not in SUBSETS:
        raise TaskError(f"refcoco_seg: option subset={subset!r} is not one of {', '.join(SUBSETS)}")
    split_by = options["split_by"] or ("umd" if subset == "refcocog" else "unc")
    if split_by not in SPLIT_BYS:
        raise TaskError(f"refcoco_seg: option split_by={split_by!r} is not one of {', '.join(SPLIT_BYS)}")
    return split_by


def expected_files(data_dir: Path, split, options):
    folder = data_dir / options["subset"]
    vae = [Path(options["vae"])] if options["vae"] else []
    return [folder / "instances.json", folder / f"refs({_split_by(options)}).p", *vae]


def load(data_dir: Path, split, options):
    ipath, rpath = expected_files(data_dir, split, options)[:2]
    refs = taskio.load_pickle_builtins(rpath)
    if not isinstance(refs, list):
        raise TaskError(f"{rpath}: expected a pickled list of refs, found {type(refs).__name__}")
    inst = taskio.read_json(ipath)
    sizes = {}
    for k, im in enumerate(taskio.items(inst, "images", ipath)):
        sizes[taskio.field(im, "id", ipath, f"images[{k}]", int)] = (
            taskio.field(im, "height", ipath, f"images[{k}]", int), taskio.field(im, "width", ipath, f"images[{k}]", int))
    anns = {taskio.field(a, "id", ipath, f"annotations[{k}]", int): a
            for k, a in enumerate(taskio.items(inst, "annotations", ipath))}
    out, seen_splits = [], set()
    for k, ref in enumerate(refs):
        where = f"refs[{k}]"
        ref_split = taskio.field(ref, "split", rpath, where, str)
        seen_splits.add(ref_split)
        if ref_split != split:
            continue
        ann_id = taskio.field(ref, "ann_id", rpath, where, int)
        image_id = taskio.field(ref, "image_id", rpath, where, int)
        if ann_id not in anns:
            raise TaskError(f"{rpath}: {where} refers to ann_id {ann_id}, which {ipath} does not have")
        if image_id not in sizes:
            raise TaskError(f"{rpath}: {where} refers to image_id {image_id}, which {ipath} does not list")
        ann = anns[ann_id]
        meta = {"ann_id": ann_id, "ref_id": ref.get("ref_id"), "image_hw": list(sizes[image_id]),
                "segmentation": taskio.field(ann, "segmentation", ipath, f"annotation {ann_id}", (list, dict)),
                "bbox": taskio.field(ann, "bbox", ipath, f"annotation {ann_id}", list)}
        for j, s in enumerate(taskio.field(ref, "sentences", rpath, where, list)):
            out.append(Example(id=str(taskio.field(s, "sent_id", rpath, f"{where}['sentences'][{j}]", int)),
                               image=f"train2014/COCO_train2014_{image_id:012d}.jpg",
                               prefix=taskio.field(s, "sent", rpath, f"{where}['sentences'][{j}]", str), meta=meta))
    if not out and seen_splits:
        raise TaskError(f"refcoco_seg: {rpath} has no {split!r} refs; its splits: {', '.join(sorted(seen_splits))}")
    return out


def gt_mask(example: Example) -> np.ndarray:
    """bool[H, W]: the referred object's mask at the original resolution (pycocotools annToMask)."""
    from pycocotools import mask as coco_mask

    h, w = example.meta["image_hw"]
    seg = example.meta["segmentation"]
    if isinstance(seg, list):  # polygons
        rle = coco_mask.merge(coco_mask.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = coco_mask.frPyObjects(seg, h, w)
    else:
        rle = seg
    return coco_mask.decode(rle).astype(bool)


_TOKEN = re.compile(r"<loc(\d{4})>|<seg(\d{3})>")
# Token ids of the text form: <locNNNN> -> NNNN, <segNNN> -> 1024 + NNN, anything else -1.
TEXT_LOCSEG = LocSegIds.contiguous(0, structured.NUM_LOC_BINS)


def token_ids(text: str) -> np.ndarray:
    """i64[20]: the leading ``<loc>``/``<seg>`` tokens of a prediction as :data:`TEXT_LOCSEG`
    ids (-1 from the first other token on): the token-level view big_vision's evaluator parses."""
    ids = np.full(4 + structured.NUM_CODES_PER_MASK, -1, np.int64)
    pos = 0
    for i in range(len(ids)):
        m = _TOKEN.match(text, pos)
        if m is None:
            break
        if m.group(1) is not None:
            n = int(m.group(1))
            ids[i] = n if n < structured.NUM_LOC_BINS else -1
        else:
            n = int(m.group(2))
            ids[i] = structured.NUM_LOC_BINS + n if n < structured.NUM_SEG_CODES else -1
        pos = m.end()
    return ids


def predicted_masks(vae, texts, hws) -> list[np.ndarray]:
    """Full-resolution bool masks for predictions (empty when not a valid box + 16 codes)."""
    ids = np.stack([token_ids(t) for t in texts])
    return segmentation.masks_from_token_ids(vae, ids, np.asarray(hws, np.int64), locseg=TEXT_LOCSEG).masks


def _vae(options):
    if not options["vae"]:
        raise TaskError("refcoco_seg: scoring needs the segmentation VQ-VAE: pass option vae=<path of vae-oid.npz>")
    return segmentation.load_vqvae(options["vae"], require_encoder=False)


def score(examples, predictions, options):
    vae = _vae(options)
    texts = taskio.aligned(examples, predictions)
    inter, union = [], []
    for start in range(0, len(examples), CHUNK):
        chunk = examples[start:start + CHUNK]
        preds = predicted_masks(vae, texts[start:start + CHUNK], [e.meta["image_hw"] for e in chunk])
        i, u = mask_iou.intersections_unions(preds, [gt_mask(e) for e in chunk])
        inter.append(i)
        union.append(u)
    return mask_iou.scores_from_counts(np.concatenate(inter), np.concatenate(union))


def target_string(example: Example, vae) -> str:
    """The training suffix (``refcoco_mask2str``): 4 ``<loc>`` of the box, 16 ``<seg>`` codes of
    the mask cropped to it; ``vae`` must include the encoder."""
    h, w = example.meta["image_hw"]
    box = segmentation.coco_box_to_normalized(example.meta["bbox"], h, w)
    return segmentation.mask_to_string(vae, gt_mask(example), box)


TASK = Task(
    name="refcoco_seg", metric="refcoco_miou", splits=SPLITS, eval_split="val", train_split="train",
    layout=("<subset>/instances.json, <subset>/refs(<split_by>).p (subset refcoco|refcoco+|refcocog; "
            "split_by unc|umd|google), train2014/COCO_train2014_<image_id:012d>.jpg; option vae=vae-oid.npz"),
    expected_files=expected_files, load=load, score=score, max_decode_len=48,
    paper="73.40 / 68.32 / 67.65 mIoU val RefCOCO / RefCOCO+ / RefCOCOg (pt-224, big_vision README)",
    hparams=taskio.hparams(100, 256, 3e-5, dropout=0.1, label_smoothing=0.3),
    options={"subset": "refcoco", "split_by": "", "vae": ""},
    source="github.com/lichengunc/refer; big_vision datasets/refcoco + transfers/refcoco_seg.py",
)
