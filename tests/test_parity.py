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


# --------------------------------------------------------------------------------------
# Damaged copies of the shared cases: each class of bad input is one ReferenceCaseError
# naming the file (exit 2, one line), raised before any model is loaded or run.


def _damaged_case(src, dst, *, header=None, inputs=None, outputs=None, raw_header=None):
    """A copy of case ``src`` (checkpoint linked, not copied) with one part changed."""
    dst.mkdir()
    h = json.loads((src / "case.json").read_text())
    for f in src.iterdir():
        if f.name not in ("case.json", "inputs.npz", "outputs.npz"):
            (dst / f.name).symlink_to(f)
    if raw_header is not None:
        (dst / "case.json").write_bytes(raw_header)
    else:
        (dst / "case.json").write_text(json.dumps(header(h) if header else h))
    for name, change in (("inputs.npz", inputs), ("outputs.npz", outputs)):
        arrays = dict(np.load(src / name))
        np.savez(dst / name, **(change(arrays) if change else arrays))
    return dst


def _set(d, path, value):
    """Copy of nested dict ``d`` with ``d[path[0]][path[1]]... = value`` (value None deletes)."""
    d = dict(d)
    if len(path) == 1:
        if value is None:
            d.pop(path[0], None)
        else:
            d[path[0]] = value
        return d
    d[path[0]] = _set(d[path[0]], path[1:], value)
    return d


def _with(**changes):
    """inputs/outputs change: replace (or, with None, drop) arrays."""
    def change(arrays):
        arrays = dict(arrays)
        for k, v in changes.items():
            if v is None:
                arrays.pop(k)
            else:
                arrays[k] = v(arrays) if callable(v) else v
        return arrays
    return change


_PG = BIG_VISION_REFERENCE / "pg1_tiny"
_SEG = BIG_VISION_REFERENCE / "seg_vqvae"

BAD_CASES = {
    # case.json
    "header not UTF-8": (_PG, dict(raw_header=b'{"format_version": 1, "notes": "caf\xe9"}'),
                         "case.json", "not UTF-8"),
    "header a list": (_PG, dict(raw_header=b"[1, 2]"), "case.json", "expected a JSON object"),
    "checkpoint lacks path": (_PG, dict(header=lambda h: _set(h, ["checkpoint", "path"], None)),
                              "case.json", "missing field 'path'"),
    "checkpoint a string": (_PG, dict(header=lambda h: _set(h, ["checkpoint"], "checkpoint.npz")),
                            "case.json", "field 'checkpoint' is 'checkpoint.npz'"),
    "checkpoint path a number": (_PG, dict(header=lambda h: _set(h, ["checkpoint", "path"], 7)),
                                 "case.json", "field 'path' is 7"),
    "llm_family a number": (_PG, dict(header=lambda h: _set(h, ["checkpoint", "llm_family"], 2)),
                            "case.json", "field 'llm_family' is 2"),
    "options a list": (_PG, dict(header=lambda h: _set(h, ["checkpoint", "options"], ["x"])),
                       "case.json", "field 'options'"),
    "tolerance a string": (_PG, dict(header=lambda h: _set(h, ["tolerance", "relative_to_max_abs"], "tight")),
                           "case.json", "field 'relative_to_max_abs' is 'tight'"),
    "tolerance negative": (_PG, dict(header=lambda h: _set(h, ["tolerance", "relative_to_max_abs"], -1e-5)),
                           "case.json", "finite number >= 0"),
    "tolerance a number": (_PG, dict(header=lambda h: _set(h, ["tolerance"], 1e-5)),
                           "case.json", "field 'tolerance' is 1e-05"),
    "compare a string": (_PG, dict(header=lambda h: _set(h, ["compare"], "logits")),
                         "case.json", "field 'compare'"),
    "compare empty": (_PG, dict(header=lambda h: _set(h, ["compare"], [])), "case.json", "field 'compare'"),
    "eos a string": (_PG, dict(header=lambda h: _set(h, ["decode", "eos_token"], "1")),
                     "case.json", "field 'eos_token' is '1'"),
    "eos out of range": (_PG, dict(header=lambda h: _set(h, ["decode", "eos_token"], 10**30)),
                         "case.json", "field 'eos_token' is 1000000000000000000000000000000"),
    "format_version true": (_PG, dict(header=lambda h: _set(h, ["format_version"], True)),
                            "case.json", "format_version True"),
    # inputs.npz, kind paligemma
    "batch sizes disagree": (_PG, dict(inputs=_with(tokens=lambda a: np.concatenate([a["tokens"]] * 2))),
                             "inputs.npz", "'tokens' has B = 4 .* but 'images' has B = 2"),
    "lengths disagree": (_PG, dict(inputs=_with(input_mask=lambda a: a["input_mask"][:, :-1])),
                         "inputs.npz", "'input_mask' has T = 13 .* 'tokens' has T = 14"),
    "tokens not integers": (_PG, dict(inputs=_with(tokens=lambda a: a["tokens"].astype(np.float32))),
                            "inputs.npz", "'tokens' has dtype float32, expected integer"),
    "images not floats": (_PG, dict(inputs=_with(images=lambda a: a["images_uint8"])),
                          "inputs.npz", "'images' has dtype uint8, expected floating point"),
    "images rank 3": (_PG, dict(inputs=_with(images=lambda a: a["images"][0])),
                      "inputs.npz", "'images' has shape \\[56, 56, 3\\], expected rank 4"),
    "images one channel": (_PG, dict(inputs=_with(images=lambda a: a["images"][..., :1])),
                           "inputs.npz", "'images' has shape \\[2, 56, 56, 1\\]"),
    "mask_ar missing": (_PG, dict(inputs=_with(mask_ar=None)), "inputs.npz", "missing array 'mask_ar'"),
    "decode batch incomplete": (_PG, dict(inputs=_with(decode_mask_ar=None)),
                                "inputs.npz", "lacks 'decode_mask_ar'"),
    "decode batch sizes disagree": (_PG, dict(inputs=_with(decode_tokens=lambda a: a["decode_tokens"][:1])),
                                    "inputs.npz", "'decode_tokens' has B_decode = 1"),
    "decode images another size": (_PG, dict(inputs=_with(decode_images=lambda a: a["decode_images"][:, :28])),
                                   "inputs.npz", "'decode_images' has H = 28"),
    "empty batch": (_PG, dict(inputs=lambda a: {k: v[:0] for k, v in a.items()}),
                    "inputs.npz", "'images' is empty"),
    "negative token": (_PG, dict(inputs=_with(tokens=lambda a: a["tokens"] - 5)),
                       "inputs.npz", "negative token id"),
    # outputs.npz
    "greedy tokens rank 1": (_PG, dict(outputs=_with(greedy_tokens=lambda a: a["greedy_tokens"][0])),
                             "outputs.npz", "'greedy_tokens' has shape \\[8\\], expected rank 2"),
    "no greedy steps": (_PG, dict(outputs=_with(greedy_tokens=lambda a: a["greedy_tokens"][:, :0])),
                        "outputs.npz", "'greedy_tokens' is empty"),
    "compared output missing": (_PG, dict(outputs=_with(logits=None)), "outputs.npz", "lacks them"),
    # inputs.npz, kind vqvae
    "codes out of range": (_SEG, dict(inputs=_with(codes=lambda a: a["codes"] + 100)),
                           "inputs.npz", "array 'codes': must lie in \\[0, 128\\)"),
    "codes not integers": (_SEG, dict(inputs=_with(codes=lambda a: a["codes"].astype(np.float64))),
                           "inputs.npz", "'codes' has dtype float64"),
    "codes 15 per mask": (_SEG, dict(inputs=_with(codes=lambda a: a["codes"][:, :15])),
                          "inputs.npz", "'codes' has shape \\[4, 15\\], expected integer \\[M, 16\\]"),
    "box tokens without image size": (_SEG, dict(inputs=_with(image_hw=None)),
                                      "inputs.npz", "lacks 'image_hw'"),
    "image size not positive": (_SEG, dict(inputs=_with(image_hw=np.array([0, 224], np.int32))),
                                "inputs.npz", "positive height"),
    "ground truth of another size": (_SEG, dict(inputs=_with(gt_masks=lambda a: a["gt_masks"][:, :100])),
                                     "inputs.npz", "'gt_masks' has shape \\[2, 100, 224\\]"),
    "ground truth not 0/1": (_SEG, dict(inputs=_with(gt_masks=lambda a: a["gt_masks"].astype(np.uint8) * 255)),
                             "inputs.npz", "'gt_masks' holds values other than 0/1"),
    "ground truth box NaN": (_SEG, dict(inputs=_with(gt_boxes=lambda a: a["gt_boxes"] * np.nan)),
                             "inputs.npz", "non-finite"),
    "ground truth boxes disagree": (_SEG, dict(inputs=_with(gt_boxes=lambda a: a["gt_boxes"][:1])),
                                    "inputs.npz", "'gt_boxes' has N = 1 .* 'box_tokens' has N = 2"),
}


