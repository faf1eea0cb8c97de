"""Tiny datasets in each benchmark's official layout, written with pgbench.synth.formats.

Each ``build_<task>(root)`` writes a few examples (tiny images) and returns a :class:`Case`:
the split and options to load, what the adapter must produce, perfect predictions, and an
imperfect prediction set with its metrics worked out by hand (comments show the sums).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pgbench.synth import formats


def img(seed: int = 0, h: int = 8, w: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@dataclasses.dataclass
class Case:
    split: str
    options: dict[str, Any]
    # (id, image path relative to the data dir, prefix, references) in load order
    expected: list[tuple[str, str, str, tuple[str, ...]]]
    perfect: dict[str, str]
    perfect_metrics: dict[str, float]
    imperfect: dict[str, str]
    imperfect_metrics: dict[str, float]
    empty_split: str  # a split the tiny dataset has files for, but no examples


def build_vqav2(root: Path) -> Case:
    a1, a2, a3 = ["yes"] * 10, ["2"] * 7 + ["3"] * 3, ["red"] * 2 + ["blue"] * 8
    qs = [
        {"question_id": 1000, "image_id": 1, "question": "Is it sunny?", "answers": a1, "answer_type": "yes/no"},
        {"question_id": 1001, "image_id": 1, "question": "How many dogs?", "answers": a2, "answer_type": "number"},
        {"question_id": 2000, "image_id": 2, "question": "What color?", "answers": a3, "answer_type": "other"},
    ]
    formats.write_vqav2(root, "val2014", qs, {1: img(1), 2: img(2)})
    formats.write_vqav2(root, "train2014", [], {})
    formats.write_vqav2(root, "test-dev2015", [{"question_id": 5000, "image_id": 5, "question": "Why?"}], {5: img(5)})
    im = "val2014/COCO_val2014_{:012d}.jpg"
    return Case(
        split="val2014", options={},
        expected=[("1000", im.format(1), "answer en Is it sunny?", tuple(a1)),
                  ("1001", im.format(1), "answer en How many dogs?", tuple(a2)),
                  ("2000", im.format(2), "answer en What color?", tuple(a3))],
        perfect={"1000": "yes", "1001": "2", "2000": "blue"},
        perfect_metrics={"accuracy": 1.0, "accuracy/yes/no": 1.0, "accuracy/number": 1.0, "accuracy/other": 1.0},
        # "no": 0; "3" (3 of 10 agree): the three "3" answers see 2 others -> 2/3, the seven
        # others see 3 -> 1: (3*2/3 + 7)/10 = 0.9; missing -> "" -> 0. Mean 0.3.
        imperfect={"1000": "no", "1001": "3"},
        imperfect_metrics={"accuracy": 0.3, "accuracy/yes/no": 0.0, "accuracy/number": 0.9, "accuracy/other": 0.0},
        empty_split="train2014")


def build_okvqa(root: Path) -> Case:
    a1, a2 = ["cat"] * 2 + ["dog"] * 8, ["tree"] * 10
    qs = [{"question_id": 10, "image_id": 3, "question": "What pet?", "answers": a1},
          {"question_id": 11, "image_id": 4, "question": "What plant?", "answers": a2}]
    formats.write_okvqa(root, "val2014", qs, {3: img(3), 4: img(4)})
    formats.write_okvqa(root, "train2014", [], {})
    im = "val2014/COCO_val2014_{:012d}.jpg"
    return Case(
        split="val2014", options={},
        expected=[("10", im.format(3), "answer en What pet?", tuple(a1)),
                  ("11", im.format(4), "answer en What plant?", tuple(a2))],
        perfect={"10": "dog", "11": "tree"}, perfect_metrics={"accuracy": 1.0},
        # simple mode: min(1, 2/3) and 0 -> 1/3
        imperfect={"10": "cat"}, imperfect_metrics={"accuracy": 1 / 3},
        empty_split="train2014")


def build_textvqa(root: Path) -> Case:
    a1, a2 = ["sign"] * 10, ["stop"] * 2 + ["go"] * 8
    recs = [{"question_id": 7, "image_id": "00aa11bb22cc33dd", "question": "What is it?", "answers": a1},
            {"question_id": 8, "image_id": "00aa11bb22cc33ee", "question": "What does it say?", "answers": a2}]
    formats.write_textvqa(root, "val", recs, {"00aa11bb22cc33dd": img(7), "00aa11bb22cc33ee": img(8)})
    formats.write_textvqa(root, "train", [], {})
    return Case(
        split="val", options={},
        expected=[("7", "train_images/00aa11bb22cc33dd.jpg", "answer en What is it?", tuple(a1)),
                  ("8", "train_images/00aa11bb22cc33ee.jpg", "answer en What does it say?", tuple(a2))],
        perfect={"7": "sign", "8": "go"}, perfect_metrics={"accuracy": 1.0, "accuracy/other": 1.0},
        # "stop": the two "stop" answers see 1 other -> 1/3, the eight others see 2 -> 2/3:
        # (2/3 + 16/3)/10 = 0.6; mean with 1.0 -> 0.8
        imperfect={"7": "sign", "8": "stop"}, imperfect_metrics={"accuracy": 0.8, "accuracy/other": 0.8},
        empty_split="train")


def build_vizwizvqa(root: Path) -> Case:
    recs = [{"image": "VizWiz_val_00000000.jpg", "question": "What is this?", "answers": ["unanswerable"] * 9 + [""]},
            {"image": "VizWiz_val_00000001.jpg", "question": "What drink?", "answers": ["coffee"] * 10},
            {"image": "VizWiz_val_00000002.jpg", "question": "Blank?", "answers": [""] * 10}]
    formats.write_vizwiz(root, "val", recs, {r["image"]: img(i) for i, r in enumerate(recs)})
    formats.write_vizwiz(root, "train", [], {})
    return Case(
        split="val", options={},
        expected=[("VizWiz_val_00000000.jpg", "val/VizWiz_val_00000000.jpg", "answer en What is this?",
                   ("unanswerable",) * 9),
                  ("VizWiz_val_00000001.jpg", "val/VizWiz_val_00000001.jpg", "answer en What drink?", ("coffee",) * 10),
                  ("VizWiz_val_00000002.jpg", "val/VizWiz_val_00000002.jpg", "answer en Blank?", ())],
        perfect={"VizWiz_val_00000000.jpg": "unanswerable", "VizWiz_val_00000001.jpg": "coffee"},
        perfect_metrics={"accuracy": 1.0},
        # the question without answers is left out: (1 + 0) / 2
        imperfect={"VizWiz_val_00000000.jpg": "unanswerable", "VizWiz_val_00000001.jpg": "tea"},
        imperfect_metrics={"accuracy": 0.5},
        empty_split="train")


def build_docvqa(root: Path) -> Case:
    recs = [{"questionId": 51, "question": "What is the total cost?", "image": "documents/abc_1.png",
             "answers": ["Total Cost", "$10"]},
            {"questionId": 52, "question": "Who signed?", "image": "documents/abd_2.png", "answers": ["J. Smith"]}]
    formats.write_docvqa(root, "val", recs, {"documents/abc_1.png": img(1), "documents/abd_2.png": img(2)})
    formats.write_docvqa(root, "train", [], {})
    return Case(
        split="val", options={},
        expected=[("51", "val/documents/abc_1.png", "What is the total cost?", ("Total Cost", "$10")),
                  ("52", "val/documents/abd_2.png", "Who signed?", ("J. Smith",))],
        perfect={"51": "total cost", "52": "j. smith"}, perfect_metrics={"anls": 1.0},
        # "total cst" vs "total cost": 1 edit / 10 chars -> 0.9; missing -> 0; mean 0.45
        imperfect={"51": "total cst"}, imperfect_metrics={"anls": 0.45},
        empty_split="train")


def build_infovqa(root: Path) -> Case:
    recs = [{"questionId": 61, "question": "Which two?", "image_local_name": "i1.jpeg", "answers": ["A, B"]},
            {"questionId": 62, "question": "Is it?", "image_local_name": "i2.png", "answers": ["Yes"]}]
    formats.write_infovqa(root, "val", recs, {"i1.jpeg": img(1), "i2.png": img(2)})
    formats.write_infovqa(root, "train", [], {})
    return Case(
        split="val", options={},
        expected=[("61", "images/i1.jpeg", "answer en Which two?", ("a, b", "b, a")),
                  ("62", "images/i2.png", "answer en Is it?", ("yes",))],
        perfect={"61": "a, b", "62": "yes"}, perfect_metrics={"anls": 1.0},
        # the permuted answer matches -> 1; "no" vs "yes": 3 edits / 3 -> 0; mean 0.5
        imperfect={"61": "b, a", "62": "no"}, imperfect_metrics={"anls": 0.5},
        empty_split="train")


def build_stvqa(root: Path) -> Case:
    train = [{"question_id": 1, "question": "What brand?", "file_path": "coco-text/COCO_train2014_000000000009.jpg",
              "answers": ["Nike", "nike"]},
             {"question_id": 2, "question": "What number?", "file_path": "imagenet/n01.JPEG", "answers": ["7"]},
             {"question_id": 3, "question": "Which shop?", "file_path": "iiit/x.jpg", "answers": ["Tesco"]}]
    formats.write_stvqa(root, "train", train, {r["file_path"]: img(i) for i, r in enumerate(train)})
    formats.write_stvqa(root, "test", [], {})
    (root / "val_ids.txt").write_text("iiit/x.jpg\n")
    return Case(
        split="train", options={},
        expected=[("1", "train_images/coco-text/COCO_train2014_000000000009.jpg", "answer en What brand?",
                   ("nike", "nike")),
                  ("2", "train_images/imagenet/n01.JPEG", "answer en What number?", ("7",)),
                  ("3", "train_images/iiit/x.jpg", "answer en Which shop?", ("tesco",))],
        perfect={"1": "nike", "2": "7", "3": "tesco"}, perfect_metrics={"anls": 1.0},
        # 1, then "8" vs "7" (NL 1 -> 0), then missing -> 0: 1/3
        imperfect={"1": "nike", "2": "8"}, imperfect_metrics={"anls": 1 / 3},
        empty_split="test")


def build_ocrvqa(root: Path) -> Case:
    books = {"0001": {"imageURL": "http://x/0001.jpg", "questions": ["Who wrote this book?", "Is this a novel?"],
                      "answers": ["Ann Author", "Yes"], "split": 3},
             "0002": {"imageURL": "http://x/0002.png", "questions": ["Title?"], "answers": ["T"], "split": 1}}
    formats.write_ocrvqa(root, books, {"0001": img(1), "0002": img(2)})
    return Case(
        split="test", options={},
        expected=[("0001_0", "images/0001.jpg", "answer en Who wrote this book?", ("Ann Author",)),
                  ("0001_1", "images/0001.jpg", "answer en Is this a novel?", ("Yes",))],
        perfect={"0001_0": "ann author", "0001_1": "yes"}, perfect_metrics={"exact_match": 1.0},
        imperfect={"0001_0": "ann author", "0001_1": "no"}, imperfect_metrics={"exact_match": 0.5},
        empty_split="val")


def build_chartqa(root: Path) -> Case:
    human = [{"imgname": "a.png", "query": "How many?", "label": "12"},
             {"imgname": "b.png", "query": "Which color?", "label": "Red"}]
    aug = [{"imgname": "c.png", "query": "What value?", "label": "0.5"}]
    formats.write_chartqa(root, "test", human, aug, {"a.png": img(1), "b.png": img(2), "c.png": img(3)})
    formats.write_chartqa(root, "train", [], [], {})
    return Case(
        split="test", options={},
        expected=[("human/0", "test/png/a.png", "How many?", ("12",)),
                  ("human/1", "test/png/b.png", "Which color?", ("Red",)),
                  ("augmented/0", "test/png/c.png", "What value?", ("0.5",))],
        perfect={"human/0": "12", "human/1": "red", "augmented/0": "0.5"},
        perfect_metrics={"relaxed_accuracy": 1.0, "relaxed_accuracy/human": 1.0, "relaxed_accuracy/augmented": 1.0},
        # 12.5 is within 5% of 12 -> right, "blue" wrong: human 0.5; 0.6 is 20% off: aug 0
        imperfect={"human/0": "12.5", "human/1": "blue", "augmented/0": "0.6"},
        imperfect_metrics={"relaxed_accuracy": 0.25, "relaxed_accuracy/human": 0.5,
                           "relaxed_accuracy/augmented": 0.0},
        empty_split="train")


def _rsvqa_questions():
    return [{"id": 1, "img_id": 0, "type": "presence", "question": "Is there a road?", "answer": "Yes"},
            {"id": 2, "img_id": 0, "type": "comp", "question": "Are there more roads than buildings?", "answer": "no"},
            {"id": 3, "img_id": 1, "type": "count", "question": "How many buildings?", "answer": "15"},
            {"id": 4, "img_id": 1, "type": "rural_urban", "question": "Is it urban?", "answer": "urban"},
            {"id": 5, "img_id": 1, "type": "presence", "question": "Is there water?", "answer": "no"},
            {"id": 6, "img_id": 1, "type": "presence", "question": "Is there grass?", "answer": "yes"}]


def build_rsvqa_lr(root: Path) -> Case:
    formats.write_rsvqa(root, "lr", "test", _rsvqa_questions(), {0: img(0), 1: img(1)}, num_ids=8)
    formats.write_rsvqa(root, "lr", "train", [], {}, num_ids=8)
    q = {r["id"]: r for r in _rsvqa_questions()}
    exp = [(str(i), f"Images_LR/{q[i]['img_id']}.tif", f"answer en {q[i]['question']}", (q[i]["answer"].lower(),))
           for i in (1, 2, 4, 5, 6)]
    return Case(
        split="test", options={}, expected=exp,
        perfect={"1": "yes", "2": "no", "4": "urban", "5": "no", "6": "yes"},
        perfect_metrics={"accuracy_overall": 1.0, "accuracy_average": 1.0, "accuracy_nonnumeric": 1.0},
        # presence 1/3 (1 right, 5 wrong, 6 missing), comp 1, rural_urban 0 -> average 4/9;
        # overall 2 of 5
        imperfect={"1": "yes", "2": "no", "4": "rural", "5": "yes"},
        imperfect_metrics={"accuracy_overall": 0.4, "accuracy_average": 4 / 9, "accuracy/presence": 1 / 3,
                           "accuracy/comp": 1.0, "accuracy/rural_urban": 0.0},
        empty_split="train")


def build_rsvqa_hr(root: Path) -> Case:
    qs = [{"id": 0, "img_id": 3, "type": "presence", "question": "Is there a house?", "answer": "yes"},
          {"id": 1, "img_id": 3, "type": "area", "question": "What is the area of buildings?", "answer": "12m2"},
          {"id": 2, "img_id": 3, "type": "comp", "question": "Is it bigger?", "answer": "No"}]
    formats.write_rsvqa(root, "hr", "test_phili", qs, {3: img(3)})
    formats.write_rsvqa(root, "hr", "train", [], {}, num_ids=3)
    return Case(
        split="test_phili", options={},
        expected=[("0", "Data/3.png", "answer en Is there a house?", ("yes",)),
                  ("2", "Data/3.png", "answer en Is it bigger?", ("no",))],
        perfect={"0": "yes", "2": "no"},
        perfect_metrics={"accuracy_overall": 1.0, "accuracy_average": 1.0, "accuracy_nonnumeric": 1.0},
        imperfect={"0": "yes", "2": "yes"},
        imperfect_metrics={"accuracy_overall": 0.5, "accuracy_average": 0.5, "accuracy_nonnumeric": 0.5},
        empty_split="train")


def build_jsonl(root: Path) -> Case:
    formats.write_jsonl(root / "test.jsonl", [
        {"image": "imgs/a.png", "prefix": "answer en what?", "suffix": "cat", "id": "q-a"},
        {"image": "imgs/b.png", "prefix": "answer en who?", "suffix": ["Bob", "bob"]}])
    formats.save_image(root / "imgs" / "a.png", img(1))
    formats.save_image(root / "imgs" / "b.png", img(2))
    (root / "train.jsonl").write_text("\n")
    return Case(
        split="test", options={},
        expected=[("q-a", "imgs/a.png", "answer en what?", ("cat",)), ("2", "imgs/b.png", "answer en who?", ("Bob", "bob"))],
        perfect={"q-a": "cat", "2": "Bob"}, perfect_metrics={"exact_match": 1.0},
        imperfect={"q-a": "Cat", "2": "bob"}, imperfect_metrics={"exact_match": 0.5},
        empty_split="train")


def build_cococap(root: Path) -> Case:
    recs = [{"cocoid": 42, "split": "val", "filepath": "val2014", "captions": ["A dog runs.", "A brown dog."]},
            {"cocoid": 43, "split": "train", "filepath": "train2014", "captions": ["A cat."]},
            {"cocoid": 44, "split": "val", "filepath": "val2014", "captions": ["Two birds sit on a wire."]}]
    formats.write_karpathy_coco(root, recs, {42: img(1), 43: img(2), 44: img(3)})
    return Case(
        split="val", options={},
        expected=[("42", "val2014/COCO_val2014_000000000042.jpg", "caption en", ("A dog runs.", "A brown dog.")),
                  ("44", "val2014/COCO_val2014_000000000044.jpg", "caption en", ("Two birds sit on a wire.",))],
        perfect={}, perfect_metrics={}, imperfect={}, imperfect_metrics={}, empty_split="test")


def build_textcaps(root: Path) -> Case:
    recs = [{"image_id": "aa01", "image_name": "aa01", "captions": ["A Sign saying STOP.", "a stop sign"]},
            {"image_id": "aa02", "image_name": "aa02", "captions": ["A bottle of Coke."]}]
    formats.write_textcaps(root, "val", recs, {"aa01": img(1), "aa02": img(2)})
    formats.write_textcaps(root, "train", [], {})
    return Case(
        split="val", options={},
        expected=[("aa01", "train_images/aa01.jpg", "caption en", ("A Sign saying STOP.", "a stop sign")),
                  ("aa02", "train_images/aa02.jpg", "caption en", ("A bottle of Coke.",))],
        perfect={}, perfect_metrics={}, imperfect={}, imperfect_metrics={}, empty_split="train")




def corrupt(path: Path) -> None:
    """Make a JSON (or JSONL / pickle) file unreadable as such."""
    path.write_text('{"data": [') if path.suffix != ".p" else path.write_bytes(b"not a pickle")


REFCOCO_SIZES = {1: (40, 50), 2: (30, 30)}


def refcoco_refs():
    return [{"ref_id": 0, "ann_id": 10, "image_id": 1, "split": "val", "category_id": 1,
             "sentences": [{"sent_id": 100, "sent": "cat on the left"}, {"sent_id": 101, "sent": "left cat"}]},
            {"ref_id": 1, "ann_id": 11, "image_id": 2, "split": "val", "category_id": 2,
             "sentences": [{"sent_id": 102, "sent": "dog"}]},
            {"ref_id": 2, "ann_id": 12, "image_id": 2, "split": "testA", "category_id": 2,
             "sentences": [{"sent_id": 103, "sent": "man"}]}]


def refcoco_annotations(segmentations=None):
    segs = segmentations or {10: [[10.0, 5.0, 30.0, 5.0, 30.0, 25.0, 10.0, 25.0]],
                             11: [[2.0, 2.0, 20.0, 2.0, 11.0, 20.0]],
                             12: [[0.0, 0.0, 5.0, 0.0, 5.0, 5.0]]}
    boxes = {10: [10.0, 5.0, 20.0, 20.0], 11: [2.0, 2.0, 18.0, 18.0], 12: [0.0, 0.0, 5.0, 5.0]}
    return [{"id": i, "image_id": 1 if i == 10 else 2, "segmentation": segs[i], "bbox": boxes[i],
             "category_id": 1 if i == 10 else 2} for i in (10, 11, 12)]


def build_refcoco_seg(root: Path, segmentations=None, subset: str = "refcoco", split_by: str = "unc") -> Case:
    formats.write_refcoco(root, subset, split_by, refcoco_refs(), refcoco_annotations(segmentations),
                          REFCOCO_SIZES, {i: img(i, h, w) for i, (h, w) in REFCOCO_SIZES.items()})
    im = "train2014/COCO_train2014_{:012d}.jpg"
    return Case(
        split="val", options={"subset": subset, "split_by": split_by},
        expected=[("100", im.format(1), "cat on the left", ()), ("101", im.format(1), "left cat", ()),
                  ("102", im.format(2), "dog", ())],
        perfect={}, perfect_metrics={}, imperfect={}, imperfect_metrics={}, empty_split="testB")


BUILDERS = {name[len("build_"):]: f for name, f in globals().items() if name.startswith("build_")}
