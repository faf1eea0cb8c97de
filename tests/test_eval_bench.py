"""benchmarks/eval_cpu.py still runs (pg1-tiny, 8 examples); its figures are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow  # two model processes (~30 s)
def test_eval_bench_quick_writes_its_results(tmp_path):
    out = subprocess.run([sys.executable, "-m", "benchmarks.eval_cpu", "--quick", "--out",
                          str(tmp_path / "eval")], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "eval.json").read_text())
    side = res["dtypes"]["float32"]["pgbench"]
    assert side["examples_per_s"] > 0 and 0 <= side["outside_model_fraction"] < 1
    assert "| float32 | pgbench |" in (tmp_path / "eval.md").read_text()
