"""COCO box AP (AP@[.50:.95], AP50, AP75) via pycocotools' COCOeval."""

import datasets
import evaluate

from pgbench.scoring import detection, evaluate_base

_DESCRIPTION = """Per-image lists of {"box": [x0, y0, x1, y1], "label": str, "score"?: float}
scored by COCOeval (bbox). Predictions without a score get score 1.0."""
_CITATION = """@inproceedings{lin2014microsoft, title={Microsoft {COCO}: Common Objects in Context},
author={Lin, Tsung-Yi and others}, booktitle={ECCV}, year={2014}}"""
_KWARGS = """predictions, references: list (one per image) of lists of box dicts.
Returns {"map", "map_50", "map_75"}. Only compute(predictions=..., references=...) is supported."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class DetectionMap(evaluate_base.DirectMetric):
    supports_add_batch = False

    def _info(self):
        # Declared for evaluate's bookkeeping only: boxes never go through Arrow.
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return detection.detection_map(predictions, references)
