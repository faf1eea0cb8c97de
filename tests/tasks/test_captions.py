"""cococap and textcaps hand pycocoevalcap one prediction per image, "" where missing."""

from __future__ import annotations

import pytest

from pgbench import task as task_lib
from pgbench.scoring import caption
from tests.tasks import cases


@pytest.mark.parametrize("name", ["cococap", "textcaps"])
def test_predictions_are_aligned_with_references(name, tmp_path, monkeypatch):
    task = task_lib.load_task(name)
    case = cases.BUILDERS[name](tmp_path)
    examples = task.examples(tmp_path, case.split)
    seen = {}

    def fake(predictions, references):
        seen.update(predictions=predictions, references=references)
        return {"cider": 0.5}

    monkeypatch.setattr(caption, "coco_caption", fake)
    first = examples[0].id
    assert task.score(examples, {first: "a dog"}, task.resolve_options()) == {"cider": 0.5}
    assert seen["predictions"] == ["a dog"] + [""] * (len(examples) - 1)
    assert seen["references"] == [list(e.references) for e in examples]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cococap", "textcaps"])
def test_a_reference_as_prediction_scores_bleu_one(name, tmp_path):
    task = task_lib.load_task(name)
    case = cases.BUILDERS[name](tmp_path)
    examples = task.examples(tmp_path, case.split)
    got = task.score(examples, {e.id: e.references[0] for e in examples}, task.resolve_options())
    assert set(got) == {"cider", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor"}
    assert got["bleu_1"] == pytest.approx(1.0) and got["rouge_l"] == pytest.approx(1.0)
