"""Fixtures for checkpoint tests: the big_vision reference checkpoints and their case options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import BIG_VISION_REFERENCE

CASES = ("pg1_tiny", "pg2_tiny")


def case_checkpoint(case: str):
    """(path to checkpoint.npz, case.json "checkpoint" entry)."""
    d = BIG_VISION_REFERENCE / case
    if not d.is_dir():
        pytest.fail(f"reference data not found at {d}; set PGBENCH_SHARED")
    return d / "checkpoint.npz", json.loads((d / "case.json").read_text())["checkpoint"]


def reference_flat(case: str) -> dict:
    """The reference checkpoint read with plain numpy (independent of our reader)."""
    path, _ = case_checkpoint(case)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
