"""``pgbench synth``: write the synthetic benchmark, every family in its official layout.

Layout under ``--out``::

    manifest.json          seed, sizes, and per family: task, folder, split names, example
                           counts, chance level
    vqav2/                 VQAv2 questions/annotations JSONs + COCO_<split>_<id>.jpg
    cococap/               Karpathy dataset_coco.json + train2014/, val2014/
    refcoco_seg/           refcoco/instances.json + refcoco/refs(unc).p + train2014/
    textvqa/               TextVQA_0.5.1_<split>.json + train_images/, test_images/
    docvqa/                <split>_v1.0_withQT.json + <split>/documents/*.png
    rsvqa_lr/              LR_split_<split>_{questions,answers,images}.json + Images_LR/<id>.tif
    detection/             <split>.jsonl ({"id", "image", "prefix", "suffix"}) + images/
    oracle/<family>/<split>.jsonl
                           the generator's own answer per example id, as ``{"id",
                           "prediction"}`` lines (what ``pgbench score`` reads): scoring it
                           gives the metric's maximum (captions: one of the references;
                           refcoco_seg: box and mask codes with ``vae_path``, else the box)

Sizes count *images* per generic split (train / val / test); each image carries a few
examples (questions, referring sentences, ...). Generic splits map to the benchmark's own
split names (:data:`SPLIT_NAMES`); where the official release ships a split without answers
(VQAv2 test-dev, TextVQA and DocVQA test) the synthetic one has none either.

Every example is drawn from its own generator, seeded by ``(seed, family, split, index)``:
the same seed gives byte-identical files, and changing one split's size leaves the
examples of the other splits unchanged (RSVQA's global ids aside).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pgbench.errors import InputError
from pgbench.synth import families, formats, scenes

GENERIC_SPLITS = ("train", "val", "test")
FAMILIES = ("vqav2", "cococap", "refcoco_seg", "textvqa", "docvqa", "rsvqa_lr", "detection")
DEFAULT_SIZES = {"train": 1000, "val": 100, "test": 100}
DEFAULT_IMAGE_SIZE = 128
# Raised whenever the same seed and sizes start drawing different images or questions, so
# that folders written by an older generator are not reused (make eval, make transfer).
# 2: signs on the patch grid (scenes.SIGN_GRID).
GENERATOR_VERSION = 2


def written_by_this_generator(manifest: Mapping[str, Any]) -> bool:
    """Whether a ``manifest.json``'s data is what this generator draws for its settings."""
    return manifest.get("generator_version") == GENERATOR_VERSION


def reusable_manifest(folder: Path, **settings) -> dict | None:
    """``folder``'s manifest when this generator wrote it with ``settings`` (seed, sizes,
    image_size: the manifest's own keys), else None (missing, other settings, older
    generator)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    have = json.loads(path.read_text())
    if written_by_this_generator(have) and all(have.get(k) == v for k, v in settings.items()):
        return have
    return None


# generic split -> the benchmark's split name(s) as its files spell them.
SPLIT_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "vqav2": {"train": ("train2014",), "val": ("val2014",), "test": ("test-dev2015",)},
    "cococap": {"train": ("train",), "val": ("val",), "test": ("test",)},
    "refcoco_seg": {"train": ("train",), "val": ("val",), "test": ("testA", "testB")},
    "textvqa": {"train": ("train",), "val": ("val",), "test": ("test",)},
    "docvqa": {"train": ("train",), "val": ("val",), "test": ("test",)},
    "rsvqa_lr": {"train": ("train",), "val": ("val",), "test": ("test",)},
    "detection": {"train": ("train",), "val": ("val",), "test": ("test",)},
}
# The split the paper reports for each benchmark (what `make eval` scores) and the task
# adapter that reads the family; `chance` in the manifest is measured on that split.
EVAL_SPLIT = {"vqav2": "val2014", "cococap": "val", "refcoco_seg": "val", "textvqa": "val",
              "docvqa": "val", "rsvqa_lr": "test", "detection": "test"}
TASK_NAME = {f: f for f in FAMILIES} | {"detection": "jsonl"}
METRIC = {"vqav2": "vqa_accuracy", "cococap": "coco_caption", "refcoco_seg": "refcoco_miou",
          "textvqa": "vqa_accuracy", "docvqa": "anls", "rsvqa_lr": "rsvqa_accuracy",
          "detection": "detection_map"}
# Adapter options a family needs (the detection lines are scored as detection strings).
TASK_OPTIONS = {"detection": {"metric": "detection_map"}}
# Splits whose official release has no answers.
ORACLE_DIR = "oracle"
UNLABELLED = {("vqav2", "test-dev2015"), ("textvqa", "test"), ("docvqa", "test")}


def example_rng(seed: int, family: str, split: str, index: int) -> np.random.Generator:
    """The generator of one image's worth of examples (independent of every other one)."""
    return np.random.default_rng([seed, zlib.crc32(family.encode()), GENERIC_SPLITS.index(split), index])


