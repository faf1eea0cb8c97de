"""Transfer can train through the Pallas kernel: gradients of the suffix loss agree with `xla`."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pgbench.config import PRESETS
from pgbench.model import paligemma
from pgbench.checkpoints.bigvision_layout import from_bigvision_params
from tests.conftest import BIG_VISION_REFERENCE

pytestmark = pytest.mark.slow  # the kernel's backward runs in Pallas interpret mode on a CPU


@pytest.mark.parametrize("case,preset", [("pg2_tiny", "pg2-tiny")])
def test_loss_gradients_match_xla(case, preset):
    model = from_bigvision_params(dict(np.load(BIG_VISION_REFERENCE / case / "checkpoint.npz")), PRESETS[preset])
    inp = np.load(BIG_VISION_REFERENCE / case / "inputs.npz")
    args = [inp[k] for k in ("images", "tokens", "input_mask", "mask_ar", "mask_loss")]

    def loss(m, impl):
        return paligemma.suffix_loss(m, *args, attn_impl=impl).mean()

    grads = {impl: jax.jit(jax.grad(loss), static_argnums=1)(model, impl) for impl in ("xla", "pallas")}
    leaves = {impl: jax.tree.leaves(g) for impl, g in grads.items()}
    assert len(leaves["xla"]) == len(leaves["pallas"])
    # One scale for the whole gradient: some leaves' gradients are ~1e-7 rounding noise around 0.
    scale = max(float(np.abs(np.asarray(g)).max()) for g in leaves["xla"])
    for ref, got in zip(leaves["xla"], leaves["pallas"]):
        ref, got = np.asarray(ref), np.asarray(got)
        assert np.all(np.isfinite(got))
        assert np.abs(got - ref).max() <= 1e-5 * scale, (np.abs(got - ref).max(), scale)
