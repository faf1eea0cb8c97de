"""Masks -> codes and tokens: big_vision's ``refcoco_mask2str`` pre-processing op.

Crop the full-resolution mask with ``round(H * coord)`` (float32, round-half-even), resize
the crop to 64x64 with TF's antialiased bilinear (:func:`pgbench.images.resize_antialiased`,
float64), encode with the VQ-VAE; loc bins are ``round(coord * 1023)`` clipped to [0, 1023].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pgbench import images, structured
from pgbench.errors import InputError
from pgbench.segmentation.vqvae import MASK_SIZE, VQVAE, encode_masks
from pgbench.tokenizer import LocSegIds


def _mask_as_unit_float(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]  # the op reads channel 0 of the [H, W, 3] RefCOCO mask
    if mask.ndim != 2:
        raise InputError(f"mask must be [H, W] (or [H, W, C]), got shape {list(mask.shape)}")
    if mask.dtype == bool:
        return mask.astype(np.float64)
    if mask.dtype == np.uint8:
        return mask.astype(np.float64) / 255.0
    if np.issubdtype(mask.dtype, np.floating):
        return mask.astype(np.float64)
    raise InputError(f"mask dtype {mask.dtype} not supported (bool, uint8 0..255 or float 0..1)")


def mask_crop_64(mask: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The op's crop: rows round(H*y1):round(H*y2), cols round(W*x1):round(W*x2) (float32
    arithmetic, round-half-even as tf.round), resized to f32[64, 64] in [0, 1]."""
    m = _mask_as_unit_float(mask)
    h, w = m.shape
    b = np.asarray(box, np.float32)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise InputError(f"box must be 4 finite numbers (y1, x1, y2, x2) in [0, 1], got {box!r}")
    y1, y2 = (int(np.round(np.float32(h) * c)) for c in (b[0], b[2]))
    x1, x2 = (int(np.round(np.float32(w) * c)) for c in (b[1], b[3]))
    y1, x1 = max(y1, 0), max(x1, 0)
    crop = m[y1:y2, x1:x2]
    if crop.size == 0:
        raise InputError(f"box {tuple(float(c) for c in b)} covers no pixels of the {h}x{w} mask "
                         f"(rows {y1}:{y2}, cols {x1}:{x2})")
    return images.resize_antialiased(crop, MASK_SIZE, MASK_SIZE, dtype=np.float64).astype(np.float32)


def masks_to_bins_codes(vae: VQVAE, masks: Sequence[np.ndarray], boxes
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Training targets for several objects: ``(bins i32[N, 4], codes i32[N, 16])``.

    masks: N full-resolution masks (bool, uint8 0..255 or float 0..1; [H, W] or [H, W, C]);
    boxes: f[N, 4] normalised (y1, x1, y2, x2), big_vision's ``objects/bbox`` convention.
    """
    try:
        boxes = np.asarray(boxes, np.float32)
    except (TypeError, ValueError) as e:
        raise InputError(f"boxes must be numbers f[N, 4] (y1, x1, y2, x2), could not read them ({e})") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"boxes must be f[N, 4] (y1, x1, y2, x2), got shape {list(boxes.shape)}")
    if len(masks) != len(boxes):
        raise InputError(f"{len(masks)} masks but {len(boxes)} boxes")
    crops = np.stack([mask_crop_64(m, b) for m, b in zip(masks, boxes)]) if len(boxes) else \
        np.zeros((0, MASK_SIZE, MASK_SIZE), np.float32)
    codes = encode_masks(vae, crops)
    # float32 product, as the op computes bbox * 1023 on a float32 tensor.
    bins = np.clip(np.round(boxes * np.float32(structured.BIN_SCALE)), 0, structured.BIN_SCALE)
    return bins.astype(np.int32), codes


def masks_to_tokens(vae: VQVAE, masks: Sequence[np.ndarray], boxes, *, locseg: LocSegIds
                    ) -> np.ndarray:
    """i32[N, 20] target ids (4 loc, then 16 seg) in ``locseg``'s vocabulary
    (``tokenizer.locseg``); see :func:`masks_to_bins_codes`."""
    return locseg.object_ids(*masks_to_bins_codes(vae, masks, boxes))


def mask_to_tokens(vae: VQVAE, mask: np.ndarray, box: Sequence[float], *, locseg: LocSegIds
                   ) -> np.ndarray:
    """One object's target ids i32[20]; see :func:`masks_to_tokens`."""
    return masks_to_tokens(vae, [mask], [box], locseg=locseg)[0]


def mask_to_string(vae: VQVAE, mask: np.ndarray, box: Sequence[float]) -> str:
    """``"<locY1><locX1><locY2><locX2><segNNN>×16"`` (no separator, no label): the suffix
    ``refcoco_mask2str`` builds."""
    bins, codes = masks_to_bins_codes(vae, [mask], [box])
    return structured.format_object(bins[0], "", codes[0])


def coco_box_to_normalized(box_xywh: Sequence[float], height: int, width: int) -> np.ndarray:
    """COCO pixel box (x, y, w, h) -> normalised (y1, x1, y2, x2), the op's bbox convention."""
    x, y, bw, bh = (float(v) for v in box_xywh)
    return np.array([y / height, x / width, (y + bh) / height, (x + bw) / width], np.float64)
