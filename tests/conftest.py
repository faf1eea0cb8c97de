"""Shared test fixtures: where the steering repo's reference data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# shared/ sits beside the checkout (CI clones the project with shared/ next to it).
SHARED = Path(os.environ.get("PGBENCH_SHARED", REPO_ROOT.parent / "shared"))
BIG_VISION_REFERENCE = SHARED / "reference" / "big_vision"
REFERENCE_OUTPUTS = REPO_ROOT / "reference_outputs"


@pytest.fixture(scope="session")
def big_vision_reference() -> Path:
    if not BIG_VISION_REFERENCE.is_dir():
        pytest.fail(f"reference data not found at {BIG_VISION_REFERENCE}; set PGBENCH_SHARED")
    return BIG_VISION_REFERENCE
