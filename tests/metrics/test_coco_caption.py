"""coco_caption against pycocoevalcap's own COCOEvalCap pipeline.

The reference path is the package's documented entry point: pycocotools COCO objects for
ground truth and results, `COCOEvalCap(coco, cocoRes).evaluate()`. SPICE (which needs a model
download) is replaced by a stub there; everything else is the package's code.
"""

from __future__ import annotations

import shutil

import pytest

from pgbench.errors import InputError
from pgbench.scoring import caption

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs java")

PREDS = [
    "a dog runs on the grass.",
    "Two men playing frisbee in a park",
    "",                                          # empty prediction
    "a café with tables, chairs and 1,000 lights",
    "a man riding a wave on top of a surfboard",
    "a red bus",
]
REFS = [
    ["A dog running on grass.", "the dog is on the grass", "A brown dog runs outside"],
    ["two men play frisbee", "Men throwing a frisbee in the park.", "people playing in a park"],
    ["a cat sleeping on a couch", "a cat on a sofa"],
    ["A CAFÉ with many lights", "tables and chairs in a cafe"],
    ["a surfer riding a wave", "a man surfing on a surfboard", "a person rides a big wave"],
    ["a red double decker bus on the street", "a bus"],
]


def _official(preds, refs, monkeypatch):
    from pycocoevalcap import eval as cap_eval
    from pycocotools.coco import COCO

    class _NoSpice:
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(res)

        def method(self):
            return "SPICE"

    monkeypatch.setattr(cap_eval, "Spice", _NoSpice)
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in range(len(refs))],
                  "annotations": [{"image_id": i, "id": 1000 * i + j, "caption": r}
                                  for i, rs in enumerate(refs) for j, r in enumerate(rs)]}
    gt.createIndex()
    res = gt.loadRes([{"image_id": i, "caption": p} for i, p in enumerate(preds)])
    ev = cap_eval.COCOEvalCap(gt, res)
    ev.evaluate()
    e = ev.eval
    return {"bleu_1": e["Bleu_1"], "bleu_2": e["Bleu_2"], "bleu_3": e["Bleu_3"], "bleu_4": e["Bleu_4"],
            "meteor": e["METEOR"], "rouge_l": e["ROUGE_L"], "cider": e["CIDEr"]}


@pytest.mark.slow  # four JVM launches (two PTB tokenisations and METEOR per side)
def test_matches_cocoevalcap(load_metric, monkeypatch):
    expected = _official(PREDS, REFS, monkeypatch)
    got = load_metric("coco_caption").compute(predictions=PREDS, references=REFS)
    assert set(got) == {"cider", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor"}
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=1e-12, abs=1e-12), k
    assert 0 < got["cider"] and 0 < got["bleu_1"] <= 1


def test_java_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)
    with pytest.raises(caption.JavaMissingError, match="Java runtime"):
        caption.coco_caption(["a"], [["a"]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(predictions=["a"], references=[["a"], ["b"]]), "different lengths"),
    (dict(predictions=[], references=[]), "empty"),
    (dict(predictions=[["a"]], references=[["a"]]), "expected a str"),
    (dict(predictions=["a"], references=["a"]), "expected a list of str"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        caption.coco_caption(**kwargs)
