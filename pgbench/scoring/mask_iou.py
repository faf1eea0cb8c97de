"""RefCOCO segmentation scores (big_vision `transfers/segmentation.py`).

Per example IoU = |P & G| / |P | G| on full-resolution binary masks; mIoU is their mean (the
PaliGemma papers' "MIoU"), cIoU = sum |P & G| / sum |P | G| over the split.

0/0: big_vision scores an unparsable / empty-box prediction 0 whatever the ground truth, and
every RefCOCO ground truth is non-empty, so we define an empty prediction on an empty
ground truth as IoU 0 (big_vision would produce NaN only for a *decoded* all-background
mask on an empty ground truth, which the datasets never contain).
"""

from __future__ import annotations

import numpy as np

from pgbench.scoring import _inputs


def _mask(name: str, value) -> np.ndarray:
    try:
        m = np.asarray(value)
    except Exception as e:  # ragged nested lists and the like
        raise _inputs.InputError(f"{name}: expected a 2-D array of 0/1 or bool, could not read it ({e})") from None
    if m.ndim != 2:
        raise _inputs.InputError(f"{name}: expected a 2-D mask (H, W), found shape {m.shape}")
    if m.dtype == bool:
        return m
    if m.dtype.kind not in "iuf" or not ((m == 0) | (m == 1)).all():
        raise _inputs.InputError(f"{name}: expected values 0/1 or bool, found dtype {m.dtype} with other values")
    return m != 0


def intersections_unions(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    """int64[N] intersection and union pixel counts after validating shapes and values."""
    predictions = _inputs.as_list("predictions", predictions)
    references = _inputs.as_list("references", references)
    n = _inputs.check_same_length(predictions=predictions, references=references)
    inter = np.zeros(n, np.int64)
    union = np.zeros(n, np.int64)
    for i, (p, g) in enumerate(zip(predictions, references)):
        p = _mask(f"predictions[{i}]", p)
        g = _mask(f"references[{i}]", g)
        if p.shape != g.shape:
            raise _inputs.InputError(
                f"predictions[{i}]: mask shape {p.shape} differs from references[{i}] shape {g.shape}; "
                "masks must be at the original image resolution")
        inter[i] = np.count_nonzero(p & g)
        union[i] = np.count_nonzero(p | g)
    return inter, union


def iou(pred, gt) -> float:
    """|P & G| / |P | G| of one prediction and its ground truth (2-D 0/1 or bool masks of
    one shape); 0.0 when both are empty (see the module docstring)."""
    inter, union = intersections_unions([pred], [gt])
    return _ratio(int(inter[0]), int(union[0]))


def _ratio(inter: int, union: int) -> float:
    return float(inter) / float(union) if union else 0.0


def refcoco_miou(predictions, references) -> dict[str, float]:
    """{"miou", "ciou"} over binary masks; see the module docstring for 0/0."""
    return scores_from_counts(*intersections_unions(predictions, references))


def scores_from_counts(inter: np.ndarray, union: np.ndarray) -> dict[str, float]:
    """{"miou", "ciou"} from per-example pixel counts (lets callers stream masks in chunks)."""
    inter, union = np.asarray(inter, np.int64), np.asarray(union, np.int64)
    ious = [_ratio(i, u) for i, u in zip(inter.tolist(), union.tolist())]
    total_union = int(union.sum())
    return {"miou": sum(ious) / len(ious),
            "ciou": float(inter.sum()) / total_union if total_union else 0.0}
