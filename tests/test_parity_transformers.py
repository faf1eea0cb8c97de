"""`pgbench parity --checkpoint --against transformers` (needs the [reference] extra: slow)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import BIG_VISION_REFERENCE, REFERENCE_OUTPUTS

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pgbench import parity_transformers  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("checkpoint", [
    REFERENCE_OUTPUTS / "hf_pg2_tiny" / "checkpoint",  # an HF directory, Gemma 2, window applied
    BIG_VISION_REFERENCE / "pg1_tiny" / "checkpoint.npz",  # a big_vision file, written to HF on the fly
])
def test_agrees_with_transformers(checkpoint):
    report = parity_transformers.check_against_transformers(checkpoint)
    assert report.passed, "\n".join(report.lines())


def test_disagreement_is_reported(tmp_path):
    flat = dict(np.load(BIG_VISION_REFERENCE / "pg1_tiny" / "checkpoint.npz"))
    path = tmp_path / "ckpt.npz"
    np.savez(path, **flat)
    report = parity_transformers.check_against_transformers(path, tolerance=1e-12)
    assert not report.passed and report.lines()[-1].startswith("FAIL")