def _image_id(split: str, index: int) -> int:
    return (GENERIC_SPLITS.index(split) + 1) * 1_000_000 + index


def _hex_id(seed: int, split: str, index: int, n: int = 16) -> str:
    return hashlib.sha1(f"{seed}:{split}:{index}".encode()).hexdigest()[:n]


def sample_records(family: str, seed: int, sizes: Mapping[str, int], image_size: int
                   ) -> dict[str, list[dict]]:
    """generic split -> the family's records (scenes and text, nothing rendered)."""
    sample = families.SAMPLERS[family]
    out: dict[str, list[dict]] = {}
    for split in GENERIC_SPLITS:
        recs = []
        for i in range(int(sizes.get(split, 0))):
            rng = example_rng(seed, family, split, i)
            key: Any = _hex_id(seed, split, i) if family == "textvqa" else _image_id(split, i)
            recs.append(sample(rng, key, image_size))
        out[split] = recs
    return out


# official split name -> {example id: the generator's own answer}
Oracle = dict[str, dict[str, str]]


def _xyxy(o: scenes.Shape) -> tuple[float, float, float, float]:
    x, y, w, h = o.bbox_xywh()
    return (x, y, x + w, y + h)


def _pixels(record) -> np.ndarray:
    return np.asarray(families.render(record), np.uint8)


# --------------------------------------------------------------------------------------
# Family -> official files (through pgbench.synth.formats).


def _write_vqav2(root: Path, recs: dict[str, list[dict]]) -> Oracle:
    oracle: Oracle = {}
    for split in GENERIC_SPLITS:
        (name,) = SPLIT_NAMES["vqav2"][split]
        qs, answers = [], oracle.setdefault(name, {})
        for r in recs[split]:
            for q in r["questions"]:
                answers[str(q["question_id"])] = q["answer"]
                row = {"question_id": q["question_id"], "image_id": r["image_id"], "question": q["question"]}
                if ("vqav2", name) not in UNLABELLED:
                    row.update(answers=q["answers"], answer_type=q["answer_type"],
                               question_type=q["question_type"], multiple_choice_answer=q["answer"])
                qs.append(row)
        formats.write_vqav2(root, name, qs, {r["image_id"]: _pixels(r) for r in recs[split]})
    return oracle


def _write_cococap(root: Path, recs: dict[str, list[dict]]) -> Oracle:
    rows, images, oracle = [], {}, {}
    for split in GENERIC_SPLITS:
        for r in recs[split]:
            oracle.setdefault(split, {})[str(r["image_id"])] = r["captions"][0]
            rows.append({"cocoid": r["image_id"], "split": split, "captions": r["captions"],
                         "filepath": "train2014" if split == "train" else "val2014"})
            images[r["image_id"]] = _pixels(r)
    formats.write_karpathy_coco(root, rows, images)
    return oracle


REFCOCO_CATEGORIES = {name: i + 1 for i, name in enumerate(scenes.SHAPES)}


def refcoco_split(split: str, index: int) -> str:
    """Test images alternate between testA and testB."""
    names = SPLIT_NAMES["refcoco_seg"][split]
    return names[index % len(names)]


