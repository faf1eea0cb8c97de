"""Draw parsed boxes and masks over an image (for ``pgbench predict``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw

from pgbench.errors import InputError

# Distinguishable colours, cycled per object.
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def draw_overlay(image: PIL.Image.Image, boxes, labels: Sequence[str] | None = None,
                 masks=None, *, mask_alpha: float = 0.45, line_width: int | None = None
                 ) -> PIL.Image.Image:
    """Return an RGB copy of ``image`` with each box outlined and labelled and each mask
    blended in its colour at ``mask_alpha``.

    boxes: f[N, 4] (x1, y1, x2, y2) in pixels of ``image`` (``ParseResult.boxes``);
    labels: N strings or None; masks: bool[N, H, W] matching the image size, or None.
    """
    base = image.convert("RGB")
    w, h = base.size
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    labels = list(labels) if labels is not None else [""] * n
    if len(labels) != n:
        raise InputError(f"draw_overlay: {n} boxes but {len(labels)} labels")
    out = np.asarray(base, np.float32).copy()
    if masks is not None:
        masks = np.asarray(masks, bool)
        if masks.shape != (n, h, w):
            raise InputError(f"draw_overlay: masks must be [{n}, {h}, {w}] (one per box, image size), "
                             f"got {list(masks.shape)}")
        for i, m in enumerate(masks):
            colour = np.array(PALETTE[i % len(PALETTE)], np.float32)
            out[m] = (1.0 - mask_alpha) * out[m] + mask_alpha * colour
    img = PIL.Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")
    draw = PIL.ImageDraw.Draw(img)
    lw = line_width or max(1, round(min(w, h) / 200))
    for i, ((x1, y1, x2, y2), label) in enumerate(zip(boxes, labels)):
        colour = PALETTE[i % len(PALETTE)]
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=lw)
        if label:
            tx, ty = x1 + lw, max(0.0, y1 - 12) if y1 >= 12 else y1 + lw
            left, top, right, bottom = draw.textbbox((tx, ty), label)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=colour)
            draw.text((tx, ty), label, fill=(255, 255, 255))
    return img
