"""Every built-in task adapter on a tiny dataset written in its official layout."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pgbench import task as task_lib
from pgbench.task import TaskError
from tests.tasks import cases

ALL = sorted(cases.BUILDERS)
SCORED = [n for n in ALL if n not in ("cococap", "textcaps", "refcoco_seg")]  # see test_captions/test_refcoco_seg


@pytest.fixture(params=ALL)
def built(request, tmp_path):
    name = request.param
    root = tmp_path / name
    root.mkdir()
    return name, task_lib.load_task(name), root, cases.BUILDERS[name](root)


def test_every_builtin_task_has_a_case():
    assert sorted(task_lib.available()) == ALL


def test_load_gives_ids_images_prompts_references(built):
    name, task, root, case = built
    examples = task.examples(root, case.split, case.options)
    got = [(e.id, e.image, e.prefix, e.references) for e in examples]
    assert got == case.expected
    for e in examples:
        assert (root / e.image).is_file(), e.image


def _close(got: dict, want: dict):
    for k, v in want.items():
        assert k in got, (k, got)
        assert math.isclose(got[k], v, rel_tol=1e-12, abs_tol=1e-12), (k, got[k], v)


@pytest.mark.parametrize("name", SCORED)
def test_perfect_predictions_score_the_maximum(name, tmp_path):
    task, case = task_lib.load_task(name), cases.BUILDERS[name](tmp_path)
    examples = task.examples(tmp_path, case.split, case.options)
    preds = {k: task.postprocess(v) for k, v in case.perfect.items()}
    _close(task.score(examples, preds, task.resolve_options(case.options)), case.perfect_metrics)


@pytest.mark.parametrize("name", SCORED)
def test_imperfect_predictions_score_the_hand_computed_value(name, tmp_path):
    task, case = task_lib.load_task(name), cases.BUILDERS[name](tmp_path)
    examples = task.examples(tmp_path, case.split, case.options)
    preds = {k: task.postprocess(v) for k, v in case.imperfect.items()}
    _close(task.score(examples, preds, task.resolve_options(case.options)), case.imperfect_metrics)


def test_missing_data_directory_is_one_error(built):
    name, task, root, case = built
    with pytest.raises(TaskError, match="does not exist") as err:
        task.examples(root / "nowhere", case.split, case.options)
    assert task.layout in str(err.value)


def test_missing_files_are_listed_exactly(built):
    name, task, root, case = built
    opts = task.resolve_options(case.options)
    files = task.expected_files(root, case.split, opts)
    for f in files:
        f.unlink()
    with pytest.raises(TaskError) as err:
        task.examples(root, case.split, case.options)
    listed = [line.strip() for line in str(err.value).splitlines() if line.startswith("  ")]
    assert listed == [str(f) for f in files]


def test_one_missing_file_is_named_alone(built):
    name, task, root, case = built
    files = task.expected_files(root, case.split, task.resolve_options(case.options))
    files[-1].unlink()
    with pytest.raises(TaskError) as err:
        task.examples(root, case.split, case.options)
    listed = [line.strip() for line in str(err.value).splitlines() if line.startswith("  ")]
    assert listed == [str(files[-1])]


def test_unknown_split_names_the_splits(built):
    name, task, root, case = built
    with pytest.raises(TaskError, match="no split 'nope'") as err:
        task.examples(root, "nope", case.options)
    assert ", ".join(task.splits) in str(err.value)


def test_empty_split_is_an_error(built):
    name, task, root, case = built
    with pytest.raises(TaskError, match=case.empty_split):
        task.examples(root, case.empty_split, case.options)


def test_malformed_file_is_named(built):
    name, task, root, case = built
    first = task.expected_files(root, case.split, task.resolve_options(case.options))[0]
    cases.corrupt(first)
    with pytest.raises(TaskError, match=str(first).replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        task.examples(root, case.split, case.options)


def test_unknown_option_is_an_error(built):
    name, task, root, case = built
    with pytest.raises(TaskError, match="has no option"):
        task.examples(root, case.split, {"colour": "red"})


@pytest.mark.parametrize("name", ALL)
def test_task_carries_paper_settings(name):
    task = task_lib.load_task(name)
    assert task.eval_split in task.splits and task.train_split in task.splits
    assert task.source and task.layout
    assert {"epochs", "batch", "lr", "wd", "dropout", "label_smoothing", "freeze"} <= set(task.hparams)
    assert task.max_decode_len > 0 and task.beam >= 1
    if name != "jsonl":
        assert task.paper


# ---------------------------------------------------------------------- task-specific behaviour

def test_missing_field_names_file_and_key(tmp_path):
    task = task_lib.load_task("textvqa")
    cases.build_textvqa(tmp_path)
    path = tmp_path / "TextVQA_0.5.1_val.json"
    path.write_text('{"data": [{"question_id": 1, "image_id": "x"}]}')
    with pytest.raises(TaskError, match=r"TextVQA_0.5.1_val.json: data\[0\] has no key 'question'"):
        task.examples(tmp_path, "val")


def test_wrong_type_names_file_key_and_type(tmp_path):
    task = task_lib.load_task("vqav2")
    cases.build_vqav2(tmp_path)
    path = tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json"
    path.write_text('{"questions": [{"question_id": "1000", "image_id": 1, "question": "q"}]}')
    with pytest.raises(TaskError, match=r"questions\[0\]\['question_id'\] should be int"):
        task.examples(tmp_path, "val2014")


def test_vqav2_test_dev_reads_questions_only_and_cannot_be_scored(tmp_path):
    task = task_lib.load_task("vqav2")
    cases.build_vqav2(tmp_path)
    examples = task.examples(tmp_path, "test-dev2015")
    assert [(e.id, e.image, e.references) for e in examples] == [
        ("5000", "test2015/COCO_test2015_000000000005.jpg", ())]
    with pytest.raises(TaskError, match="no ground truth"):
        task.score(examples, {"5000": "yes"}, task.resolve_options())


def test_vqav2_big_vision_mode_is_an_option(tmp_path):
    task = task_lib.load_task("vqav2")
    case = cases.build_vqav2(tmp_path)
    examples = task.examples(tmp_path, "val2014")
    got = task.score(examples, case.perfect, task.resolve_options({"mode": "big_vision"}))
    assert got["accuracy"] == 1.0


def test_rsvqa_numeric_keeps_binned_counts(tmp_path):
    task = task_lib.load_task("rsvqa_lr")
    cases.build_rsvqa_lr(tmp_path)
    examples = task.examples(tmp_path, "test", {"numeric": True})
    count = [e for e in examples if e.meta["question_type"] == "count"]
    assert [(e.id, e.references) for e in count] == [("3", ("between 11 and 100",))]
    got = task.score(examples, {"3": "between 11 and 100"}, task.resolve_options({"numeric": True}))
    assert got["accuracy/count"] == 1.0 and math.isclose(got["accuracy_overall"], 1 / 6)


@pytest.mark.parametrize("answer,qtype,binned", [
    ("0", "count", "0"), ("1", "count", "between 1 and 10"), ("10", "count", "between 1 and 10"),
    ("11", "count", "between 11 and 100"), ("1000", "count", "between 101 and 1000"),
    ("1001", "count", "more than 1000"), ("yes", "presence", "yes")])
def test_rsvqa_lr_bins(answer, qtype, binned):
    assert task_lib.load_task("rsvqa_lr")  # registers the module
    import sys
    assert sys.modules["pgbench_tasks.rsvqa_lr"].bin_answer(answer, qtype) == binned


@pytest.mark.parametrize("answer,binned", [
    ("0m2", "0 m2"), ("7m2", "between 1 m2 and 10 m2"), ("100m2", "between 11 m2 and 100 m2"),
    ("101m2", "between 101 m2 and 1000 m2"), ("5000m2", "more than 1000 m2")])
def test_rsvqa_hr_bins_areas(answer, binned, tmp_path):
    task = task_lib.load_task("rsvqa_hr")
    import sys
    assert sys.modules["pgbench_tasks.rsvqa_hr"].bin_answer(answer, "area") == binned


def test_rsvqa_hr_numeric_and_tif_fallback(tmp_path):
    task = task_lib.load_task("rsvqa_hr")
    cases.build_rsvqa_hr(tmp_path)
    (tmp_path / "Data" / "3.png").rename(tmp_path / "Data" / "3.tif")
    examples = task.examples(tmp_path, "test_phili", {"numeric": True})
    assert [(e.id, e.image, e.references) for e in examples] == [
        ("0", "Data/3.tif", ("yes",)), ("1", "Data/3.tif", ("between 11 m2 and 100 m2",)), ("2", "Data/3.tif", ("no",))]


def test_stvqa_val_needs_val_ids_and_splits_train(tmp_path):
    task = task_lib.load_task("stvqa")
    cases.build_stvqa(tmp_path)
    with pytest.raises(TaskError, match="val_ids"):
        task.examples(tmp_path, "val")
    opts = {"val_ids": str(tmp_path / "val_ids.txt")}
    assert [e.id for e in task.examples(tmp_path, "val", opts)] == ["3"]
    assert [e.id for e in task.examples(tmp_path, "train", opts)] == ["1", "2"]
    swapped = task.examples(tmp_path, "train", {"coco_images": True})
    assert swapped[0].image == "train2014/COCO_train2014_000000000009.jpg"


def test_chartqa_one_subset_only(tmp_path):
    task = task_lib.load_task("chartqa")
    case = cases.build_chartqa(tmp_path)
    examples = [e for e in task.examples(tmp_path, "test") if e.meta["subset"] == "human"]
    got = task.score(examples, case.imperfect, task.resolve_options())
    assert got == {"relaxed_accuracy": 0.5, "relaxed_accuracy/human": 0.5}


def test_ocrvqa_top_level_must_be_an_object(tmp_path):
    task = task_lib.load_task("ocrvqa")
    cases.build_ocrvqa(tmp_path)
    (tmp_path / "dataset.json").write_text("[]")
    with pytest.raises(TaskError, match="dataset.json: the top level should be a JSON object"):
        task.examples(tmp_path, "test")


def test_jsonl_metric_option_and_bad_lines(tmp_path):
    task = task_lib.load_task("jsonl")
    case = cases.build_jsonl(tmp_path)
    examples = task.examples(tmp_path, "test")
    assert task.score(examples, {"q-a": "Cat", "2": "BOB"}, task.resolve_options({"to_lower": True})) == \
        {"exact_match": 1.0}
    got = task.score(examples, {"q-a": "cat", "2": "bob"}, task.resolve_options({"metric": "anls"}))
    assert got == {"anls": 1.0}
    with pytest.raises(TaskError, match="option metric='bleu'"):
        task.examples(tmp_path, "test", {"metric": "bleu"})
    (tmp_path / "test.jsonl").write_text('{"image": "a.png", "prefix": "p", "suffix": "s"}\n{oops\n')
    with pytest.raises(TaskError, match=r"test.jsonl: line 2 is not valid JSON"):
        task.examples(tmp_path, "test")
    (tmp_path / "test.jsonl").write_text('{"image": "a.png", "prefix": "p", "id": 1}\n{"image": "b.png", "prefix": "p", "id": 1}\n')
    with pytest.raises(TaskError, match="line 2 repeats id '1'"):
        task.examples(tmp_path, "test")


def test_textcaps_targets_are_lower_cased(tmp_path):
    task = task_lib.load_task("textcaps")
    cases.build_textcaps(tmp_path)
    ex = task.examples(tmp_path, "val")[0]
    assert ex.train_targets == ("a sign saying stop.", "a stop sign")


def test_postprocess_lower_cases_where_big_vision_does():
    lowered = {n for n in ALL if task_lib.load_task(n).postprocess("  Yes ") == "yes"}
    assert lowered == {"docvqa", "infovqa", "stvqa", "ocrvqa", "chartqa", "rsvqa_lr", "rsvqa_hr"}
    assert task_lib.load_task("vqav2").postprocess(" Yes\n") == "Yes"


def test_user_folder_replaces_a_builtin(tmp_path):
    src = Path(task_lib.BUILTIN_TASKS_DIR / "jsonl.py").read_text()
    (tmp_path / "jsonl.py").write_text(src.replace('paper=""', 'paper="mine"'))
    assert task_lib.load_task("jsonl", [tmp_path]).paper == "mine"
