"""Chance levels of the synthetic families: what a blind baseline scores on the eval split.

The baseline knows the training answers and the question but never looks at the image:

* VQAv2, RSVQA-LR: the most frequent training answer for the question's type (VQAv2
  ``question_type``, RSVQA ``type``), the "per question-type prior" of the VQA literature;
* TextVQA: the most frequent training answer; DocVQA: the most frequent training answer to
  the same question text;
* captions: the most frequent training caption, for every image;
* referring segmentation: the whole image as the mask;
* detection: one whole-image box per asked label.

Each is scored with the same pgbench.scoring function the task's metric uses; the value is
the metric's headline key (``accuracy``, ``cider``, ``miou``, ``anls``, ``accuracy_average``,
``map``), on the family's eval split (:data:`pgbench.synth.generate.EVAL_SPLIT`).
"""

from __future__ import annotations

import collections
from typing import Any, Iterable

import numpy as np

from pgbench.scoring import anls, caption, detection, short_answer, vqa
from pgbench.synth import scenes


def _mode(values: Iterable[str]) -> str:
    """Most frequent value; ties go to the alphabetically first (deterministic)."""
    counts = collections.Counter(values)
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)


def _prior(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    by_key: dict[str, list[str]] = collections.defaultdict(list)
    for key, answer in pairs:
        by_key[key].append(answer)
    return {k: _mode(v) for k, v in by_key.items()}


def _eval_generic(family: str) -> str:
    from pgbench.synth.generate import EVAL_SPLIT, SPLIT_NAMES

    return next(g for g, names in SPLIT_NAMES[family].items() if EVAL_SPLIT[family] in names)


def chance_level(family: str, recs: dict[str, list[dict]]) -> dict[str, Any]:
    """``{"metric": key, "score": float | None, "baseline": str}`` for one family's records
    (generic split -> records). ``score`` is None when the eval split or the training split
    is empty, or (captions) when Java, which the caption metric needs, is missing."""
    train, test = recs.get("train", []), recs.get(_eval_generic(family), [])
    fn = _CHANCE[family]
    metric, baseline = fn.metric, fn.__doc__.strip()
    if not train or not test:
        return {"metric": metric, "score": None, "baseline": baseline, "note": "empty train or eval split"}
    try:
        score = fn(train, test)
    except caption.JavaMissingError:
        return {"metric": metric, "score": None, "baseline": baseline, "note": "no Java runtime for coco_caption"}
    return {"metric": metric, "score": float(score), "baseline": baseline}


def _metric(key: str):
    def wrap(fn):
        fn.metric = key
        return fn
    return wrap


@_metric("accuracy")
def _vqav2(train, test):
    """majority training answer per question type"""
    prior = _prior((q["question_type"], q["answer"]) for r in train for q in r["questions"])
    qs = [q for r in test for q in r["questions"]]
    preds = [prior.get(q["question_type"], "") for q in qs]
    return vqa.vqa_accuracy(preds, [q["answers"] for q in qs])["accuracy"]


@_metric("accuracy")
def _textvqa(train, test):
    """majority training answer"""
    top = _mode(q["answer"] for r in train for q in r["questions"])
    qs = [q for r in test for q in r["questions"]]
    return vqa.vqa_accuracy([top] * len(qs), [q["answers"] for q in qs])["accuracy"]


@_metric("anls")
def _docvqa(train, test):
    """majority training answer to the same question text"""
    prior = _prior((q["question"], q["answers"][0]) for r in train for q in r["questions"])
    qs = [q for r in test for q in r["questions"]]
    return anls.anls([prior.get(q["question"], "") for q in qs], [q["answers"] for q in qs])["anls"]


@_metric("accuracy_average")
def _rsvqa(train, test):
    """majority training answer per question type (nonum: count questions left out)"""
    prior = _prior((q["type"], q["answer"]) for r in train for q in r["questions"])
    qs = [q for r in test for q in r["questions"] if q["type"] != "count"]
    return short_answer.rsvqa_accuracy([prior.get(q["type"], "") for q in qs], [[q["answer"]] for q in qs],
                                       [q["type"] for q in qs])["accuracy_average"]


@_metric("cider")
def _cococap(train, test):
    """most frequent training caption for every image"""
    top = _mode(c for r in train for c in r["captions"])
    return caption.coco_caption([top] * len(test), [r["captions"] for r in test])["cider"]


@_metric("miou")
def _refcoco(train, test):
    """the whole image as the mask"""
    ious = []
    for r in test:
        scene = r["scene"]
        for ref in r["refs"]:
            area = scenes.polygon_mask(scene.objects[ref["object"]].polygon(), scene.size).sum()
            ious += [area / scene.size ** 2] * len(ref["sentences"])
    return float(np.mean(ious))


@_metric("map")
def _detection(train, test):
    """one whole-image box per asked label"""
    preds = [[{"box": [0, 0, r["scene"].size, r["scene"].size], "label": lab} for lab in r["labels"]] for r in test]
    refs = [[{"box": list(box), "label": lab} for lab, box in r["objects"]] for r in test]
    return detection.detection_map(preds, refs)["map"]


_CHANCE = {"vqav2": _vqav2, "textvqa": _textvqa, "docvqa": _docvqa, "rsvqa_lr": _rsvqa,
           "cococap": _cococap, "refcoco_seg": _refcoco, "detection": _detection}
