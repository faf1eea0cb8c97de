"""The x = y box diagnostic (pgbench.synth.box_copies) on hand-written prediction lines."""

import json

import pytest

from pgbench.errors import InputError
from pgbench.synth import box_copies


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_counts_boxes_whose_x_bins_repeat_their_y_bins(tmp_path):
    rows = [
        # two boxes, the first on the diagonal (x1 = y1, x2 = y2), the second not
        {"id": "a", "prediction": "<loc0120><loc0120><loc0376><loc0376> square ; <loc0100><loc0200><loc0300><loc0400> square",
         "references": ["<loc0128><loc0160><loc0352><loc0384> square"]},
        # x1 = y1 only: not a copy; a malformed chunk is not a box
        {"id": "b", "prediction": "<loc0010><loc0010><loc0500><loc0600> circle ; <loc0001> circle",
         "references": ["<loc0050><loc0050><loc0070><loc0070> circle"]},
        # refcoco-style chunk with 16 seg tokens after the box, copied
        {"id": "c", "prediction": "<loc0200><loc0200><loc0800><loc0800>" + "<seg001>" * 16 + " ball", "references": []},
    ]
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "predictions.jsonl", rows)
    assert box_copies.count(box_copies.predictions_file(run)) == {
        "boxes": 4, "copied": 2, "reference_boxes": 2, "reference_copied": 1}


def test_unreadable_or_foreign_files_are_named(tmp_path, capsys):
    with pytest.raises(InputError, match="no such predictions file"):
        box_copies.count(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    assert box_copies.main([str(bad)]) == 2
    assert "bad.jsonl: example 1: not a pgbench eval prediction line" in capsys.readouterr().err
