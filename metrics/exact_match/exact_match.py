"""Exact match against any ground truth (OCR-VQA, TallyQA), as big_vision's evaluators."""

import datasets
import evaluate

from pgbench.scoring import evaluate_base, short_answer

_DESCRIPTION = """1 if the prediction equals one of its ground truths, else 0; mean over questions.
Options: to_lower (OCR-VQA config), number_words (TallyQA: "two" -> "2")."""
_CITATION = """@inproceedings{mishra2019ocrvqa, title={{OCR-VQA}: Visual Question Answering by Reading
Text in Images}, author={Mishra, Anand and Shekhar, Shashank and Singh, Ajeet Kumar and Chakraborty,
Anirban}, booktitle={ICDAR}, year={2019}}"""
_KWARGS = """predictions: list[str]; references: list[list[str]]; to_lower: bool = False;
number_words: bool = False. Returns {"exact_match"}."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ExactMatch(evaluate_base.DirectMetric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION,
                                   inputs_description=_KWARGS, features=evaluate_base.TEXT_FEATURES)

    def _compute(self, predictions, references, to_lower=False, number_words=False):
        return short_answer.exact_match(predictions, references, to_lower=to_lower, number_words=number_words)