def _write_refcoco(root: Path, recs: dict[str, list[dict]], vae=None) -> Oracle:
    """The oracle answer of a sentence is its object's training target, 4 ``<loc>`` and 16
    ``<seg>`` tokens encoded with ``vae`` (a :class:`pgbench.segmentation.VQVAE`), or only
    the 4 ``<loc>`` tokens of its box without one."""
    from pgbench import segmentation

    refs, anns, sizes, images = [], [], {}, {}
    oracle: Oracle = {}
    for split in GENERIC_SPLITS:
        for i, r in enumerate(recs[split]):
            img, scene = r["image_id"], r["scene"]
            sizes[img] = (scene.size, scene.size)
            images[img] = _pixels(r)
            for k, o in enumerate(scene.objects):
                poly = [c for xy in o.polygon() for c in xy]
                anns.append({"id": img * 10 + k, "image_id": img, "segmentation": [poly],
                             "area": float(scenes.polygon_mask(o.polygon(), scene.size).sum()),
                             "bbox": list(o.bbox_xywh()), "category_id": REFCOCO_CATEGORIES[o.shape]})
            name = refcoco_split(split, i)
            for j, ref in enumerate(r["refs"]):
                o = scene.objects[ref["object"]]
                sents = [{"sent_id": img * 100 + j * 10 + s, "sent": t} for s, t in enumerate(ref["sentences"])]
                refs.append({"ref_id": img * 10 + j, "ann_id": img * 10 + ref["object"], "image_id": img,
                             "split": name, "category_id": REFCOCO_CATEGORIES[o.shape], "sentences": sents})
                if vae is None:
                    answer = detection_suffix({"objects": [("", _xyxy(o))]}, scene.size).strip()
                else:
                    box = segmentation.coco_box_to_normalized(o.bbox_xywh(), scene.size, scene.size)
                    answer = segmentation.mask_to_string(vae, scenes.polygon_mask(o.polygon(), scene.size), box)
                oracle.setdefault(name, {}).update({str(t["sent_id"]): answer for t in sents})
    formats.write_refcoco(root, "refcoco", "unc", refs, anns, sizes, images)
    return oracle


def _write_textvqa(root: Path, recs: dict[str, list[dict]]) -> Oracle:
    oracle: Oracle = {}
    for split in GENERIC_SPLITS:
        rows, answers = [], oracle.setdefault(split, {})
        for i, r in enumerate(recs[split]):
            for k, q in enumerate(r["questions"]):
                row = {"question_id": (GENERIC_SPLITS.index(split) + 1) * 10_000_000 + i * 10 + k,
                       "image_id": r["image_id"], "question": q["question"]}
                answers[str(row["question_id"])] = q["answer"]
                if ("textvqa", split) not in UNLABELLED:
                    row["answers"] = q["answers"]
                rows.append(row)
        formats.write_textvqa(root, split, rows, {r["image_id"]: _pixels(r) for r in recs[split]})
    return oracle


def docvqa_image(doc_id: int) -> str:
    return f"documents/{hashlib.sha1(str(doc_id).encode()).hexdigest()[:8]}_1.png"


def _write_docvqa(root: Path, recs: dict[str, list[dict]]) -> Oracle:
    oracle: Oracle = {}
    for split in GENERIC_SPLITS:
        rows, images, answers = [], {}, oracle.setdefault(split, {})
        for r in recs[split]:
            image = docvqa_image(r["doc_id"])
            images[image] = _pixels(r)
            for k, q in enumerate(r["questions"]):
                row = {"questionId": r["doc_id"] * 10 + k, "question": q["question"], "image": image,
                       "docId": r["doc_id"]}
                answers[str(row["questionId"])] = q["answers"][0]
                if ("docvqa", split) not in UNLABELLED:
                    row["answers"] = q["answers"]
                rows.append(row)
        formats.write_docvqa(root, split, rows, images)
    return oracle


def _write_rsvqa(root: Path, recs: dict[str, list[dict]]) -> Oracle:
    """Image ids run over train, then val, then test (one id space, as in the release).
    The oracle covers the default "nonum" split (no count questions)."""
    total = sum(len(recs[s]) for s in GENERIC_SPLITS)
    oracle: Oracle = {}
    img_id = 0
    for split in GENERIC_SPLITS:
        rows, images = [], {}
        for r in recs[split]:
            images[img_id] = _pixels(r)
            for k, q in enumerate(r["questions"]):
                rows.append({"id": img_id * 4 + k, "img_id": img_id, "type": q["type"],
                             "question": q["question"], "answer": q["answer"]})
            img_id += 1
        formats.write_rsvqa(root, "lr", split, rows, images, num_ids=total * 4)
        oracle[split] = {str(row["id"]): row["answer"] for row in rows if row["type"] != "count"}
    return oracle


