"""vqa_accuracy against the official VQA evaluation rules.

Source of every rule: GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py
(`VQAEval.evaluate`, `processPunctuation`, `processDigitArticle`), a Python 2 script; and
big_vision/evaluators/proj/paligemma/transfers/vqav2.py and vqa.py for the other modes.
The worked examples below were derived by hand from those rules; `_slow_reference` restates
the official algorithm step by step (one regex search per punctuation mark, list-based
leave-one-out) and is compared with the fast implementation on generated answer sets. That
restatement shares the contraction table and the Python 2 string methods (`py2_text`) with the
implementation, so it checks the fast path's algebra only; the independent check against the
official script itself is its golden scores (test_vqa_official_script.py).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgbench.errors import InputError
from pgbench.scoring import py2_text, vqa

TEN = 10


def _restated_normalize(text: str, *, py2: bool) -> str:
    """Restatement of processPunctuation + processDigitArticle.

    py2=True: the script as run by Python 2 (patterns compiled without re.UNICODE, so `\\d` is
    ASCII; `re.UNICODE` (== 32) passed positionally as `count`). py2=False: big_vision's port
    (Unicode `\\d`, no count limit).
    """
    flags = re.ASCII if py2 else 0
    punct = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
    out = text
    for p in punct:
        has_digit_comma = re.search(r"(\d)(\,)(\d)", text, flags) is not None
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    period = re.compile(r"(?!<=\d)(\.)(?!\d)", flags)
    out = period.sub("", out, 32) if py2 else period.sub("", out)
    numbers = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
               "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
    words = []
    for w in (py2_text.split(py2_text.lower(out)) if py2 else out.lower().split()):
        w = numbers.get(w, w)
        if w not in ("a", "an", "the"):
            words.append(w)
    return " ".join(vqa.CONTRACTIONS.get(w, w) for w in words)


def _slow_reference(pred: str, answers: list[str], *, py2: bool = True) -> float:
    strip = py2_text.strip if py2 else str.strip
    clean = lambda s: strip(s.replace("\n", " ").replace("\t", " "))  # noqa: E731
    gts = [{"answer": clean(a), "answer_id": i} for i, a in enumerate(answers)]
    pred = clean(pred)
    if len({g["answer"] for g in gts}) > 1:
        for g in gts:
            g["answer"] = _restated_normalize(g["answer"], py2=py2)
        pred = _restated_normalize(pred, py2=py2)
    accs = []
    for g in gts:
        others = [o for o in gts if o != g]
        matching = [o for o in others if o["answer"] == pred]
        accs.append(min(1, float(len(matching)) / 3))
    return float(sum(accs)) / len(accs)


# --- normalisation: worked examples (vqaEval.py processPunctuation / processDigitArticle) ---

@pytest.mark.parametrize("raw, expected", [
    ("Two", "2"),                      # number words -> digits, after lower-casing
    ("none", "0"),
    ("The dog", "dog"),                # articles dropped
    ("a", ""),                         # ... even when nothing is left
    ("dont", "don't"),                 # contraction table
    ("Im", "im"),                      # capitalised table keys never match after lower()
    ("somebody'd", "somebodyd"),       # the table's backwards entry
    ("1,000", "1000"),                 # digit-comma-digit: every punctuation mark deleted
    ("red (1,2)", "red 12"),           # ... including ones far from the number
    ("red,blue", "red blue"),          # no digit-comma-digit, no adjacent space: mark -> space
    ("red, blue", "red blue"),         # ", " present: the comma is deleted
    ("x - y", "x y"),
    ("hello-world", "hello world"),
    ("yes!", "yes"),
    ("3.5", "3.5"),                    # a period before a digit stays
    ("etc.", "etc"),
    ("mr.smith", "mrsmith"),           # a period not before a digit is deleted (no space)
    ("1.5.", "1.5"),
    ("it's", "it's"),                  # apostrophes are not in the punctuation list
    ("Café", "café"),
    ("x" + "." * 40, "x" + "." * 8),   # re.UNICODE == 32 used as `count`: only 32 periods go
    ("٣,٤", "٣ ٤"),                    # Python 2 `\d` is ASCII: no digit-comma-digit here
    ("ΟΔΟΣ", "οδοσ"),                  # Python 2 lower(): no final-sigma rule ...
    ("İ", "i"),                        # ... simple case mapping (Python 3: "i" + U+0307) ...
    ("ᏣᏫᏗ", "ᏣᏫᏗ"),                    # ... and Unicode 5.2 tables (Cherokee lower case came in 8.0)
    ("x\u180ey", "x y"),               # U+180E is whitespace to Python 2 (not since Unicode 6.3)
])
def test_official_normalization_worked_examples(raw, expected):
    assert vqa.normalize_official(raw) == expected
    assert _restated_normalize(raw, py2=True) == expected


@pytest.mark.parametrize("raw, expected", [
    ("x" + "." * 40, "x"),             # big_vision passes re.UNICODE as flags: all periods go
    ("٣,٤", "٣٤"),                     # Python 3 `\d` matches Arabic-Indic digits
    ("1,000", "1000"),
    ("Two dogs", "2 dogs"),
])
def test_big_vision_normalization_worked_examples(raw, expected):
    assert vqa.normalize_big_vision(raw) == expected


# --- scoring: worked examples (vqaEval.py VQAEval.evaluate) ---

def _score(pred, answers, mode="official"):
    return vqa.vqa_accuracy([pred], [answers], mode=mode)["accuracy"]


@pytest.mark.parametrize("n_match, expected", [
    (0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0),
])
def test_leave_one_out(n_match, expected):
    # 10 answers, n_match equal to the prediction. Answer i sees n_match - [i matches] others.
    answers = ["cat"] * n_match + ["dog"] * (TEN - n_match)
    if n_match == TEN:
        answers[-1] = "cat "  # stays identical after stripping: all-identical branch
    assert _score("cat", answers) == pytest.approx(expected, abs=1e-15)


def test_identical_answers_are_not_normalized():
    # All ten answers identical (after stripping): no lower-casing, no number mapping.
    assert _score("Two", ["Two"] * TEN) == 1.0
    assert _score("two", ["Two"] * TEN) == 0.0
    assert _score("2", ["two"] * TEN) == 0.0
    # One dissenting answer switches normalisation on for everyone.
    assert _score("2", ["two"] * 9 + ["three"]) == 1.0


def test_whitespace_always_cleaned():
    assert _score(" yes\n", ["yes\t"] * TEN) == 1.0


def test_empty_prediction():
    assert _score("", ["yes"] * 5 + ["no"] * 5) == 0.0
    # "the" normalises to "" and so matches the empty prediction when answers disagree.
    assert _score("", ["the"] * 3 + ["a"] * 2 + ["no"] * 5) == 1.0


def test_simple_mode_is_big_vision_vqa_py():
    # transfers/vqa.py: min(1, matches / 3), raw strings, no leave-one-out, no stripping.
    answers = ["cat"] * 2 + ["dog"] * 8
    assert _score("cat", answers, "simple") == pytest.approx(2 / 3)
    assert _score("Cat", ["cat"] * 10, "simple") == 0.0
    assert _score("cat ", ["cat"] * 10, "simple") == 0.0


def test_answer_types_and_mean():
    out = vqa.vqa_accuracy(["yes", "2", "red"], [["yes"] * 10, ["two"] * 2 + ["3"] * 8, ["blue"] * 10],
                           answer_types=["yes/no", "number", "other"])
    assert out["accuracy"] == pytest.approx((1.0 + 0.6 + 0.0) / 3)
    assert out["accuracy/yes/no"] == 1.0
    assert out["accuracy/number"] == pytest.approx(0.6)
    assert out["accuracy/other"] == 0.0


# --- the fast implementation equals the restated official algorithm ---

_NASTY = ["two", "2", "Two", "1,000", "1000", "1 000", "the dog", "dog", "a dog", "dog.", "dogs",
          "dont", "don't", "yes", "Yes", "yes!", "no", "none", "0", "", "  ", "3.5", "3.50", "etc.",
          "café", "CAFÉ", "٣,٤", "red-blue", "red blue", "(red)", "x - y", "x.y.z", "..", "an", "?",
          "ΟΔΟΣ", "İ", "Ꭰ", "\u180e"]
_pieces = st.sampled_from(_NASTY + list(";/[]\"{}()=+\\_-><@`,?!.\n\t 0123456789"))
_answer = st.one_of(st.sampled_from(_NASTY),
                    st.lists(_pieces, max_size=6).map("".join),
                    st.text(max_size=8))


@settings(max_examples=400, deadline=None)
@given(pred=_answer, answers=st.lists(_answer, min_size=TEN, max_size=TEN),
       agree=st.integers(0, TEN))
def test_matches_restated_official(pred, answers, agree):
    answers = [pred] * agree + answers[agree:]  # make matches likely
    got = vqa.question_scores([pred], [answers], "official")[0]
    assert got == _slow_reference(pred, answers, py2=True)  # bit-exact
    got_bv = vqa.question_scores([pred], [answers], "big_vision")[0]
    assert got_bv == _slow_reference(pred, answers, py2=False)


def test_evaluate_module_offline(load_metric):
    metric = load_metric("vqa_accuracy")
    out = metric.compute(predictions=["2", "yes"], references=[["two"] * 3 + ["3"] * 7, ["yes"] * 10],
                         answer_types=["number", "yes/no"])
    assert out == pytest.approx({"accuracy": 0.95, "accuracy/number": 0.9, "accuracy/yes/no": 1.0})
    # The add_batch path goes through evaluate's Arrow cache and must agree.
    metric.add_batch(predictions=["2", "yes"], references=[["two"] * 3 + ["3"] * 7, ["yes"] * 10])
    assert metric.compute() == pytest.approx({"accuracy": 0.95})


@pytest.mark.parametrize("kwargs, match", [
    (dict(predictions=["a"], references=[["a"] * 10, ["b"] * 10]), "different lengths"),
    (dict(predictions=[], references=[]), "empty"),
    (dict(predictions="yes", references=[["yes"] * 10]), "expected a list"),
    (dict(predictions=[1], references=[["yes"] * 10]), r"predictions\[0\]: expected a str"),
    (dict(predictions=["yes"], references=["yes"]), r"references\[0\]: expected a list of str"),
    (dict(predictions=["yes"], references=[[]]), "at least one ground truth"),
    (dict(predictions=["yes"], references=[["yes"]], answer_types=["a", "b"]), "different lengths"),
    (dict(predictions=["yes"], references=[["yes"]], mode="vqa"), "mode"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        vqa.vqa_accuracy(**kwargs)
