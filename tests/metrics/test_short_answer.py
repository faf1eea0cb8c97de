"""exact_match, relaxed_accuracy and rsvqa_accuracy against big_vision's evaluators.

Sources: big_vision/evaluators/proj/paligemma/transfers/vqa.py ("acc_any"), tallyqa.py
(number words -> numerals), chartqa.py (`_to_float`, `_relaxed_match`) and rsvqa.py
(per-type any-match accuracy, `acc_avg`, `acc_avg_nonum` subsets).
"""

from __future__ import annotations

import math

import pytest

from pgbench.errors import InputError
from pgbench.scoring import short_answer as sa


def test_exact_match():
    assert sa.exact_match(["a", "b", "C"], [["a"], ["x", "b"], ["c"]])["exact_match"] == pytest.approx(2 / 3)
    assert sa.exact_match(["C"], [["c"]], to_lower=True)["exact_match"] == 1.0
    assert sa.exact_match(["a "], [["a"]])["exact_match"] == 0.0  # no stripping
    # TallyQA: "Two" and "2" agree; "twenty-one" is beyond the table.
    assert sa.exact_match(["Two", "twelve", "twenty-one"], [["2"], ["12"], ["21"]],
                          number_words=True)["exact_match"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("pred, target, ok", [
    ("10.4", "10", True),           # 4% off
    ("10.5", "10", True),           # exactly 5%: <= tolerance
    ("10.6", "10", False),
    ("96%", "1", True),             # percentages divide by 100: 0.96 vs 1
    ("95%", "1", False),            # |0.95 - 1| / 1 is 0.050000000000000044 in floats
    ("0.96", "96%", True),
    ("1,000", "1000", False),       # float() rejects commas -> string comparison
    ("0", "0", True),               # zero target: exact string match only
    ("0.0", "0", False),
    (" 12", "12", True),            # float() accepts surrounding spaces
    ("Yes", "yes", False),          # case kept unless to_lower
    ("nan", "nan", False),          # both parse, NaN target is truthy, NaN <= tol is False
    ("1e3", "1000", True),
])
def test_relaxed_match_worked_examples(pred, target, ok):
    assert sa.relaxed_match(target, pred) is ok
    got = sa.relaxed_accuracy([pred], [[target]])["relaxed_accuracy"]
    assert got == float(ok)


def test_relaxed_accuracy_options():
    assert sa.relaxed_accuracy(["Yes"], [["yes"]], to_lower=True)["relaxed_accuracy"] == 1.0
    assert sa.relaxed_accuracy(["11"], [["10"]], tolerance=0.1)["relaxed_accuracy"] == 1.0
    assert sa.relaxed_accuracy(["11", "x"], [["10", "11.1"], ["y"]])["relaxed_accuracy"] == 0.5


def test_rsvqa_lr_and_hr():
    preds = ["yes", "no", "12", "rural", "yes", "0m2"]
    refs = [["yes"], ["yes"], ["12"], ["urban"], ["yes"], ["0m2"]]
    types = ["presence", "presence", "count", "rural_urban", "comp", "area"]
    lr = sa.rsvqa_accuracy(preds, refs, types, variant="lr")
    assert lr["accuracy_overall"] == pytest.approx(4 / 6)
    assert lr["accuracy/presence"] == 0.5
    assert lr["accuracy/count"] == 1.0
    assert lr["accuracy/rural_urban"] == 0.0
    assert lr["accuracy/comp"] == 1.0
    assert lr["accuracy/area"] == 1.0
    assert lr["accuracy_average"] == pytest.approx((0.5 + 1 + 0 + 1 + 1) / 5)
    assert lr["accuracy_nonnumeric"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    hr = sa.rsvqa_accuracy(preds, refs, types, variant="hr")
    assert hr["accuracy_nonnumeric"] == pytest.approx((1.0 + 0.5) / 2)
    only_count = sa.rsvqa_accuracy(["1"], [["1"]], ["count"])
    assert set(only_count) == {"accuracy_overall", "accuracy_average", "accuracy_nonnumeric", "accuracy/count"}
    assert math.isnan(only_count["accuracy_nonnumeric"])


def test_evaluate_modules(load_metric):
    assert load_metric("exact_match").compute(predictions=["a"], references=[["a"]]) == {"exact_match": 1.0}
    assert load_metric("relaxed_accuracy").compute(predictions=["10.4"], references=[["10"]]) == {"relaxed_accuracy": 1.0}
    out = load_metric("rsvqa_accuracy").compute(predictions=["yes"], references=[["yes"]],
                                                question_types=["presence"], variant="hr")
    assert out["accuracy/presence"] == 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: sa.exact_match(["a"], [["a"], ["b"]]), "different lengths"),
    (lambda: sa.exact_match([], []), "empty"),
    (lambda: sa.relaxed_accuracy([3.0], [["3"]]), "expected a str"),
    (lambda: sa.relaxed_accuracy(["3"], [["3"]], tolerance=-1), "tolerance"),
    (lambda: sa.rsvqa_accuracy(["a"], [["a"]], ["colour"]), "question_types"),
    (lambda: sa.rsvqa_accuracy(["a"], [["a"]], ["comp", "comp"]), "different lengths"),
    (lambda: sa.rsvqa_accuracy(["a"], [["a"]], ["comp"], variant="mr"), "variant"),
    (lambda: sa.rsvqa_accuracy(["a"], [["a"]], None), "question_types"),
])
def test_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()
