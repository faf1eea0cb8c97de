"""Writers of each benchmark's official distribution layout, from plain records.

One function per format. Each takes a root folder, plain Python records (dicts with the
benchmark's own key names) and images as ``uint8[H, W, 3]`` arrays, and writes the files
exactly where and how the official release puts them (file names, JSON keys, image naming
and encoding), so that ``tasks/<name>.py`` reads them as it reads the real download. The
tests use them for tiny datasets; the synthetic benchmark generator reuses them.

Images: ``images`` maps the benchmark's image key (COCO image id, file name, ...) to an
array; each is encoded once (JPEG, PNG or TIFF as the benchmark ships it). Returned value:
the list of files written (JSON/pickles first, then images).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import PIL.Image

Records = Sequence[Mapping[str, Any]]
Images = Mapping[Any, np.ndarray]


def save_image(path: Path, image: np.ndarray) -> Path:
    """Encode ``uint8[H, W, 3]`` by the suffix of ``path`` (.jpg JPEG, .png PNG, .tif TIFF)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}[path.suffix.lower()]
    kw = {"quality": 95} if fmt == "JPEG" else {}
    PIL.Image.fromarray(np.asarray(image, np.uint8)).save(path, format=fmt, **kw)
    return path


def _json(path: Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _images(root: Path, images: Images, name) -> list[Path]:
    return [save_image(Path(root) / name(key), arr) for key, arr in images.items()]


# ----------------------------------------------------------------------------- VQA layout

def _vqa_layout(root, split, questions: Records, images: Images, q_name: str, a_name: str,
                image_folder: str | None) -> list[Path]:
    folder = image_folder or split
    qs = [{"image_id": r["image_id"], "question": r["question"], "question_id": r["question_id"]}
          for r in questions]
    written = [_json(Path(root) / q_name, {
        "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
        "data_subtype": split, "questions": qs})]
    if all("answers" in r for r in questions):
        anns = []
        for r in questions:
            answers = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                       for i, a in enumerate(r["answers"])]
            for a, raw in zip(answers, r.get("raw_answers", [])):
                a["raw_answer"] = raw
            anns.append({"question_type": r.get("question_type", "what"),
                         "multiple_choice_answer": r.get("multiple_choice_answer", r["answers"][0]),
                         "answers": answers, "image_id": r["image_id"],
                         "answer_type": r.get("answer_type", "other"), "question_id": r["question_id"]})
        written.append(_json(Path(root) / a_name, {"info": {}, "license": {}, "data_subtype": split,
                                                  "annotations": anns, "data_type": "mscoco"}))
    return written + _images(root, images, lambda i: f"{folder}/COCO_{folder}_{int(i):012d}.jpg")


def write_vqav2(root, split: str, questions: Records, images: Images) -> list[Path]:
    """VQAv2: ``v2_OpenEnded_mscoco_<split>_questions.json`` (+ ``v2_mscoco_<split>_annotations.json``
    when every record has ``answers``) and ``<folder>/COCO_<folder>_<image_id:012d>.jpg``
    (test-dev2015 images live in ``test2015/``). Records: ``question_id, image_id, question``
    and optionally ``answers`` (10 str), ``answer_type``, ``question_type``."""
    folder = "test2015" if split == "test-dev2015" else split
    return _vqa_layout(root, split, questions, images, f"v2_OpenEnded_mscoco_{split}_questions.json",
                       f"v2_mscoco_{split}_annotations.json", folder)


def write_okvqa(root, split: str, questions: Records, images: Images) -> list[Path]:
    """OK-VQA (split train2014/val2014): ``OpenEnded_mscoco_<split>_questions.json``,
    ``mscoco_<split>_annotations.json`` and COCO images as for VQAv2."""
    return _vqa_layout(root, split, questions, images, f"OpenEnded_mscoco_{split}_questions.json",
                       f"mscoco_{split}_annotations.json", split)


# ----------------------------------------------------------------------------- TextVQA family

