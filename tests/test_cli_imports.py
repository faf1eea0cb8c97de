"""The command line fails loudly when a subcommand's module cannot be imported."""

from __future__ import annotations

import sys

import pytest

from pgbench import cli


def test_predict_subcommand_is_always_listed():
    assert "predict" in cli.build_parser()._subparsers._group_actions[0].choices


def test_a_broken_predict_module_raises_instead_of_hiding_the_subcommand(monkeypatch):
    import pgbench

    monkeypatch.setitem(sys.modules, "pgbench.predict", None)  # import fails with ImportError
    monkeypatch.delattr(pgbench, "predict", raising=False)
    with pytest.raises(ImportError):
        cli.build_parser()
