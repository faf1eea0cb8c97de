"""RefCOCO segmentation mIoU / cIoU, as big_vision's segmentation evaluator."""

import datasets
import evaluate

from pgbench.scoring import evaluate_base, mask_iou

_DESCRIPTION = """Per-example mask IoU averaged (mIoU) and cumulative IoU (cIoU) over binary
masks at the original image resolution. An empty prediction scores IoU 0."""
_CITATION = """@article{beyer2024paligemma, title={{PaliGemma}: A versatile 3B {VLM} for transfer},
author={Beyer, Lucas and others}, journal={arXiv:2407.07726}, year={2024}}"""
_KWARGS = """predictions: list of H x W masks (0/1 or bool); references: same shapes.
Returns {"miou", "ciou"}. Only compute(predictions=..., references=...) is supported."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RefcocoMiou(evaluate_base.DirectMetric):
    supports_add_batch = False

    def _info(self):
        # Declared for evaluate's bookkeeping only: masks never go through Arrow.
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
                                   features=datasets.Features({
                                       "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("bool"))),
                                       "references": datasets.Sequence(datasets.Sequence(datasets.Value("bool")))}))

    def _compute(self, predictions, references):
        return mask_iou.refcoco_miou(predictions, references)
