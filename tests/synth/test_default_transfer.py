"""make transfer / make sweep without a task: their run directories follow the model's weights."""

from __future__ import annotations

from pgbench.synth.default_eval import file_digest
from pgbench.synth.default_transfer import for_model


def _model(path, weights: bytes):
    path.mkdir(exist_ok=True)
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_runs_of_other_weights_are_cleared_same_weights_kept(tmp_path):
    model = _model(tmp_path / "model", b"weights one")
    out = for_model(tmp_path / "runs", model)
    (out / "budget-256-s0").mkdir()
    assert (out / "model.sha256").read_text().strip() == file_digest(model / "model.safetensors")
    for_model(out, model)  # same weights: an interrupted run is resumed, not lost
    assert (out / "budget-256-s0").is_dir()
    _model(model, b"weights two")  # a rebuilt model
    for_model(out, model)
    assert not (out / "budget-256-s0").exists()
    assert (out / "model.sha256").read_text().strip() == file_digest(model / "model.safetensors")


def test_a_folder_without_a_stamp_is_treated_as_stale(tmp_path):
    model = _model(tmp_path / "model", b"w")
    (tmp_path / "runs" / "old-run").mkdir(parents=True)
    for_model(tmp_path / "runs", model)
    assert not (tmp_path / "runs" / "old-run").exists()
