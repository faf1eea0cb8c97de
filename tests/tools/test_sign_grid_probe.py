"""tools/sign_grid_probe.py runs end to end (tiny sizes), so the figure docs/synth.md quotes
can be re-measured."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "sign_grid_probe.py"


def test_probe_prints_both_accuracies(capsys):
    spec = importlib.util.spec_from_file_location("sign_grid_probe", TOOL)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.main(["--steps", "2", "--train", "16", "--test", "8"]) == 0
    out = capsys.readouterr().out
    accs = [float(a) for a in re.findall(r"held-out word accuracy ([0-9.]+)", out)]
    assert len(accs) == 2 and all(0 <= a <= 1 for a in accs)
    assert "free positions" in out and "16 px grid" in out
