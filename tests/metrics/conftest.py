"""Metric tests run offline and keep evaluate's module/metric caches in a temporary dir.

evaluate reads HF_MODULES_CACHE / HF_METRICS_CACHE when it is first imported, so they are
set here, before any test module imports it.
"""

from __future__ import annotations

import os
import tempfile

from pathlib import Path

import pytest

_CACHE = tempfile.mkdtemp(prefix="pgbench-metrics-")
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "HF_MODULES_CACHE": os.path.join(_CACHE, "modules"),
    "HF_METRICS_CACHE": os.path.join(_CACHE, "metrics"),
}.items():
    os.environ.setdefault(_key, _value)

# metrics/ is repository code (not shared data), found relative to this file.
METRICS_DIR = Path(__file__).resolve().parents[2] / "metrics"


@pytest.fixture(scope="session")
def load_metric():
    """evaluate.load of a metric folder by absolute path, one instance per name."""
    import evaluate

    cache = {}

    def load(name: str):
        if name not in cache:
            cache[name] = evaluate.load(str(METRICS_DIR / name))
        return cache[name]

    return load
