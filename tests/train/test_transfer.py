"""Transfer end to end on a tiny model: overfitting, frozen parts, run-directory faults."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from pgbench import optim
from pgbench.checkpoints import load_checkpoint
from pgbench.train import TrainingError, TransferConfig, _identity, check_run_dir, run_transfer
from tests.train import _fixture


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _fixture.setup(tmp_path_factory.mktemp("transfer"))


def _cfg(files, run_dir, **kw):
    base = dict(run_dir=str(run_dir), steps=40, lr=3e-3, batch=4, hparams="paper", progress=False,
                ckpt_every=20, remat=None, family="gemma1")
    return TransferConfig(**{**files, **base, **kw})


def _greedy(model, files, tok):
    from pgbench import decode
    from pgbench.batching import make_batch
    from pgbench.task import load_task

    task = load_task("tinycolours", files["tasks_dir"])
    exs = task.examples(files["data"], "val")
    b = make_batch(tok, [(f"{files['data']}/{e.image}", e.prefix) for e in exs], image_size=56, max_len=16)
    out = decode.greedy_decode(model, b["images"], b["tokens"], b["input_mask"], b["mask_ar"],
                               max_new_tokens=6)
    return [tok.decode([int(t) for t in row if t >= 0]).strip() for row in np.asarray(out)], [e.references[0] for e in exs]


@pytest.mark.slow  # 60 steps + export + decode: ~40 s on a shared 2-core CPU
def test_tiny_model_overfits_and_frozen_parts_stay(files, tmp_path):
    from pgbench.tokenizer import Tokenizer

    cfg = _cfg(files, tmp_path / "run", steps=60, freeze=(r"img/pos_\w+", "llm/final_norm"))
    summary = run_transfer(cfg, log=lambda *a: None)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 61))
    first, last = lines[0]["loss"], lines[-1]["loss"]
    assert last < 0.05 * first, (first, last)
    trained, _ = load_checkpoint(summary["export"]["bigvision_npz"], family="gemma1")
    start, _ = load_checkpoint(files["checkpoint"], family="gemma1")
    before, after = optim.param_names(start), optim.param_names(trained)
    for name in before:
        frozen = name in ("llm/final_norm", "img/pos_embedding")
        assert np.array_equal(before[name], after[name]) == frozen, name
    got, want = _greedy(trained, files, Tokenizer(files["tokenizer"]))
    assert got == want
    hf, _ = load_checkpoint(summary["export"]["hf_dir"])
    for a, b in zip(jax.tree.leaves(hf), jax.tree.leaves(trained)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_with_other_flags_is_refused(files, tmp_path):
    run = tmp_path / "run"
    identity = _identity(_cfg(files, run))
    assert not check_run_dir(run, identity)
    (run / "config.json").write_text(json.dumps({**identity, "resolved": {"steps": 40}}))
    assert check_run_dir(run, {**identity, "eval_every": 5})  # does not change the result
    with pytest.raises(TrainingError, match=r"Differences: lr: saved 0.003, now 0.001; seed: saved 0, now 1"):
        check_run_dir(run, _identity(_cfg(files, run, lr=1e-3, seed=1)))


def test_resume_from_a_replaced_checkpoint_or_other_examples_is_refused(files, tmp_path):
    import shutil

    from pgbench.train import check_subset

    ckpt = tmp_path / "ckpt.npz"
    shutil.copyfile(files["checkpoint"], ckpt)
    run = tmp_path / "run"
    identity = _identity(_cfg({**files, "checkpoint": str(ckpt)}, run))
    assert identity["inputs"]["checkpoint"] and identity["inputs"]["tokenizer"]
    check_run_dir(run, identity)
    (run / "config.json").write_text(json.dumps({**identity, "resolved": {"steps": 40}}))
    raw = bytearray(ckpt.read_bytes())
    raw[-1] ^= 1  # another checkpoint at the same path (one byte of its last weights)
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(TrainingError, match=r"Differences: inputs: saved \{'checkpoint'"):
        check_run_dir(run, _identity(_cfg({**files, "checkpoint": str(ckpt)}, run)))
    # a config.json from before the fingerprints (no "inputs") still resumes
    old = {k: v for k, v in identity.items() if k != "inputs"}
    (run / "config.json").write_text(json.dumps(old))
    assert check_run_dir(run, _identity(_cfg({**files, "checkpoint": str(ckpt)}, run)))
    # the training examples a resumed run continues on must be the ones it started with
    (run / "subset.json").write_text(json.dumps(["a", "b", "c"]))
    check_subset(run, ["a", "b", "c"])
    with pytest.raises(TrainingError, match=r"3 then, 3 now; example 1: 'b' then, 'x' now"):
        check_subset(run, ["a", "x", "c"])
    with pytest.raises(TrainingError, match=r"3 then, 2 now; example 2: 'c' then, '\(end\)' now"):
        check_subset(run, ["a", "b"])


def test_unwritable_run_dir_is_an_error_before_training(files, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TrainingError, match="not writable"):
        run_transfer(_cfg(files, blocker / "run"), log=lambda *a: None)


@pytest.mark.slow  # compiles a training step (~20 s)
def test_non_finite_loss_stops_naming_step_and_checkpoint(files, tmp_path):
    with pytest.raises(TrainingError, match=r"at step \d+; stopped. Last good checkpoint: .*checkpoints/2"):
        run_transfer(_cfg(files, tmp_path / "run", steps=40, lr=1e30, ckpt_every=2, clip_norm=0.0),
                     log=lambda *a: None)


@pytest.mark.slow  # a training run and two evaluations through the CLI (~40 s)
def test_cli_transfer_trains_evaluates_and_exports(files, tmp_path, capsys):
    from pgbench.cli import main

    run = tmp_path / "run"
    argv = ["transfer", "--task", "tinycolours", "--data", files["data"], "--checkpoint", files["checkpoint"],
            "--tokenizer", files["tokenizer"], "--run-dir", str(run), "--budget", "3", "--steps", "4",
            "--batch", "2", "--micro-batch", "1", "--lr", "1e-3", "--family", "gemma1", "--eval-every", "2",
            "--tasks-dir", files["tasks_dir"][0], "--no-progress", "--remat", "none"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "4 steps on 3 examples" in out
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["examples"] == 3 and config["resolved"]["micro_batch"] == 1
    assert len(json.loads((run / "subset.json").read_text())) == 3
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["num_examples"] == 4 and "accuracy" in results["metrics"]
    assert (run / "eval" / "step_2" / "results.json").is_file()
    assert (run / "export" / "model.npz").is_file() and (run / "export" / "hf" / "config.json").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "eval" in lines[1] and lines[1]["step"] == 2
    # A bad flag value is one readable line and exit status 2.
    assert main([*argv, "--budget", "lots"]) == 2
    assert "--budget 'lots'" in capsys.readouterr().err
