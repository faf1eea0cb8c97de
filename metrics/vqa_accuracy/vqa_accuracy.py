"""VQA accuracy (VQAv2 / TextVQA / VizWiz), matching GT-Vision-Lab's vqaEval.py."""

import datasets
import evaluate

from pgbench.scoring import evaluate_base, vqa

_DESCRIPTION = """Leave-one-out VQA accuracy over the human answers with the official answer
normalisation (see README.md). mode: "official" (default), "big_vision" or "simple"."""
_CITATION = """@inproceedings{goyal2017making, title={Making the {V} in {VQA} Matter},
author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
booktitle={CVPR}, year={2017}}"""
_KWARGS = """predictions: list[str]; references: list[list[str]] (the human answers);
answer_types: optional list[str]; mode: "official" | "big_vision" | "simple".
Returns {"accuracy": float} plus "accuracy/<answer type>" when answer_types is given."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class VqaAccuracy(evaluate_base.DirectMetric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION,
                                   inputs_description=_KWARGS, features=evaluate_base.TEXT_FEATURES,
                                   reference_urls=["https://visualqa.org/evaluation.html"])

    def _compute(self, predictions, references, answer_types=None, mode="official"):
        return vqa.vqa_accuracy(predictions, references, answer_types=answer_types, mode=mode)
