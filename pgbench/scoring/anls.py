"""ANLS (DocVQA, InfographicVQA, ST-VQA): Biten et al. 2019, Eq. 1.

Two behaviours:
  "rrc"        the official Robust Reading Competition scorer used by the DocVQA /
               InfographicVQA / ST-VQA leaderboards (and so for the test-set numbers the
               PaliGemma papers report): both strings are stripped, lower-cased and their
               whitespace runs collapsed before the edit distance; the distance is divided by
               the longer of the *raw* strings (the RRC script measures `len(s.upper())` of the
               unprocessed answers); the question score is 1 - min NL, set to 0 when it is
               below the threshold (so NL == 1 - threshold still counts); 0/0 is NL 0.
  "big_vision" big_vision's `anls_metric` (validation numbers during fine-tuning): raw strings,
               NL = d / max(|g|, |p|), s = 1 - NL if NL < threshold else 0, an empty ground
               truth scores 1 iff the prediction is empty; max over ground truths.
"""

from __future__ import annotations

from pgbench.scoring import _inputs

MODES = ("rrc", "big_vision")


def levenshtein(a: str, b: str) -> int:
    """Unit-cost insert/delete/substitute distance between two strings (code points)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        append = current.append
        for j, cb in enumerate(b, 1):
            append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _rrc_normalize(s: str) -> str:
    return " ".join(s.strip().lower().split())


def question_score_rrc(prediction: str, targets: list[str], threshold: float = 0.5) -> float:
    det = _rrc_normalize(prediction)
    det_len = len(prediction.upper())
    values = []
    for target in targets:
        length = max(len(target.upper()), det_len)
        values.append(0.0 if length == 0 else levenshtein(_rrc_normalize(target), det) / length)
    score = 1 - min(values)
    return 0.0 if score < threshold else score


def question_score_big_vision(prediction: str, targets: list[str], threshold: float = 0.5) -> float:
    best = 0.0
    for target in targets:
        if target:
            nl = levenshtein(target, prediction) / max(len(target), len(prediction))
            s = 1 - nl if nl < threshold else 0.0
        else:
            s = float(prediction == "")
        best = max(best, s)
    return best


def anls(predictions, references, threshold: float = 0.5, mode: str = "rrc") -> dict[str, float]:
    """Mean over questions of the best ANLS similarity to any ground truth -> {"anls"}."""
    predictions = _inputs.check_strings("predictions", predictions)
    references = _inputs.check_string_lists("references", references)
    threshold = _inputs.check_number("threshold", threshold, 0.0, 1.0)
    mode = _inputs.check_choice("mode", mode, MODES)
    _inputs.check_same_length(predictions=predictions, references=references)
    score = question_score_rrc if mode == "rrc" else question_score_big_vision
    scores = [score(p, refs, threshold) for p, refs in zip(predictions, references)]
    return {"anls": sum(scores) / len(scores)}
