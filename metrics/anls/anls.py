"""ANLS (DocVQA / InfographicVQA / ST-VQA), matching the RRC scorer or big_vision."""

import datasets
import evaluate

from pgbench.scoring import anls, evaluate_base

_DESCRIPTION = """Average Normalized Levenshtein Similarity (Biten et al. 2019, Eq. 1).
mode: "rrc" (default, the official leaderboard scorer) or "big_vision" (see README.md)."""
_CITATION = """@inproceedings{biten2019scene, title={Scene Text Visual Question Answering},
author={Biten, Ali Furkan and Tito, Ruben and Mafla, Andres and Gomez, Lluis and Rusinol, Marcal
and Valveny, Ernest and Jawahar, C.V. and Karatzas, Dimosthenis}, booktitle={ICCV}, year={2019}}"""
_KWARGS = """predictions: list[str]; references: list[list[str]]; threshold: float = 0.5;
mode: "rrc" | "big_vision". Returns {"anls": float}."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Anls(evaluate_base.DirectMetric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION,
                                   inputs_description=_KWARGS, features=evaluate_base.TEXT_FEATURES)

    def _compute(self, predictions, references, threshold=0.5, mode="rrc"):
        return anls.anls(predictions, references, threshold=threshold, mode=mode)
