"""anls against the RRC scorer rules and big_vision's anls_metric.

Sources: the DocVQA / InfographicVQA Robust Reading Competition evaluation script (the
`evaluate_method` of the RRC "script.py" used by the leaderboards: strip + lower + collapse
whitespace, length of the raw strings, `1 - min(NL) < threshold -> 0`), and
big_vision/evaluators/proj/paligemma/transfers/vqa.py `anls_metric`
(NL = d / max(len), `1 - NL if NL < theta else 0`, empty target -> prediction == "").
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgbench.errors import InputError
from pgbench.scoring import anls


def _edit_distance_recursive(a: str, b: str) -> int:
    """Textbook recursive definition, an independent check of the DP."""
    @functools.lru_cache(maxsize=None)
    def d(i, j):
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
    return d(len(a), len(b))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdé ", max_size=9), st.text(alphabet="abcdé ", max_size=9))
def test_levenshtein(a, b):
    assert anls.levenshtein(a, b) == _edit_distance_recursive(a, b)


def _one(pred, gts, mode="rrc", threshold=0.5):
    return anls.anls([pred], [gts], threshold=threshold, mode=mode)["anls"]


@pytest.mark.parametrize("pred, gts, expected", [
    ("Denver Broncos", ["Denver Broncos", "x"], 1.0),
    ("denver broncos", ["Denver Broncos"], 1.0),          # lower-cased
    ("  denver   broncos ", ["Denver Broncos"], 1.0 - 0 / 20),  # whitespace collapsed; NL 0
    ("12/15/89", ["12/15/88"], 1 - 1 / 8),
    ("abcd", ["abef"], 0.5),                              # NL == 0.5 is kept (score >= 0.5)
    ("abcde", ["abxyz"], 0.0),                            # NL 0.6 -> 0
    ("", [""], 1.0),                                      # 0/0 counts as NL 0
    ("abc", [""], 0.0),
    (" a", [""], 0.5),                                    # length uses the raw string (2)
    ("ß", ["ss"], 0.0),                                   # len("ß".upper()) == 2: NL = 2/2
    ("x", ["abc", "x"], 1.0),                             # best ground truth wins
])
def test_rrc_worked_examples(pred, gts, expected):
    assert _one(pred, gts) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("pred, gts, expected", [
    ("denver broncos", ["Denver Broncos"], 1 - 2 / 14),   # no lower-casing
    ("abcd", ["abef"], 0.0),                              # NL == 0.5 is *not* < 0.5
    ("", [""], 1.0),
    ("abc", [""], 0.0),
    ("", ["", "abc"], 1.0),
    ("12/15/89", ["12/15/88"], 1 - 1 / 8),
])
def test_big_vision_worked_examples(pred, gts, expected):
    assert _one(pred, gts, "big_vision") == pytest.approx(expected, abs=1e-15)


def test_mean_and_threshold():
    out = anls.anls(["abc", "xyz"], [["abc"], ["xya"]], threshold=0.3)
    assert out["anls"] == pytest.approx((1.0 + 2 / 3) / 2)
    out = anls.anls(["abc", "xyz"], [["abc"], ["xya"]], threshold=0.9)
    assert out["anls"] == pytest.approx(0.5)


def test_evaluate_module(load_metric):
    out = load_metric("anls").compute(predictions=["Dear dr. Lobo", "12/15/89"],
                                      references=[["Dear Dr. Lobo", "Dr. Lobo"], ["12/15/88"]])
    assert out["anls"] == pytest.approx((1.0 + 7 / 8) / 2)
    out = load_metric("anls").compute(predictions=["Dear dr. Lobo"], references=[["Dear Dr. Lobo"]],
                                      mode="big_vision")
    assert out["anls"] == pytest.approx(1 - 1 / 13)


@pytest.mark.parametrize("kwargs, match", [
    (dict(predictions=["a", "b"], references=[["a"]]), "different lengths"),
    (dict(predictions=[], references=[]), "empty"),
    (dict(predictions=[None], references=[["a"]]), "expected a str"),
    (dict(predictions=["a"], references=[["a"]], threshold=2), "threshold"),
    (dict(predictions=["a"], references=[["a"]], mode="docvqa"), "mode"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        anls.anls(**kwargs)
