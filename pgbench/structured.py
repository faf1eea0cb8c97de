"""Parse PaliGemma's structured outputs: ``<loc>`` boxes and ``<seg>`` mask codes.

Two levels:

* **token ids** (:func:`parse_seg_token_ids`, :func:`parse_seg_token_batch`): exactly the
  rules of big_vision's segmentation evaluator. The first 4 ids minus the loc base are the
  bins ``y1, x1, y2, x2`` and the next 16 ids minus the seg base are VQ-VAE codes; anything
  after the 20th id is ignored. A prediction is valid iff all 20 exist, every bin is in
  [0, 1023], every code in [0, 127], ``y2 > y1`` and ``x2 > x1`` (in bins). Invalid rows
  get all-zero bins and codes, as in the evaluator.
* **decoded strings** (:func:`parse_detections`, :func:`parse_segmentations`): the text form
  ``<locY1><locX1><locY2><locX2>[<seg…>×16] label ; …`` with any number of objects. A chunk
  that does not follow the pattern (or breaks the validity rules above) is skipped and
  counted in ``num_malformed``; parsing never raises on model output.

Token ids are read through a :class:`pgbench.tokenizer.LocSegIds` (``tokenizer.locseg``):
pgbench never assumes where a vocabulary keeps its loc/seg pieces.

Coordinate conventions (the same everywhere in pgbench):

* a bin ``b`` in [0, 1023] is the normalised coordinate ``b / 1023`` (bin 0 -> 0.0, bin 1023
  -> 1.0), as big_vision's evaluator decodes it and its ``refcoco_mask2str`` op encodes it
  (``round(c * 1023)`` clipped to [0, 1023]);
* ``DetectedObject.box_xyxy`` is ``(x1, y1, x2, y2)`` in continuous pixel units of the
  original image: ``x = b / 1023 * W``, ``y = b / 1023 * H`` (no truncation; this is what
  the detection metric and COCO want, after conversion to xywh);
* ``pixel_box`` gives the integer, half-open box big_vision pastes masks into:
  ``int(b / 1023 * H)`` etc. (truncation), rows ``y1 .. y2-1``, columns ``x1 .. x2-1``.

This module is numpy-only; :mod:`pgbench.segmentation` turns codes into masks.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

import numpy as np

from pgbench.tokenizer import NUM_LOC as NUM_LOC_BINS, NUM_SEG as NUM_SEG_CODES, LocSegIds

NUM_CODES_PER_MASK = 16
BIN_SCALE = NUM_LOC_BINS - 1  # bins map to [0, 1] by b / 1023

# --------------------------------------------------------------------------------------
# Level (a): token ids, exactly as big_vision's segmentation evaluator.


def parse_seg_token_ids(ids: Sequence[int] | np.ndarray, *, locseg: LocSegIds
                        ) -> tuple[bool, np.ndarray, np.ndarray]:
    """One decoded sequence -> ``(valid, bins i32[4] (y1,x1,y2,x2), codes i32[16])``.

    Only the first 20 ids are read; ``locseg`` (``tokenizer.locseg``) says which ids are
    ``<loc>``/``<seg>`` pieces. Invalid predictions return zeros for bins and codes.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    bins = [locseg.loc_index(i) for i in ids[:4]]
    codes = [locseg.seg_index(i) for i in ids[4:4 + NUM_CODES_PER_MASK]]
    valid = (len(bins) == 4 and len(codes) == NUM_CODES_PER_MASK
             and None not in bins and None not in codes
             and bins[2] > bins[0] and bins[3] > bins[1])
    if not valid:
        return False, np.zeros(4, np.int32), np.zeros(NUM_CODES_PER_MASK, np.int32)
    return True, np.array(bins, np.int32), np.array(codes, np.int32)


