"""Codes -> masks: big_vision's segmentation evaluator.

Decode the 16 codes to 64x64 logits, PIL-bilinear resize the float mask to the truncated
pixel box (:func:`pgbench.structured.pixel_box`), threshold > 0, paste into an all-false
canvas. See :mod:`pgbench.structured` for the coordinate conventions.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import PIL.Image

from pgbench import structured
from pgbench.errors import InputError
from pgbench.segmentation.vqvae import VQVAE, decode_codes
from pgbench.tokenizer import LocSegIds


def resize_mask_pil(mask64: np.ndarray, height: int, width: int) -> np.ndarray:
    """f32[64, 64] -> f32[height, width] with PIL's bilinear (antialiased triangle) on an 'F' image."""
    img = PIL.Image.fromarray(np.ascontiguousarray(mask64, np.float32))  # float32 -> mode 'F'
    return np.asarray(img.resize((int(width), int(height)), resample=PIL.Image.BILINEAR), np.float32)


def paste_mask(mask64: np.ndarray, bins: Sequence[int], image_hw: tuple[int, int]
               ) -> tuple[np.ndarray, bool]:
    """Resize the 64x64 logits into the (truncated) pixel box, threshold > 0, paste.

    Returns ``(bool[H, W], pasted)``; ``pasted`` is False (and the mask all-false) when the
    box is empty after int() truncation, which big_vision counts as an invalid prediction.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    canvas = np.zeros((h, w), bool)
    (y1, x1, y2, x2), ok = structured.pixel_box(bins, h, w)
    if not ok:
        return canvas, False
    canvas[y1:y2, x1:x2] = resize_mask_pil(mask64, y2 - y1, x2 - x1) > 0.0
    return canvas, True


@dataclasses.dataclass
class TokenMasks:
    """Masks from decoded token ids, one entry per example (big_vision evaluator rules).

    valid: bool[B] token validity; bins: i32[B, 4]; codes: i32[B, 16] (zeros when invalid);
    masks64: f32[B, 64, 64] decoder logits; pasted: bool[B] valid and non-empty in pixels;
    masks: list of bool[H_b, W_b] full-image masks (all-false unless pasted).
    """

    valid: np.ndarray
    bins: np.ndarray
    codes: np.ndarray
    masks64: np.ndarray
    pasted: np.ndarray
    masks: list[np.ndarray]

    @property
    def num_invalid(self) -> int:
        return int(np.sum(~self.pasted))


def _per_example_hw(image_hw, n: int) -> list[tuple[int, int]]:
    arr = np.asarray(image_hw, np.int64)
    if arr.shape == (2,):
        return [(int(arr[0]), int(arr[1]))] * n
    if arr.shape == (n, 2):
        return [(int(h), int(w)) for h, w in arr]
    raise InputError(f"image_hw must be (H, W) or one (H, W) per example ({n}), got shape {list(arr.shape)}")


def masks_from_token_ids(vae: VQVAE, ids, image_hw, *, locseg: LocSegIds) -> TokenMasks:
    """Decoded ids i32[B, T] -> one full-image mask per example, exactly as big_vision's
    segmentation evaluator (first 4 loc + 16 seg ids; the rest ignored).

    image_hw: (H, W) for all examples, or i32[B, 2]; locseg: ``tokenizer.locseg``.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise InputError(f"token ids must be [B, T], got shape {list(ids.shape)}")
    valid, bins, codes = structured.parse_seg_token_batch(ids, locseg=locseg)
    masks64 = decode_codes(vae, codes)  # invalid rows decode code 0s, as the evaluator does
    masks, pasted = [], []
    for v, m64, b, hw in zip(valid, masks64, bins, _per_example_hw(image_hw, len(ids))):
        if v:
            m, ok = paste_mask(m64, b, hw)
        else:
            m, ok = np.zeros(hw, bool), False
        masks.append(m)
        pasted.append(ok)
    return TokenMasks(valid=valid, bins=bins, codes=codes, masks64=masks64,
                      pasted=np.array(pasted, bool), masks=masks)


def attach_masks(result: structured.ParseResult, vae: VQVAE) -> structured.ParseResult:
    """Fill ``result.masks`` (bool[N, H, W]) for parsed segmentation objects.

    Objects without codes (plain detections) or whose box is empty after pixel truncation
    get all-false masks. Needs ``result.image_hw``.
    """
    if result.image_hw is None:
        raise InputError("attach_masks needs the image size: parse with image_hw=(H, W)")
    h, w = result.image_hw
    out = np.zeros((len(result.objects), h, w), bool)
    with_codes = [i for i, o in enumerate(result.objects) if o.codes is not None]
    if with_codes:
        logits = decode_codes(vae, np.array([result.objects[i].codes for i in with_codes], np.int32))
        for i, m64 in zip(with_codes, logits):
            out[i], _ = paste_mask(m64, result.objects[i].bins, (h, w))
    result.masks = out
    return result
