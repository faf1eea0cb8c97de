"""COCO caption metrics (CIDEr-D, BLEU-1..4, ROUGE-L, METEOR) via pycocoevalcap."""

import datasets
import evaluate

from pgbench.scoring import caption, evaluate_base

_DESCRIPTION = """PTB-tokenised (Java) captions scored by pycocoevalcap's Bleu(4), Meteor, Rouge
and Cider, one prediction per example, examples identified by position. Needs `java`."""
_CITATION = """@article{chen2015microsoft, title={Microsoft {COCO} Captions: Data Collection and
Evaluation Server}, author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna
and Gupta, Saurabh and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence}, journal={arXiv:1504.00325}, year={2015}}"""
_KWARGS = """predictions: list[str]; references: list[list[str]].
Returns {"cider", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor"}."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class CocoCaption(evaluate_base.DirectMetric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION,
                                   inputs_description=_KWARGS, features=evaluate_base.TEXT_FEATURES)

    def _compute(self, predictions, references):
        return caption.coco_caption(predictions, references)
