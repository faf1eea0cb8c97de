"""vqa_accuracy against the official vqaEval.py, through golden scores it produced.

tests/metrics/data/vqa_official_golden.json.gz holds ~5,400 adversarial questions (punctuation
quirks, digit-comma-digit, periods beyond the 32-period cap, number words, articles, every
contraction-table key and value, agreeing and disagreeing answer sets, answer counts other than
10, whitespace of every Unicode kind, letters whose lower case differs between Python 2 and 3)
with the per-question score GT-Vision-Lab's vqaEval.py gave each, run unmodified under Python
2.7. The file records the command that made it (`tools/make_vqa_golden.py`) and the sha256 of the
script. pgbench must agree bit for bit on every question and on the means.

With PGBENCH_OFFICIAL_VQAEVAL (and a Python 2 interpreter), a slow test regenerates the file
from the live script and requires the same bytes.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from pgbench.scoring import vqa

GOLDEN = Path(__file__).parent / "data" / "vqa_official_golden.json.gz"


def _load(path: Path = GOLDEN):
    golden = json.loads(gzip.decompress(path.read_bytes()))
    strings = golden["strings"]
    qs = golden["questions"]
    preds = [strings[q[0]] for q in qs]
    refs = [[strings[i] for i in q[1]] for q in qs]
    return golden, preds, refs, [q[2] for q in qs], [float(q[3]) for q in qs]


def test_golden_file_is_what_it_says():
    golden, preds, refs, types, scores = _load()
    assert golden["source"]["how"] == "vqaEval.py unmodified under Python 2"
    assert golden["source"]["python"].startswith("2.7")
    assert len(preds) >= 3000 and GOLDEN.stat().st_size < 1_000_000
    # Adversarial enough to fail: partial scores, disagreeing sets, every contraction key.
    assert len(set(scores)) >= 8
    assert sum(len(set(r)) > 1 for r in refs) > len(refs) // 3
    assert set(vqa.CONTRACTIONS) <= {a for r in refs for a in r}


def test_every_question_matches_the_official_script():
    _, preds, refs, _, official = _load()
    ours = vqa.question_scores(preds, refs, "official")
    wrong = [(p, r, o, g) for p, r, o, g in zip(preds, refs, official, ours) if o != g]
    assert not wrong, f"{len(wrong)} questions differ, e.g. (pred, answers, official, pgbench): {wrong[:3]!r}"


def test_means_match_the_official_script():
    golden, preds, refs, types, _ = _load()
    ours = vqa.vqa_accuracy(preds, refs, answer_types=types)
    assert ours["accuracy"] == float(golden["accuracy"])
    for kind, value in golden["accuracy_by_type"].items():
        assert ours[f"accuracy/{kind}"] == float(value)


def test_golden_scores_would_catch_python3_string_semantics():
    """The file can fail: scoring with Python 3's strip/lower/split changes some scores."""
    _, preds, refs, _, official = _load()
    py3 = vqa.question_scores(preds, refs, "big_vision")
    assert sum(o != g for o, g in zip(official, py3)) > 100


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PGBENCH_OFFICIAL_VQAEVAL"),
                    reason="set PGBENCH_OFFICIAL_VQAEVAL (and PGBENCH_PYTHON2) to regenerate from the script")
def test_golden_file_regenerates_from_the_official_script(tmp_path):
    from tools.make_vqa_golden import main

    commit = json.loads(gzip.decompress(GOLDEN.read_bytes()))["source"]["commit"]
    out = tmp_path / "golden.json.gz"
    main(["--official-vqa-eval", os.environ["PGBENCH_OFFICIAL_VQAEVAL"], "--out", str(out)]
         + (["--python2", os.environ["PGBENCH_PYTHON2"]] if os.environ.get("PGBENCH_PYTHON2") else [])
         + (["--official-commit", commit] if commit else []))
    assert out.read_bytes() == GOLDEN.read_bytes()
