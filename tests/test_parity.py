"""`pgbench parity`: every reference case passes, a perturbed one fails, bad cases error clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pgbench import cli, parity
from pgbench.errors import ReferenceCaseError
from tests.conftest import BIG_VISION_REFERENCE, REFERENCE_OUTPUTS

PALIGEMMA_CASES = ["pg1_tiny", "pg2_tiny"]


def _reference_output_cases():
    return sorted(p.parent.name for p in REFERENCE_OUTPUTS.glob("*/case.json"))


@pytest.mark.parametrize("name", PALIGEMMA_CASES + ["seg_vqvae"])
def test_big_vision_case_passes(name, big_vision_reference):
    report = parity.check_case(big_vision_reference / name)
    assert report.passed, "\n".join(report.lines())
    assert report.lines()[-1].startswith("PASS")
    assert {c.name for c in report.comparisons} == set(report.compare)


@pytest.mark.parametrize("name", _reference_output_cases())
def test_reference_outputs_case_passes(name):
    report = parity.check_case(REFERENCE_OUTPUTS / name)
    assert report.passed, "\n".join(report.lines())


def _copy_case(src, dst):
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def test_perturbed_checkpoint_fails(tmp_path, big_vision_reference):
    case = _copy_case(big_vision_reference / "pg1_tiny", tmp_path / "case")
    flat = dict(np.load(case / "checkpoint.npz"))
    flat["llm/final_norm/scale"] = flat["llm/final_norm/scale"] * 1.001
    np.savez(case / "checkpoint.npz", **flat)
    report = parity.check_case(case)
    assert not report.passed
    assert report.lines()[-1].startswith("FAIL")
    assert cli.main(["parity", "--reference", str(case)]) == 1


def test_cli_exit_codes(tmp_path, big_vision_reference, capsys):
    assert cli.main(["parity", "--reference", str(big_vision_reference / "pg1_tiny")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("PASS")
    assert any(line.split()[1] == "logits" and "max_abs" in line for line in out if line.startswith("ok"))
    assert cli.main(["parity", "--reference", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_bad_case_headers(tmp_path, big_vision_reference):
    case = _copy_case(big_vision_reference / "pg1_tiny", tmp_path / "case")
    header = json.loads((case / "case.json").read_text())
    (case / "case.json").write_text(json.dumps({**header, "format_version": 99}))
    with pytest.raises(ReferenceCaseError, match="format_version"):
        parity.load_case(case)
    (case / "case.json").write_text(json.dumps({**header, "compare": ["nonexistent"]}))
    with pytest.raises(ReferenceCaseError, match="nonexistent"):
        parity.check_case(case)
    (case / "case.json").write_text("{not json")
    with pytest.raises(ReferenceCaseError, match="invalid JSON"):
        parity.load_case(case)
    (case / "inputs.npz").write_bytes(b"garbage")
    (case / "case.json").write_text(json.dumps(header))
    with pytest.raises(ReferenceCaseError, match="inputs.npz"):
        parity.check_case(case)


def test_compare_arrays_rules():
    ref = np.array([1.0, -10.0, 3.0])
    assert parity.compare_arrays("x", ref + 1e-5, ref, tol=2e-6).passed  # 1e-5 / 10 = 1e-6
    assert not parity.compare_arrays("x", ref + 1e-4, ref, tol=2e-6).passed
    assert not parity.compare_arrays("x", np.array([1.0, np.nan, 3.0]), ref, tol=1.0).passed
    assert not parity.compare_arrays("x", ref[:2], ref, tol=1.0).passed
    toks = np.array([[1, 2, -1]])
    assert parity.compare_arrays("t", toks, toks, tol=0).passed
    assert not parity.compare_arrays("t", toks + 1, toks, tol=1.0).passed
    where = np.array([True, False, True])
    assert parity.compare_arrays("x", np.array([1.0, 99.0, 3.0]), ref, tol=1e-9, where=where).passed
