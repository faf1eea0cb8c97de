"""RSVQA-LR / RSVQA-HR accuracies, as big_vision's rsvqa evaluator."""

import datasets
import evaluate

from pgbench.scoring import evaluate_base, short_answer

_DESCRIPTION = """Any-match accuracy overall, per question type, averaged over types, and the
non-numeric average ({comp, presence, rural_urban} for LR, {comp, presence} for HR)."""
_CITATION = """@article{lobry2020rsvqa, title={{RSVQA}: Visual Question Answering for Remote Sensing
Data}, author={Lobry, Sylvain and Marcos, Diego and Murray, Jesse and Tuia, Devis},
journal={IEEE TGRS}, year={2020}}"""
_KWARGS = """predictions: list[str]; references: list[list[str]]; question_types: list[str]
(comp, count, presence, rural_urban, area); variant: "lr" | "hr"; to_lower: bool = False.
Returns {"accuracy_overall", "accuracy_average", "accuracy_nonnumeric", "accuracy/<type>"}."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RsvqaAccuracy(evaluate_base.DirectMetric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION,
                                   inputs_description=_KWARGS, features=evaluate_base.TEXT_FEATURES)

    def _compute(self, predictions, references, question_types=None, variant="lr", to_lower=False):
        return short_answer.rsvqa_accuracy(predictions, references, question_types,
                                           variant=variant, to_lower=to_lower)
