"""Exact-match style scorers from big_vision's PaliGemma transfer evaluators.

  exact_match       `transfers/vqa.py` "acc_any" (OCR-VQA, ...) and `transfers/tallyqa.py`:
                    1 if the prediction equals any ground truth, else 0.
  relaxed_accuracy  `transfers/chartqa.py` (Methani et al. 2020): numeric answers within a
                    relative tolerance of the target, otherwise exact string equality.
  rsvqa_accuracy    `transfers/rsvqa.py`: any-match accuracy overall, per question type, their
                    average, and the paper's non-numeric average.

`to_lower` is big_vision's evaluator option (applied to prediction and ground truths); the
PaliGemma transfer configs set it for ChartQA, OCR-VQA, DocVQA and RSVQA. `number_words`
is TallyQA's mapping of "none"/"zero".."twenty" to numerals (whole answer, any case).
"""

from __future__ import annotations

import math

from pgbench.scoring import _inputs

TALLY_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
TALLY_NUMBER_WORDS["none"] = "0"

RSVQA_TYPES = ("comp", "count", "presence", "rural_urban", "area")
RSVQA_NON_NUMERIC = {"lr": ("comp", "presence", "rural_urban"), "hr": ("comp", "presence")}


def _validated(predictions, references, **others):
    predictions = _inputs.check_strings("predictions", predictions)
    references = _inputs.check_string_lists("references", references)
    _inputs.check_same_length(predictions=predictions, references=references, **others)
    return predictions, references


def _lower(predictions, references):
    return [p.lower() for p in predictions], [[r.lower() for r in refs] for refs in references]


def exact_match(predictions, references, to_lower: bool = False, number_words: bool = False) -> dict[str, float]:
    """Fraction of predictions equal to one of their ground truths -> {"exact_match"}."""
    predictions, references = _validated(predictions, references)
    if to_lower:
        predictions, references = _lower(predictions, references)
    if number_words:
        word = lambda s: TALLY_NUMBER_WORDS.get(s.lower(), s)  # noqa: E731
        predictions = [word(p) for p in predictions]
        references = [[word(r) for r in refs] for refs in references]
    hits = [float(p in refs) for p, refs in zip(predictions, references)]
    return {"exact_match": sum(hits) / len(hits)}


def _to_float(text: str) -> float | None:
    # Python's float() decides what is a number, as in big_vision (so "1,000" is not one,
    # " 12 " and "1e3" are); a trailing "%" divides by 100.
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_match(target: str, prediction: str, tolerance: float = 0.05) -> bool:
    """big_vision's `_relaxed_match`: a zero (or unparsable) target needs string equality."""
    p, t = _to_float(prediction), _to_float(target)
    if p is not None and t:
        return abs(p - t) / abs(t) <= tolerance
    return prediction == target


def relaxed_accuracy(predictions, references, tolerance: float = 0.05, to_lower: bool = False) -> dict[str, float]:
    """Fraction of predictions relaxed-matching any ground truth -> {"relaxed_accuracy"}.

    ChartQA has one ground truth per question; with several, any match counts.
    """
    predictions, references = _validated(predictions, references)
    tolerance = _inputs.check_number("tolerance", tolerance, 0.0, math.inf)
    if to_lower:
        predictions, references = _lower(predictions, references)
    hits = [float(any(relaxed_match(t, p, tolerance) for t in refs)) for p, refs in zip(predictions, references)]
    return {"relaxed_accuracy": sum(hits) / len(hits)}


def rsvqa_accuracy(predictions, references, question_types, variant: str = "lr",
                   to_lower: bool = False) -> dict[str, float]:
    """RSVQA accuracies (any-match per question).

    accuracy_overall: mean over questions; accuracy/<type>: mean within a type (types present
    only); accuracy_average: mean of the per-type accuracies; accuracy_nonnumeric: mean over
    {comp, presence, rural_urban} (LR) or {comp, presence} (HR) of the types present (NaN if
    none is). big_vision logs these as acc_any, acc_<type>, acc_avg and acc_avg_nonum.
    """
    question_types = _inputs.check_strings("question_types", question_types)
    predictions, references = _validated(predictions, references, question_types=question_types)
    variant = _inputs.check_choice("variant", variant, tuple(RSVQA_NON_NUMERIC))
    for i, t in enumerate(question_types):
        if t not in RSVQA_TYPES:
            raise _inputs.InputError(
                f"question_types[{i}]: expected one of {', '.join(RSVQA_TYPES)}, found {t!r}")
    if to_lower:
        predictions, references = _lower(predictions, references)
    hits = [float(p in refs) for p, refs in zip(predictions, references)]
    by_type: dict[str, list[float]] = {}
    for t, h in zip(question_types, hits):
        by_type.setdefault(t, []).append(h)
    per_type = {t: sum(by_type[t]) / len(by_type[t]) for t in RSVQA_TYPES if t in by_type}
    non_numeric = [per_type[t] for t in RSVQA_NON_NUMERIC[variant] if t in per_type]
    out = {
        "accuracy_overall": sum(hits) / len(hits),
        "accuracy_average": sum(per_type.values()) / len(per_type),
        "accuracy_nonnumeric": sum(non_numeric) / len(non_numeric) if non_numeric else math.nan,
    }
    out.update({f"accuracy/{t}": v for t, v in per_type.items()})
    return out