def parse_seg_token_batch(ids: np.ndarray, *, locseg: LocSegIds
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """i32[B, T] decoded ids -> ``(valid bool[B], bins i32[B, 4], codes i32[B, 16])``."""
    rows = [parse_seg_token_ids(r, locseg=locseg) for r in np.asarray(ids)]
    if not rows:
        return np.zeros(0, bool), np.zeros((0, 4), np.int32), np.zeros((0, NUM_CODES_PER_MASK), np.int32)
    valid, bins, codes = zip(*rows)
    return np.array(valid, bool), np.stack(bins), np.stack(codes)


def bins_to_normalized(bins: np.ndarray) -> np.ndarray:
    """Loc bins (any shape) -> float64 coordinates in [0, 1]: ``b / 1023``."""
    return np.asarray(bins, np.float64) / BIN_SCALE


def normalized_to_bins(coords: np.ndarray) -> np.ndarray:
    """[0, 1] coordinates -> bins, as the ``refcoco_mask2str`` op: ``round(c*1023)`` clipped."""
    # np.round is round-half-to-even, like tf.round.
    return np.clip(np.round(np.asarray(coords, np.float64) * BIN_SCALE), 0, BIN_SCALE).astype(np.int32)


def pixel_box(bins: Sequence[int], height: int, width: int) -> tuple[tuple[int, int, int, int], bool]:
    """Bins (y1,x1,y2,x2) -> the integer half-open pixel box big_vision pastes into.

    Returns ``((y1, x1, y2, x2), non_empty)``; coordinates truncate like Python ``int()``
    (the evaluator's ``map(int, (y1 * h, ...))`` on ``bin / 1023``).
    """
    y1, x1, y2, x2 = (float(b) / BIN_SCALE for b in bins)
    py1, px1, py2, px2 = int(y1 * height), int(x1 * width), int(y2 * height), int(x2 * width)
    return (py1, px1, py2, px2), (py2 > py1 and px2 > px1)


def box_iou_normalized(box: Sequence[float], gt: Sequence[float]) -> float:
    """IoU of two (y1, x1, y2, x2) boxes in [0, 1], as big_vision's evaluator (its boxacc input)."""
    def area(y1, x1, y2, x2):
        return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)

    inter = (max(box[0], gt[0]), max(box[1], gt[1]), min(box[2], gt[2]), min(box[3], gt[3]))
    union = area(*box) + area(*gt) - area(*inter)
    return area(*inter) / union if union > 0 else 0.0


# --------------------------------------------------------------------------------------
# Level (b): decoded strings.


@dataclasses.dataclass(frozen=True)
class DetectedObject:
    """One parsed object. ``codes`` is None for detection output (no ``<seg>`` tokens)."""

    bins: tuple[int, int, int, int]  # y1, x1, y2, x2 in [0, 1023]
    label: str
    codes: tuple[int, ...] | None = None  # 16 VQ-VAE codes when the chunk had <seg> tokens
    image_hw: tuple[int, int] | None = None

    @property
    def box_normalized(self) -> tuple[float, float, float, float]:
        """(y1, x1, y2, x2) in [0, 1]."""
        return tuple(float(b) / BIN_SCALE for b in self.bins)  # type: ignore[return-value]

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        """(x1, y1, x2, y2) in pixels of the original image (continuous, no truncation)."""
        if self.image_hw is None:
            raise ValueError("box_xyxy needs the image size: parse with image_hw=(H, W)")
        h, w = self.image_hw
        y1, x1, y2, x2 = self.box_normalized
        return (x1 * w, y1 * h, x2 * w, y2 * h)


@dataclasses.dataclass
class ParseResult:
    """All objects parsed from one model output, plus how many chunks were skipped.

    ``masks`` is filled by :func:`pgbench.segmentation.attach_masks` (bool[N, H, W], one per
    object; an object whose box is empty after pixel truncation gets an all-false mask).
    """

    objects: list[DetectedObject]
    num_malformed: int
    image_hw: tuple[int, int] | None = None
    masks: np.ndarray | None = None

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objects]

    @property
    def boxes(self) -> np.ndarray:
        """f32[N, 4] boxes (x1, y1, x2, y2) in original-image pixels (needs image_hw)."""
        if not self.objects:
            return np.zeros((0, 4), np.float32)
        return np.array([o.box_xyxy for o in self.objects], np.float32)

    @property
    def boxes_normalized(self) -> np.ndarray:
        """f64[N, 4] boxes (y1, x1, y2, x2) in [0, 1]."""
        return np.array([o.box_normalized for o in self.objects], np.float64).reshape(-1, 4)

    @property
    def codes(self) -> np.ndarray:
        """i32[N, 16] codes of the objects that have them (segmentation output)."""
        rows = [o.codes for o in self.objects if o.codes is not None]
        return np.array(rows, np.int32).reshape(-1, NUM_CODES_PER_MASK)


