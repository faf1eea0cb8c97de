"""Load big_vision reference cases (shared/reference/big_vision) for the model tests."""

from __future__ import annotations

import functools
import json

import jax
import numpy as np

from pgbench.config import PRESETS
from pgbench.model import paligemma as pg
from pgbench.model.paligemma import PaliGemma
from pgbench.checkpoints.bigvision_layout import from_bigvision_params
from tests.conftest import BIG_VISION_REFERENCE

CASES = {"pg1_tiny": "pg1-tiny", "pg2_tiny": "pg2-tiny"}


@functools.lru_cache(maxsize=None)
def load_case(name: str):
    """-> (model, cfg, header, inputs, outputs, flat checkpoint) for a reference case."""
    d = BIG_VISION_REFERENCE / name
    header = json.loads((d / "case.json").read_text())
    flat = {k: v for k, v in np.load(d / "checkpoint.npz").items()}
    cfg = PRESETS[CASES[name]]
    model = from_bigvision_params(dict(flat), cfg)
    inputs = dict(np.load(d / "inputs.npz"))
    outputs = dict(np.load(d / "outputs.npz"))
    return model, cfg, header, inputs, outputs, flat


def rel_err(ours, ref, where=None) -> float:
    """max|ours - ref| / max|ref| (FORMAT.md's relative_to_max_abs), over ``where``."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    if where is not None:
        where = np.broadcast_to(where, ref.shape)
        ours, ref = ours[where], ref[where]
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def tolerance(header) -> float:
    return float(header["tolerance"]["relative_to_max_abs"])


def with_window(model: PaliGemma, window: int | None) -> PaliGemma:
    """The model with transformers' sliding window of ``window`` (None: off)."""
    cfg = model.cfg.replace_llm(sliding_window=window, apply_sliding_window=window is not None)
    return pg.with_config(model, cfg)


@jax.jit
def forward_logits(model, images, tokens, input_mask, mask_ar):
    return pg.forward(model, images, tokens, input_mask, mask_ar)[0]
