"""ChartQA relaxed accuracy, as big_vision's chartqa evaluator."""

import datasets
import evaluate

from pgbench.scoring import evaluate_base, short_answer

_DESCRIPTION = """Correct when prediction and target parse as numbers within `tolerance` relative
error of a non-zero target (a trailing % divides by 100), else on exact string equality."""
_CITATION = """@inproceedings{masry2022chartqa, title={{ChartQA}: A Benchmark for Question Answering
about Charts with Visual and Logical Reasoning}, author={Masry, Ahmed and Long, Do Xuan and Tan,
Jia Qing and Joty, Shafiq and Hoque, Enamul}, booktitle={Findings of ACL}, year={2022}}"""
_KWARGS = """predictions: list[str]; references: list[list[str]]; tolerance: float = 0.05;
to_lower: bool = False. Returns {"relaxed_accuracy"}."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RelaxedAccuracy(evaluate_base.DirectMetric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION,
                                   inputs_description=_KWARGS, features=evaluate_base.TEXT_FEATURES)

    def _compute(self, predictions, references, tolerance=0.05, to_lower=False):
        return short_answer.relaxed_accuracy(predictions, references, tolerance=tolerance, to_lower=to_lower)
