"""COCO box AP through pycocotools' COCOeval (AP@[.50:.95], AP50, AP75).

Images are identified by position; labels become COCO categories (every label seen in the
predictions or the references). A prediction without "score" is given score 1.0. Boxes are
[x0, y0, x1, y1] in pixels and are handed to COCO as [x0, y0, x1 - x0, y1 - y0]. COCOeval's
defaults apply: at most 100 detections per image, all areas.
"""

from __future__ import annotations

import contextlib
import io
import math

from pgbench.scoring import _inputs


def _boxes(name: str, per_image, *, with_score: bool) -> list[list[dict]]:
    images = _inputs.as_list(name, per_image)
    out = []
    for i, objs in enumerate(images):
        if isinstance(objs, (str, dict)) or not isinstance(objs, (list, tuple)):
            raise _inputs.InputError(f"{name}[{i}]: expected a list of boxes for image {i}, found {type(objs).__name__}")
        parsed = []
        for j, obj in enumerate(objs):
            where = f"{name}[{i}][{j}]"
            if not isinstance(obj, dict) or "box" not in obj or "label" not in obj:
                raise _inputs.InputError(f"{where}: expected a dict with 'box' and 'label', found {obj!r:.80}")
            box = obj["box"]
            if (isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
                raise _inputs.InputError(f"{where}['box']: expected 4 finite numbers [x0, y0, x1, y1], found {box!r:.80}")
            x0, y0, x1, y1 = map(float, box)
            if x1 < x0 or y1 < y0:
                raise _inputs.InputError(f"{where}['box']: expected x0 <= x1 and y0 <= y1, found {list(box)}")
            if not isinstance(obj["label"], str):
                raise _inputs.InputError(f"{where}['label']: expected a str, found {obj['label']!r:.60}")
            entry = {"bbox": [x0, y0, x1 - x0, y1 - y0], "label": obj["label"]}
            if with_score:
                score = obj.get("score", 1.0)
                if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                    raise _inputs.InputError(f"{where}['score']: expected a finite number, found {score!r:.60}")
                entry["score"] = float(score)
            parsed.append(entry)
        out.append(parsed)
    return out


def detection_map(predictions, references) -> dict[str, float]:
    """{"map", "map_50", "map_75"}: COCOeval's stats[0], stats[1], stats[2]."""
    preds = _boxes("predictions", predictions, with_score=True)
    refs = _boxes("references", references, with_score=False)
    _inputs.check_same_length(predictions=preds, references=refs)
    if not any(refs):
        raise _inputs.InputError("references: no ground-truth box in any image; COCO AP is undefined")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = sorted({o["label"] for objs in preds + refs for o in objs})
    cat = {name: k + 1 for k, name in enumerate(labels)}
    images = [{"id": i + 1} for i in range(len(refs))]
    anns = []
    for i, objs in enumerate(refs):
        for o in objs:
            w, h = o["bbox"][2], o["bbox"][3]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat[o["label"]],
                         "bbox": o["bbox"], "area": w * h, "iscrowd": 0})
    dets = [{"image_id": i + 1, "category_id": cat[o["label"]], "bbox": o["bbox"], "score": o["score"]}
            for i, objs in enumerate(preds) for o in objs]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates every step
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": k, "name": n} for n, k in cat.items()]}
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:  # loadRes cannot take an empty list
            dt = COCO()
            dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50, ap75 = (float(s) for s in ev.stats[:3])
    # COCOeval reports -1 when no category has a ground truth at some IoU; with at least one
    # ground-truth box that cannot happen, so values are in [0, 1].
    return {"map": ap, "map_50": ap50, "map_75": ap75}
