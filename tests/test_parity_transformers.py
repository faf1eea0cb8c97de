"""`pgbench parity --checkpoint --against transformers` (needs the [reference] extra: slow)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import BIG_VISION_REFERENCE, REFERENCE_OUTPUTS

from pgbench import parity_transformers  # imports torch only when a check runs

# Slow and deselected by the fast run (which therefore never lists it as skipped); a slow
# run without the [reference] extra skips each test.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _reference_extra():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")


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