def write_textvqa(root, split: str, records: Records, images: Images) -> list[Path]:
    """TextVQA 0.5.1: ``TextVQA_0.5.1_<split>.json`` and ``train_images/<image_id>.jpg``
    (train and val) or ``test_images/`` (test). Records: ``question_id, image_id, question``,
    optionally ``answers`` (10 str; omitted on test)."""
    data = []
    for r in records:
        d = {"question": r["question"], "image_id": r["image_id"], "image_classes": [],
             "flickr_original_url": "", "flickr_300k_url": "", "image_width": 0, "image_height": 0,
             "question_tokens": r["question"].split(), "question_id": r["question_id"], "set_name": split}
        if "answers" in r:
            d["answers"] = list(r["answers"])
        data.append(d)
    folder = "test_images" if split == "test" else "train_images"
    return [_json(Path(root) / f"TextVQA_0.5.1_{split}.json",
                  {"dataset_type": split, "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data})
            ] + _images(root, images, lambda i: f"{folder}/{i}.jpg")


def write_textcaps(root, split: str, records: Records, images: Images) -> list[Path]:
    """TextCaps 0.1: ``TextCaps_0.1_<split>.json`` with one entry per caption (test: one per
    image, no ``caption_str``) and TextVQA images ``train_images|test_images/<image_name>.jpg``.
    Records: ``image_id, image_name, captions`` (list of str)."""
    data = []
    for r in records:
        base = {"image_id": r["image_id"], "image_name": r["image_name"], "image_classes": [],
                "image_width": 0, "image_height": 0, "set_name": split}
        if r.get("captions"):
            for k, c in enumerate(r["captions"]):
                data.append({**base, "caption_id": len(data), "caption_str": c,
                             "caption_tokens": c.split(), "reference_strs": list(r["captions"])})
        else:
            data.append(base)
    folder = "test_images" if split == "test" else "train_images"
    return [_json(Path(root) / f"TextCaps_0.1_{split}.json",
                  {"dataset_type": split, "dataset_name": "textcaps", "dataset_version": "0.1", "data": data})
            ] + _images(root, images, lambda n: f"{folder}/{n}.jpg")


def write_vizwiz(root, split: str, records: Records, images: Images) -> list[Path]:
    """VizWiz-VQA: ``annotations/<split>.json`` (a list) and ``<split>/<image>`` (JPEG).
    Records: ``image`` (``VizWiz_<split>_<n:08d>.jpg``), ``question``, optionally ``answers``
    (10 str), ``answer_type``, ``answerable``."""
    data = []
    for r in records:
        d = {"image": r["image"], "question": r["question"]}
        if "answers" in r:
            d["answers"] = [{"answer": a, "answer_confidence": "yes"} for a in r["answers"]]
            d["answer_type"] = r.get("answer_type", "other")
            d["answerable"] = r.get("answerable", 1)
        data.append(d)
    return [_json(Path(root) / "annotations" / f"{split}.json", data)] + \
        _images(root, images, lambda n: f"{split}/{n}")


# ----------------------------------------------------------------------------- captions

def write_karpathy_coco(root, records: Records, images: Images) -> list[Path]:
    """Karpathy ``dataset_coco.json`` and COCO 2014 images ``<filepath>/<filename>``.
    Records: ``cocoid, split`` (train|restval|val|test), ``filepath`` (train2014|val2014),
    ``captions`` (list of str); ``images`` is keyed by cocoid."""
    out, sentid = [], 0
    for k, r in enumerate(records):
        filename = f"COCO_{r['filepath']}_{int(r['cocoid']):012d}.jpg"
        sentences = []
        for c in r["captions"]:
            sentences.append({"tokens": c.lower().split(), "raw": c, "imgid": k, "sentid": sentid})
            sentid += 1
        out.append({"filepath": r["filepath"], "sentids": [s["sentid"] for s in sentences],
                    "filename": filename, "imgid": k, "split": r["split"], "sentences": sentences,
                    "cocoid": r["cocoid"]})
    folders = {r["cocoid"]: r["filepath"] for r in records}
    return [_json(Path(root) / "dataset_coco.json", {"images": out, "dataset": "coco"})] + \
        _images(root, images, lambda i: f"{folders[i]}/COCO_{folders[i]}_{int(i):012d}.jpg")


# ----------------------------------------------------------------------------- RefCOCO

def write_refcoco(root, subset: str, split_by: str, refs: Records, annotations: Records,
                  image_sizes: Mapping[int, tuple[int, int]], images: Images) -> list[Path]:
    """lichengunc/refer layout: ``<subset>/instances.json`` (COCO), ``<subset>/refs(<split_by>).p``
    (a protocol-2 pickle of a list of ref dicts) and ``train2014/COCO_train2014_<id:012d>.jpg``.

    refs: ``ref_id, ann_id, image_id, split, category_id, sentences`` (list of
    ``{"sent_id", "sent"}``); annotations: ``id, image_id, segmentation`` (polygons
    ``[[x1, y1, ...]]`` or an uncompressed RLE ``{"counts", "size"}``), ``bbox`` [x, y, w, h],
    ``category_id``; image_sizes: image id -> (height, width).
    """
    folder = Path(root) / subset
    coco_images = [{"id": i, "height": h, "width": w, "file_name": f"COCO_train2014_{i:012d}.jpg",
                    "license": 1, "coco_url": "", "flickr_url": "", "date_captured": ""}
                   for i, (h, w) in image_sizes.items()]
    anns = [{"segmentation": a["segmentation"], "area": float(a.get("area", 0.0)),
             "iscrowd": int(isinstance(a["segmentation"], dict)), "image_id": a["image_id"],
             "bbox": list(a["bbox"]), "category_id": a["category_id"], "id": a["id"]} for a in annotations]
    cats = sorted({a["category_id"] for a in annotations})
    written = [_json(folder / "instances.json", {
        "info": {}, "images": coco_images, "licenses": [], "annotations": anns,
        "categories": [{"id": c, "name": f"category{c}", "supercategory": "thing"} for c in cats]})]
    out = []
    for r in refs:
        sentences = [{"tokens": s["sent"].split(), "raw": s["sent"], "sent_id": s["sent_id"], "sent": s["sent"]}
                     for s in r["sentences"]]
        out.append({"sent_ids": [s["sent_id"] for s in sentences],
                    "file_name": f"COCO_train2014_{r['image_id']:012d}_{r['ann_id']}.jpg",
                    "ann_id": r["ann_id"], "ref_id": r["ref_id"], "image_id": r["image_id"],
                    "split": r["split"], "sentences": sentences, "category_id": r["category_id"]})
    pickle_path = folder / f"refs({split_by}).p"
    pickle_path.write_bytes(pickle.dumps(out, protocol=2))
    written.append(pickle_path)
    return written + _images(root, images, lambda i: f"train2014/COCO_train2014_{int(i):012d}.jpg")


# ----------------------------------------------------------------------------- documents / OCR

def write_docvqa(root, split: str, records: Records, images: Images) -> list[Path]:
    """DocVQA (big_vision layout): ``train_v1.0_withQT.json`` / ``val_v1.0_withQT.json`` /
    ``test_v1.0.json`` and PNGs at ``<split>/<image>`` (``image`` = ``documents/<name>.png``).
    Records: ``questionId, question, image``, optionally ``answers``; ``images`` keyed by
    the ``image`` field."""
    name = "test_v1.0.json" if split == "test" else f"{split}_v1.0_withQT.json"
    data = []
    for r in records:
        d = {"questionId": r["questionId"], "question": r["question"], "image": r["image"],
             "docId": r.get("docId", 0), "ucsf_document_id": "x", "ucsf_document_page_no": "1",
             "data_split": split}
        if "answers" in r:
            d["answers"] = list(r["answers"])
            d["question_types"] = ["free_text"]
        data.append(d)
    return [_json(Path(root) / name, {"dataset_name": "docvqa", "dataset_split": split,
                                       "dataset_version": "1.0", "data": data})] + \
        _images(root, images, lambda n: f"{split}/{n}")


def write_stvqa(root, split: str, records: Records, images: Images) -> list[Path]:
    """ST-VQA task 3: ``train_task_3.json`` / ``test_task_3.json`` and images under
    ``train_images/`` / ``test_task3_images/`` at ``file_path``. Records: ``question_id,
    question, file_path``, optionally ``answers``; ``images`` keyed by file_path."""
    data = []
    for r in records:
        d = {"question_id": r["question_id"], "question": r["question"], "file_path": r["file_path"],
             "dataset": r["file_path"].split("/")[0], "file_name": r["file_path"].split("/")[-1]}
        if "answers" in r:
            d["answers"] = list(r["answers"])
        data.append(d)
    folder = "test_task3_images" if split == "test" else "train_images"
    return [_json(Path(root) / f"{split}_task_3.json", {"dataset": "ST-VQA", "task_name": "task_3",
                                                        "data": data})] + \
        _images(root, images, lambda p: f"{folder}/{p}")


def write_infovqa(root, split: str, records: Records, images: Images) -> list[Path]:
    """InfographicVQA: ``infographicsVQA_{train_v1.0,val_v1.0_withQT,test_v1.0}.json`` and
    ``images/<image_local_name>``. Records: ``questionId, question, image_local_name``,
    optionally ``answers``."""
    name = {"train": "infographicsVQA_train_v1.0.json", "val": "infographicsVQA_val_v1.0_withQT.json",
            "test": "infographicsVQA_test_v1.0.json"}[split]
    data = [{"questionId": r["questionId"], "question": r["question"],
             "image_local_name": r["image_local_name"], "image_url": "", "ocr_output_file": "",
             **({"answers": list(r["answers"])} if "answers" in r else {})} for r in records]
    return [_json(Path(root) / name, {"dataset_name": "infographicsVQA", "dataset_split": split,
                                      "dataset_version": "1.0", "data": data})] + \
        _images(root, images, lambda n: f"images/{n}")


def write_ocrvqa(root, books: Mapping[str, Mapping[str, Any]], images: Images) -> list[Path]:
    """OCR-VQA: ``dataset.json`` (book key -> ``imageURL, questions, answers, title,
    authorName, genre, split`` with split 1 train / 2 val / 3 test) and
    ``images/<book key><extension of imageURL>``; ``images`` keyed by book key."""
    out = {k: {"imageURL": b.get("imageURL", f"http://example.com/{k}.jpg"), "questions": list(b["questions"]),
               "answers": list(b["answers"]), "title": b.get("title", ""), "authorName": b.get("authorName", ""),
               "genre": b.get("genre", ""), "split": b["split"]} for k, b in books.items()}
    ext = {k: Path(v["imageURL"]).suffix or ".jpg" for k, v in out.items()}
    return [_json(Path(root) / "dataset.json", out)] + _images(root, images, lambda k: f"images/{k}{ext[k]}")


def write_chartqa(root, split: str, human: Records, augmented: Records, images: Images) -> list[Path]:
    """ChartQA: ``<split>/<split>_human.json``, ``<split>/<split>_augmented.json`` (lists of
    ``{imgname, query, label}``) and ``<split>/png/<imgname>`` (PNG)."""
    keep = lambda rs: [{"imgname": r["imgname"], "query": r["query"], "label": r["label"]} for r in rs]  # noqa: E731
    return [_json(Path(root) / split / f"{split}_human.json", keep(human)),
            _json(Path(root) / split / f"{split}_augmented.json", keep(augmented))] + \
        _images(root, images, lambda n: f"{split}/png/{n}")


# ----------------------------------------------------------------------------- RSVQA

def write_rsvqa(root, variant: str, split: str, questions: Records, images: Images,
                num_ids: int | None = None) -> list[Path]:
    """RSVQA-LR (``variant="lr"``: ``LR_split_<split>_{questions,answers,images}.json``,
    ``Images_LR/<id>.tif``) or -HR (``"hr"``: ``USGS_split_…``, ``Data/<id>.png``).

    Records: ``id`` (question id), ``img_id``, ``type``, ``question``, ``answer``. As in the
    release, every list has one entry per id in 0..num_ids-1 (list position = id) and ids not
    in this split are ``{"id", "active": false}``.
    """
    prefix, folder, ext = {"lr": ("LR_split", "Images_LR", ".tif"), "hr": ("USGS_split", "Data", ".png")}[variant]
    n_q = num_ids if num_ids is not None else max((r["id"] for r in questions), default=-1) + 1
    n_img = max([r["img_id"] for r in questions] + [int(i) for i in images], default=-1) + 1
    qs = [{"id": i, "active": False} for i in range(n_q)]
    ans = [{"id": i, "active": False} for i in range(n_q)]
    imgs = [{"id": i, "active": False} for i in range(n_img)]
    for r in questions:
        qs[r["id"]] = {"id": r["id"], "date_added": 0.0, "img_id": r["img_id"], "people_id": 0,
                       "type": r["type"], "question": r["question"], "answers_ids": [r["id"]], "active": True}
        ans[r["id"]] = {"id": r["id"], "date_added": 0.0, "question_id": r["id"], "people_id": 0,
                        "answer": r["answer"], "active": True}
        old = imgs[r["img_id"]]
        imgs[r["img_id"]] = {"id": r["img_id"], "date_added": 0.0, "original_name": "", "sensor": "",
                             "people_id": 0, "type": "", "active": True,
                             "questions_ids": old.get("questions_ids", []) + [r["id"]]}
    root = Path(root)
    return [_json(root / f"{prefix}_{split}_questions.json", {"questions": qs}),
            _json(root / f"{prefix}_{split}_answers.json", {"answers": ans}),
            _json(root / f"{prefix}_{split}_images.json", {"images": imgs})] + \
        _images(root, images, lambda i: f"{folder}/{i}{ext}")


# ----------------------------------------------------------------------------- user JSONL

def write_jsonl(path, records: Iterable[Mapping[str, Any]]) -> list[Path]:
    """One JSON object per line (``image``, ``prefix``, ``suffix``, optional ``id``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(r)) + "\n" for r in records))
    return [path]
