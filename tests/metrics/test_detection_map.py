"""detection_map against pycocotools' COCOeval run directly on COCO-format dicts."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from pgbench.errors import InputError
from pgbench.scoring import detection


def _official(preds, refs):
    """COCO json written by hand from the same boxes, evaluated by COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = sorted({o["label"] for objs in preds + refs for o in objs})
    cats = [{"id": 10 + k, "name": n} for k, n in enumerate(names)]
    cid = {c["name"]: c["id"] for c in cats}
    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    anns = []
    for img, objs in enumerate(refs):
        for o in objs:
            b = xywh(o["box"])
            anns.append({"id": 1 + len(anns), "image_id": 100 + img, "category_id": cid[o["label"]],
                         "bbox": b, "area": b[2] * b[3], "iscrowd": 0})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": 100 + i} for i in range(len(refs))], "annotations": anns, "categories": cats}
        gt.createIndex()
        dt = gt.loadRes([{"image_id": 100 + img, "category_id": cid[o["label"]], "bbox": xywh(o["box"]),
                          "score": o.get("score", 1.0)} for img, objs in enumerate(preds) for o in objs])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return {"map": ev.stats[0], "map_50": ev.stats[1], "map_75": ev.stats[2]}


def _random_case(seed, n_img=12):
    rng = np.random.default_rng(seed)
    labels = ["cat", "dog", "car"]
    preds, refs = [], []
    for _ in range(n_img):
        r, p = [], []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(10, 80, 2)
            lab = labels[rng.integers(3)]
            r.append({"box": [x, y, x + w, y + h], "label": lab})
            if rng.random() < 0.8:  # a jittered detection of it
                j = rng.normal(0, 6, 4)
                p.append({"box": [x + j[0], y + j[1], x + w + abs(j[2]) + 1, y + h + abs(j[3]) + 1],
                          "label": lab, "score": float(rng.random())})
        for _ in range(rng.integers(0, 2)):  # false positives, some without score
            x, y = rng.uniform(0, 200, 2)
            box = {"box": [x, y, x + 20, y + 20], "label": labels[rng.integers(3)]}
            if rng.random() < 0.5:
                box["score"] = float(rng.random())
            p.append(box)
        preds.append(p); refs.append(r)
    return preds, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_cocoeval(seed, load_metric):
    preds, refs = _random_case(seed)
    expected = _official(preds, refs)
    got = load_metric("detection_map").compute(predictions=preds, references=refs)
    assert got == pytest.approx(expected, abs=1e-12)


def test_worked_examples():
    gt = [[{"box": [0, 0, 10, 10], "label": "a"}]]
    assert detection.detection_map([[{"box": [0, 0, 10, 10], "label": "a"}]], gt) == \
        pytest.approx({"map": 1.0, "map_50": 1.0, "map_75": 1.0})
    # IoU 0.6: counts at 0.50..0.60 (3 of 10 thresholds), not at 0.75. No score -> 1.0.
    out = detection.detection_map([[{"box": [0, 0, 10, 6], "label": "a"}]], gt)
    assert out == pytest.approx({"map": 0.3, "map_50": 1.0, "map_75": 0.0})
    # Wrong label, and no detections at all: AP 0.
    assert detection.detection_map([[{"box": [0, 0, 10, 10], "label": "b"}]], gt)["map"] == 0.0
    assert detection.detection_map([[]], gt)["map"] == 0.0


@pytest.mark.parametrize("preds, refs, match", [
    ([[]], [[], []], "different lengths"),
    ([], [], "empty"),
    ([[]], [[]], "no ground-truth box"),
    ([[{"box": [0, 0, 1], "label": "a"}]], [[{"box": [0, 0, 1, 1], "label": "a"}]], "4 finite numbers"),
    ([[{"box": [5, 0, 1, 1], "label": "a"}]], [[{"box": [0, 0, 1, 1], "label": "a"}]], "x0 <= x1"),
    ([[{"box": [0, 0, 1, 1], "label": 3}]], [[{"box": [0, 0, 1, 1], "label": "a"}]], "label"),
    ([[{"box": [0, 0, 1, 1], "label": "a", "score": "hi"}]], [[{"box": [0, 0, 1, 1], "label": "a"}]], "score"),
    ([{"box": [0, 0, 1, 1], "label": "a"}], [[{"box": [0, 0, 1, 1], "label": "a"}]], "list of boxes"),
])
def test_bad_input(preds, refs, match):
    with pytest.raises(InputError, match=match):
        detection.detection_map(preds, refs)
