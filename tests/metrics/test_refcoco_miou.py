"""refcoco_miou against big_vision's segmentation evaluator rules.

Source: big_vision/evaluators/proj/paligemma/transfers/segmentation.py: per-example
iou = |P & G| / (|G| + |P| - |P & G|), invalid / empty predictions score 0, 'miou' is the mean
of per-example IoUs. cIoU (sum of intersections over sum of unions) is the RefCOCO literature's
cumulative IoU.
"""

from __future__ import annotations

import numpy as np
import pytest

from pgbench.errors import InputError
from pgbench.scoring import mask_iou


def test_worked_example():
    p1 = np.zeros((4, 5), bool); p1[:2, :2] = True       # 4 px
    g1 = np.zeros((4, 5), bool); g1[:2, :3] = True       # 6 px, overlap 4 -> 4/6
    p2 = np.zeros((3, 3), np.uint8)                      # empty prediction -> 0
    g2 = np.ones((3, 3), np.uint8)
    p3 = [[1, 0], [0, 1]]; g3 = [[1, 0], [0, 1]]         # nested lists, identical -> 1
    out = mask_iou.refcoco_miou([p1, p2, p3], [g1, g2, g3])
    assert out["miou"] == pytest.approx((4 / 6 + 0 + 1) / 3)
    assert out["ciou"] == pytest.approx((4 + 0 + 2) / (6 + 9 + 2))


def test_empty_on_empty_is_zero():
    z = np.zeros((2, 2), bool)
    assert mask_iou.refcoco_miou([z], [z]) == {"miou": 0.0, "ciou": 0.0}
    assert mask_iou.iou(z, z) == 0.0


def test_single_pair_iou_is_the_per_example_score():
    p = np.zeros((4, 5), bool); p[:2, :2] = True
    g = np.zeros((4, 5), bool); g[:2, :3] = True
    assert mask_iou.iou(p, g) == 4 / 6
    assert mask_iou.iou(p, g) == mask_iou.refcoco_miou([p], [g])["miou"]
    with pytest.raises(InputError, match="differs"):
        mask_iou.iou(p, g[:3])


def test_random_masks_against_float_formula():
    rng = np.random.default_rng(0)
    preds, refs, ious = [], [], []
    for _ in range(20):
        h, w = rng.integers(1, 40, 2)
        p = rng.random((h, w)) < 0.3
        g = rng.random((h, w)) < 0.5
        preds.append(p.astype(np.float32)); refs.append(g)
        u = (p | g).sum()
        ious.append((p & g).sum() / u if u else 0.0)
    assert mask_iou.refcoco_miou(preds, refs)["miou"] == pytest.approx(np.mean(ious), rel=1e-12)


def test_evaluate_module(load_metric):
    g = np.ones((3, 3), bool)
    out = load_metric("refcoco_miou").compute(predictions=[np.eye(3, dtype=bool)], references=[g])
    assert out == pytest.approx({"miou": 1 / 3, "ciou": 1 / 3})


@pytest.mark.parametrize("preds, refs, match", [
    ([np.ones((2, 2))], [np.ones((2, 3))], "differs from references"),
    ([np.ones((2, 2))], [np.ones((2, 2)), np.ones((2, 2))], "different lengths"),
    ([], [], "empty"),
    ([np.ones(4)], [np.ones(4)], "2-D mask"),
    ([np.full((2, 2), 2)], [np.ones((2, 2))], "0/1 or bool"),
    ([[["a"]]], [np.ones((1, 1))], "0/1 or bool"),
])
def test_bad_input(preds, refs, match):
    with pytest.raises(InputError, match=match):
        mask_iou.refcoco_miou(preds, refs)