_LOC = re.compile(r"<loc(\d{4})>")
_SEG = re.compile(r"<seg(\d{3})>")
# A chunk: exactly 4 loc tokens, optionally exactly 16 seg tokens glued to them, then a label.
_CHUNK = re.compile(r"^\s*((?:<loc\d{4}>){4})((?:<seg\d{3}>){16})?(.*)$", re.DOTALL)


def _parse_chunk(chunk: str, image_hw: tuple[int, int] | None, want_codes: bool) -> DetectedObject | None:
    m = _CHUNK.match(chunk)
    if m is None:
        return None
    locs, segs, label = m.group(1), m.group(2), m.group(3).strip()
    # Any further loc/seg token in the label means the structure is broken (e.g. a space
    # between loc and seg tokens, which big_vision's evaluator also rejects).
    if "<loc" in label or "<seg" in label:
        return None
    bins = tuple(int(v) for v in _LOC.findall(locs))
    if any(b >= NUM_LOC_BINS for b in bins) or not (bins[2] > bins[0] and bins[3] > bins[1]):
        return None
    codes = None
    if segs is not None:
        codes = tuple(int(v) for v in _SEG.findall(segs))
        if any(c >= NUM_SEG_CODES for c in codes):
            return None
    if want_codes and codes is None:
        return None
    return DetectedObject(bins=bins, label=label, codes=codes,
                          image_hw=None if image_hw is None else (int(image_hw[0]), int(image_hw[1])))


def _parse(text: str, image_hw, want_codes: bool) -> ParseResult:
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    objects: list[DetectedObject] = []
    malformed = 0
    for chunk in text.split(";"):
        if not chunk.strip():
            continue  # empty output / trailing separator: nothing predicted, nothing wrong
        obj = _parse_chunk(chunk, image_hw, want_codes)
        if obj is None:
            malformed += 1
        else:
            objects.append(obj)
    hw = None if image_hw is None else (int(image_hw[0]), int(image_hw[1]))
    return ParseResult(objects=objects, num_malformed=malformed, image_hw=hw)


def parse_detections(text: str, image_hw: tuple[int, int] | None = None) -> ParseResult:
    """``"<loc…>×4 label ; …"`` -> objects with boxes (and codes, if a chunk has 16 ``<seg>``).

    image_hw: (H, W) of the original image, needed for pixel boxes (``result.boxes``).
    Chunks are separated by ``;``; a chunk without exactly 4 leading loc tokens, with a bin
    out of range, an empty box (``y2 <= y1`` or ``x2 <= x1`` in bins), a partial run of
    ``<seg>`` tokens or stray loc/seg tokens in its label is counted in ``num_malformed``.
    """
    return _parse(text, image_hw, want_codes=False)


def parse_segmentations(text: str, image_hw: tuple[int, int] | None = None) -> ParseResult:
    """``"<loc…>×4<seg…>×16 label ; …"`` -> objects that all carry 16 codes.

    Same rules as :func:`parse_detections`, and a chunk without its 16 seg tokens (glued to
    the loc tokens, as big_vision requires) is malformed.
    """
    return _parse(text, image_hw, want_codes=True)


def format_object(bins: Sequence[int], label: str = "", codes: Iterable[int] | None = None) -> str:
    """The inverse of parsing one object: ``<locY1><locX1><locY2><locX2>[<seg…>] label``."""
    s = "".join(f"<loc{int(b):04d}>" for b in bins)
    if codes is not None:
        s += "".join(f"<seg{int(c):03d}>" for c in codes)
    return f"{s} {label}" if label else s


def format_objects(objects: Iterable[DetectedObject]) -> str:
    """Join several objects the way PaliGemma writes them: ``" ; "`` between objects."""
    return " ; ".join(format_object(o.bins, o.label, o.codes) for o in objects)