@pytest.fixture
def no_model_work(monkeypatch):
    """Fail the test if a checkpoint is loaded: validation must come first."""
    import pgbench.checkpoints
    import pgbench.segmentation

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the case was validated")

    monkeypatch.setattr(pgbench.checkpoints, "load_checkpoint", forbidden)
    monkeypatch.setattr(pgbench.segmentation, "load_vqvae", forbidden)


@pytest.mark.parametrize("what", list(BAD_CASES))
def test_bad_case_is_one_error_before_any_model_work(what, tmp_path, big_vision_reference,
                                                     no_model_work, capsys):
    src, damage, file_name, message = BAD_CASES[what]
    case = _damaged_case(src, tmp_path / "case", **damage)
    with pytest.raises(ReferenceCaseError, match=message) as e:
        parity.check_case(case)
    assert str(case / file_name) in str(e.value)
    assert cli.main(["parity", "--reference", str(case)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgbench parity: error: ") and file_name in err[0]


@pytest.mark.parametrize("change, message", [
    (_with(images=lambda a: a["images"][:, :28, :28], decode_images=lambda a: a["decode_images"][:, :28, :28]),
     "'images' has images of 28x28 pixels; the checkpoint takes 56x56"),
    (_with(tokens=lambda a: a["tokens"] + 4096), "outside the checkpoint's vocabulary of 4096"),
])
def test_inputs_that_only_the_checkpoint_can_reject(change, message, tmp_path, big_vision_reference,
                                                    monkeypatch):
    """Image size and vocabulary are known once the checkpoint is read, still before any
    forward pass."""
    from pgbench.model import paligemma

    def forbidden(*args, **kwargs):
        raise AssertionError("the model ran on bad inputs")

    monkeypatch.setattr(paligemma, "forward", forbidden)
    case = _damaged_case(_PG, tmp_path / "case", inputs=change)
    with pytest.raises(ReferenceCaseError, match=message) as e:
        parity.check_case(case)
    assert str(case / "inputs.npz") in str(e.value)
