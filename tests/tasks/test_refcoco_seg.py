"""refcoco_seg: masks from predicted tokens through the VQ-VAE against instances.json masks."""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import sys

import numpy as np
import pytest

from pgbench import segmentation, task as task_lib
from pgbench.task import TaskError
from tests.tasks import cases

TASK = task_lib.load_task("refcoco_seg")
MOD = sys.modules["pgbench_tasks.refcoco_seg"]


@pytest.fixture(scope="module")
def vae_path(big_vision_reference):
    return big_vision_reference / "seg_vqvae" / "vae_checkpoint.npz"


@pytest.fixture(scope="module")
def codes(big_vision_reference):
    with np.load(big_vision_reference / "seg_vqvae" / "inputs.npz") as f:
        return f["codes"]


def _text(bins, codes_row) -> str:
    return "".join(f"<loc{b:04d}>" for b in bins) + "".join(f"<seg{c:03d}>" for c in codes_row)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with 0s."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


@pytest.fixture(scope="module")
def perfect_setup(tmp_path_factory, vae_path, codes):
    """GT masks made equal to what the predicted tokens decode to (as RLE annotations)."""
    root = tmp_path_factory.mktemp("refcoco")
    vae = segmentation.load_vqvae(vae_path, require_encoder=False)
    t1, t2 = _text((100, 150, 800, 900), codes[0]), _text((0, 0, 1023, 1023), codes[1])
    m1, m2 = MOD.predicted_masks(vae, [t1, t2], [cases.REFCOCO_SIZES[1], cases.REFCOCO_SIZES[2]])
    assert m1.any() and m2.any() and not m1.all()
    cases.build_refcoco_seg(root, {10: _uncompressed_rle(m1), 11: _uncompressed_rle(m2),
                                   12: [[0.0, 0.0, 5.0, 0.0, 5.0, 5.0]]})
    return root, (t1, t2), (m1, m2)


def _opts(vae_path, **kw):
    return {"vae": str(vae_path), **kw}


def test_perfect_tokens_score_miou_one(perfect_setup, vae_path):
    root, (t1, t2), _ = perfect_setup
    examples = TASK.examples(root, "val", _opts(vae_path))
    got = TASK.score(examples, {"100": t1, "101": t1 + " cat", "102": t2}, TASK.resolve_options(_opts(vae_path)))
    assert got == {"miou": 1.0, "ciou": 1.0}


def test_invalid_and_missing_predictions_score_zero(perfect_setup, vae_path):
    root, (t1, t2), (m1, m2) = perfect_setup
    examples = TASK.examples(root, "val", _opts(vae_path))
    # 100 perfect; 101 not a box + 16 codes -> empty mask (IoU 0); 102 missing -> empty.
    got = TASK.score(examples, {"100": t1, "101": "a cat"}, TASK.resolve_options(_opts(vae_path)))
    a1, a2 = int(m1.sum()), int(m2.sum())
    assert math.isclose(got["miou"], 1 / 3)
    assert math.isclose(got["ciou"], a1 / (a1 + a1 + a2))


def test_streamed_chunks_give_the_same_scores(perfect_setup, vae_path, monkeypatch):
    root, (t1, t2), _ = perfect_setup
    examples = TASK.examples(root, "val", _opts(vae_path))
    preds = {"100": t1, "101": t2, "102": t2}
    whole = TASK.score(examples, preds, TASK.resolve_options(_opts(vae_path)))
    monkeypatch.setattr(MOD, "CHUNK", 1)
    assert TASK.score(examples, preds, TASK.resolve_options(_opts(vae_path))) == whole


def test_polygon_masks_match_pycocotools_annToMask(tmp_path):
    from pycocotools.coco import COCO

    cases.build_refcoco_seg(tmp_path)
    examples = TASK.examples(tmp_path, "val") + TASK.examples(tmp_path, "testA")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "refcoco" / "instances.json"))
    for e in examples:
        want = coco.annToMask(coco.anns[e.meta["ann_id"]]).astype(bool)
        got = MOD.gt_mask(e)
        assert got.shape == tuple(e.meta["image_hw"]) and got.any()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("text,valid", [
    ("<loc0001><loc0002><loc0100><loc0200>" + "<seg005>" * 16, True),
    ("<loc0001><loc0002><loc0100><loc0200>" + "<seg005>" * 15, False),  # 15 codes
    ("<loc0100><loc0002><loc0001><loc0200>" + "<seg005>" * 16, False),  # y2 <= y1
    ("<loc1100><loc0002><loc0100><loc0200>" + "<seg005>" * 16, False),  # bin out of range
    ("<loc0001><loc0002><loc0100><loc0200>" + "<seg200>" + "<seg005>" * 15, False),  # code out of range
    (" <loc0001><loc0002><loc0100><loc0200>" + "<seg005>" * 16, False),  # a text token first
    ("<seg005><loc0001><loc0002><loc0100>" + "<seg005>" * 16, False),
])
def test_token_view_follows_the_evaluator(text, valid):
    from pgbench import structured

    ok, _, _ = structured.parse_seg_token_ids(MOD.token_ids(text), locseg=MOD.TEXT_LOCSEG)
    assert ok is valid


def test_scoring_needs_the_vae(tmp_path):
    cases.build_refcoco_seg(tmp_path)
    examples = TASK.examples(tmp_path, "val")
    with pytest.raises(TaskError, match="vae-oid.npz"):
        TASK.score(examples, {}, TASK.resolve_options())


def test_missing_vae_file_is_listed(tmp_path):
    cases.build_refcoco_seg(tmp_path)
    with pytest.raises(TaskError, match="nowhere/vae-oid.npz"):
        TASK.examples(tmp_path, "val", {"vae": str(tmp_path / "nowhere" / "vae-oid.npz")})


def test_refcocog_defaults_to_umd(tmp_path):
    cases.build_refcoco_seg(tmp_path, subset="refcocog", split_by="umd")
    assert [e.id for e in TASK.examples(tmp_path, "val", {"subset": "refcocog"})] == ["100", "101", "102"]
    with pytest.raises(TaskError, match=r"refs\(google\).p"):
        TASK.examples(tmp_path, "val", {"subset": "refcocog", "split_by": "google"})
    with pytest.raises(TaskError, match="subset='coco'"):
        TASK.examples(tmp_path, "val", {"subset": "coco"})


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_with_code_is_refused(tmp_path):
    cases.build_refcoco_seg(tmp_path)
    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([_Evil()], protocol=2))
    with pytest.raises(TaskError, match=r"refs\(unc\).p: not a readable data pickle .*refusing to load posix.getcwd"):
        TASK.examples(tmp_path, "val")


def test_training_target_is_box_and_codes(tmp_path, vae_path):
    cases.build_refcoco_seg(tmp_path)
    ex = TASK.examples(tmp_path, "val")[0]
    vae = segmentation.load_vqvae(vae_path)
    target = MOD.target_string(ex, vae)
    # bbox [10, 5, 20, 20] in a 40x50 image: (y1, x1, y2, x2) = (.125, .2, .625, .6) * 1023 rounded
    assert target.startswith("<loc0128><loc0205><loc0639><loc0614><seg")
    assert target.count("<seg") == 16
