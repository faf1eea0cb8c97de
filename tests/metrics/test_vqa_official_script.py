"""vqa_accuracy against the official vqaEval.py itself, when a copy is provided.

The official script is not part of pgbench (it is fetched from github.com/GT-Vision-Lab/VQA
and kept outside the repository). Set PGBENCH_OFFICIAL_VQAEVAL=/path/to/vqaEval.py (and,
optionally, PGBENCH_PYTHON2=/path/to/python2.7 to run it unmodified under Python 2) to enable
this test; it runs the script through `benchmarks.metrics_bench.run_official_vqa` and requires
bit-identical accuracies overall and per answer type.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from pgbench.scoring import vqa

OFFICIAL = os.environ.get("PGBENCH_OFFICIAL_VQAEVAL")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not OFFICIAL, reason="set PGBENCH_OFFICIAL_VQAEVAL to the official vqaEval.py")]

# ASCII only: under a Python 3 fallback the official `\d` would become Unicode.
_NASTY = ["two", "2", "Two", "1,000", "1000", "the dog", "dog", "a dog", "dog.", "dont", "don't",
          "yes", "Yes", "yes!", "no", "none", "0", "", "3.5", "etc.", "red-blue", "red blue",
          "(red)", "x - y", "x.y.z", "an", "?", "red , blue", "a,b 1,2", "mr.smith", "Im", "x" + "." * 40,
          "hello\tworld", " yes\n", "1.5.", "t-shirt", "t shirt", "black/white"]


def test_bit_identical_to_official_script():
    from benchmarks.metrics_bench import run_official_vqa, vqa_data

    rng = random.Random(1)
    preds, refs, types = vqa_data(3000, seed=7)
    for _ in range(3000):  # adversarial questions built from the nasty answers
        pool = rng.sample(_NASTY, rng.randint(1, 4))
        refs.append([rng.choice(pool) for _ in range(10)])
        preds.append(rng.choice(pool + [rng.choice(_NASTY)]))
        types.append(rng.choice(["yes/no", "number", "other"]))
    official = run_official_vqa(Path(OFFICIAL), preds, refs, types, os.environ.get("PGBENCH_PYTHON2"))
    ours = vqa.vqa_accuracy(preds, refs, answer_types=types)
    assert float(official["accuracy"]) == ours["accuracy"]
    for kind, value in official["types"].items():
        assert float(value) == ours[f"accuracy/{kind}"]
