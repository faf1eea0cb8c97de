"""Every metric loads with `evaluate.load` from a local path without touching the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMES = ["vqa_accuracy", "anls", "coco_caption", "refcoco_miou", "rsvqa_accuracy",
         "relaxed_accuracy", "exact_match", "detection_map"]

# Runs in a fresh interpreter with sockets disabled and *no* offline variables, from the repo
# root (relative paths) and by absolute path.
_SCRIPT = r"""
import socket, sys
def _refuse(*a, **k):
    raise OSError("network access attempted")
socket.socket.connect = _refuse
socket.create_connection = _refuse
import evaluate
names, root = sys.argv[1].split(","), sys.argv[2]
for name in names:
    m = evaluate.load("metrics/" + name)
    m2 = evaluate.load(root + "/metrics/" + name)
    assert type(m).__name__ == type(m2).__name__
out = evaluate.load("metrics/exact_match").compute(predictions=["a"], references=[["a"]])
assert out == {"exact_match": 1.0}, out
print("ok")
"""


@pytest.mark.slow  # a fresh interpreter importing evaluate
def test_load_without_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    env["HF_METRICS_CACHE"] = str(tmp_path / "metrics")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, ",".join(NAMES), str(REPO)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


@pytest.mark.parametrize("name", NAMES)
def test_each_folder_has_module_and_readme(name):
    assert (REPO / "metrics" / name / f"{name}.py").is_file()
    assert (REPO / "metrics" / name / "README.md").is_file()