def detection_suffix(record: dict, size: int) -> str:
    """``<locY0><locX0><locY1><locX1> label ; ...`` with bins round(c / size * 1023)."""
    parts = []
    for label, (x0, y0, x1, y1) in record["objects"]:
        bins = [min(1023, max(0, round(c / size * 1023))) for c in (y0, x0, y1, x1)]
        parts.append("".join(f"<loc{b:04d}>" for b in bins) + " " + label)
    return " ; ".join(parts)


def _write_detection(root: Path, recs: dict[str, list[dict]]) -> Oracle:
    oracle: Oracle = {}
    for split in GENERIC_SPLITS:
        lines = []
        for r in recs[split]:
            image = f"images/{r['image_id']}.jpg"
            formats.save_image(root / image, _pixels(r))
            lines.append({"id": str(r["image_id"]), "image": image, "prefix": "detect " + " ; ".join(r["labels"]),
                          "suffix": detection_suffix(r, r["scene"].size)})
        formats.write_jsonl(root / f"{split}.jsonl", lines)
        oracle[split] = {line["id"]: line["suffix"] for line in lines}
    return oracle


WRITERS: dict[str, Callable[[Path, dict[str, list[dict]]], Oracle]] = {
    "vqav2": _write_vqav2, "cococap": _write_cococap, "refcoco_seg": _write_refcoco,
    "textvqa": _write_textvqa, "docvqa": _write_docvqa, "rsvqa_lr": _write_rsvqa,
    "detection": _write_detection,
}


# --------------------------------------------------------------------------------------


def parse_sizes(text: str) -> dict[str, int]:
    """``"train=200,val=50,test=50"`` -> dict; unnamed splits keep their defaults."""
    sizes = dict(DEFAULT_SIZES)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq or name not in GENERIC_SPLITS or not value.isdigit():
            raise InputError(f"--sizes: expected split=N with split in {', '.join(GENERIC_SPLITS)}, got {part!r}")
        sizes[name] = int(value)
    return sizes


def check_families(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise InputError(f"unknown synthetic famil{'y' if len(unknown) == 1 else 'ies'} "
                         f"{', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    return list(dict.fromkeys(names))


def check_image_size(image_size: int) -> int:
    if image_size < 32:
        raise InputError(f"--image-size must be at least 32 pixels, got {image_size}")
    return image_size


def generate(out: str | Path, seed: int = 0, sizes: Mapping[str, int] | None = None,
             family_names: Sequence[str] = FAMILIES, image_size: int = DEFAULT_IMAGE_SIZE,
             with_chance: bool = True, vae_path: str | Path | None = None) -> dict:
    """Write the chosen families under ``out`` and ``out/manifest.json``; returns the manifest.

    ``with_chance=False`` leaves the chance levels out (the caption one runs Java for seconds).
    ``vae_path`` (a vae-oid.npz-layout VQ-VAE): refcoco_seg's oracle answers carry their 16
    mask codes, and its manifest options name the file (the adapter needs it to score).
    """
    from pgbench.synth import chance

    out = Path(out)
    sizes = dict(DEFAULT_SIZES | dict(sizes or {}))
    check_image_size(image_size)
    manifest: dict[str, Any] = {"generator": "pgbench synth", "generator_version": GENERATOR_VERSION,
                                "seed": seed, "sizes": sizes,
                                "image_size": image_size, "families": {}}
    for family in check_families(family_names):
        recs = sample_records(family, seed, sizes, image_size)
        options = dict(TASK_OPTIONS.get(family, {}))
        if family == "refcoco_seg" and vae_path is not None:
            from pgbench import segmentation

            options["vae"] = str(Path(vae_path).resolve())
            oracle = _write_refcoco(out / family, recs, segmentation.load_vqvae(vae_path))
        else:
            oracle = WRITERS[family](out / family, recs)
        for split, answers in oracle.items():
            formats.write_jsonl(out / ORACLE_DIR / family / f"{split}.jsonl",
                                [{"id": i, "prediction": a} for i, a in answers.items()])
        manifest["families"][family] = {
            "task": TASK_NAME[family], "options": options, "data": family,
            "metric": METRIC[family],
            "splits": {g: list(SPLIT_NAMES[family][g]) for g in GENERIC_SPLITS},
            "eval_split": EVAL_SPLIT[family], "examples": {s: len(a) for s, a in oracle.items()},
            "oracle": {s: f"{ORACLE_DIR}/{family}/{s}.jsonl" for s in oracle},
        }
        if with_chance:
            manifest["families"][family]["chance"] = chance.chance_level(family, recs)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
