"""``pgbench eval | score | tasks`` end to end: a tiny random checkpoint, the tiny tokenizer,
VQAv2 data in its official layout and the ``tinyqa`` adapter from a user's tasks folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgbench.cli import main as cli_main
from tests import _eval_fixtures as fx
from tests.conftest import REPO_ROOT

ARGS = ("--batch-size", "3", "--max-new-tokens", "4")  # shapes shared with test_evaluation


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_eval")
    return dict(root=root, ckpt=fx.write_checkpoint(root / "tiny.npz"),
                vqa=fx.write_vqav2(root / "vqav2"), tasks=fx.write_task(root / "tasks"),
                tiny=fx.write_data(root / "tiny", corrupt=(2,)))


def _eval(env, run_dir, *extra, task="vqav2", data=None):
    data = data or env["vqa" if task == "vqav2" else "tiny"]
    argv = ["eval", "--task", task, "--data", str(data), "--checkpoint", str(env["ckpt"]),
            "--tokenizer", str(fx.TOKENIZER), "--run-dir", str(run_dir), "--no-progress",
            "--tasks-dir", str(env["tasks"]), *ARGS, *extra]
    return cli_main(argv)


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def vqa_run(env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("vqa_run")
    assert _eval(env, run_dir, "--split", "val2014") == 0
    return run_dir


def test_eval_vqav2_writes_the_run_directory(vqa_run, capsys):
    results = json.loads((vqa_run / "results.json").read_text())
    assert results["task"] == "vqav2" and results["split"] == "val2014"
    assert results["num_examples"] == 5 and results["num_failed"] == 0
    assert {"accuracy", "accuracy/other", "accuracy/yes/no"} <= set(results["metrics"])
    rows = _lines(vqa_run / "predictions.jsonl")
    assert sorted(r["id"] for r in rows) == [str(1000 + q) for q in range(5)]
    assert all(r["prompt"].startswith("answer en ") and len(r["references"]) == 10 for r in rows)
    config = json.loads((vqa_run / "config.json").read_text())
    assert config["task"] == "vqav2" and config["max_new_tokens"] == 4 and config["beam"] == 1


def test_score_perfect_predictions_give_the_maximum(env, vqa_run, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": str(1000 + q), "prediction": f"a{q}"}) + "\n"
                             for q in range(5)))
    assert cli_main(["score", "--task", "vqav2", "--data", str(env["vqa"]), "--split", "val2014",
                     "--predictions", str(preds), "--run-dir", str(tmp_path / "r")]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["metrics"]["accuracy"] == 1.0 and results["num_missing"] == 0
    assert "| accuracy | 1.0000 |" in capsys.readouterr().out
    assert (tmp_path / "r" / "results.md").is_file()


def test_score_of_eval_predictions_reproduces_the_eval_metrics(env, vqa_run, tmp_path):
    assert cli_main(["score", "--task", "vqav2", "--data", str(env["vqa"]), "--split", "val2014",
                     "--predictions", str(vqa_run / "predictions.jsonl"),
                     "--run-dir", str(tmp_path)]) == 0
    scored = json.loads((tmp_path / "results.json").read_text())
    assert scored["metrics"] == json.loads((vqa_run / "results.json").read_text())["metrics"]


def test_score_reports_missing_ids(env, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "1000", "prediction": "a0"}) + "\n")
    assert cli_main(["score", "--task", "vqav2", "--data", str(env["vqa"]), "--split", "val2014",
                     "--predictions", str(preds)]) == 0
    assert "4 example(s) had no prediction and count as wrong (e.g. 1001, 1002" in capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())  # beside the predictions
    assert results["num_missing"] == 4 and results["metrics"]["accuracy"] == pytest.approx(0.2)


@pytest.mark.parametrize("content, message", [
    ('{"id": "1000", "prediction": "a"}\n{"id": "77", "prediction": "b"}\n{"id": "78", "prediction": "b"}\n',
     "2 id(s) are not in vqav2 split 'val2014', e.g. '77', '78'"),
    ('{"id": "1000", "prediction": "a"}\n{"id": "1001", "prediction": \n', "line 2 is not valid JSON"),
    ('{"id": "1000", "prediction": "a"}\n{"id": "1001"}\n', "line 2 has no string \"prediction\""),
])
def test_score_bad_prediction_files(env, tmp_path, capsys, content, message):
    preds = tmp_path / "p.jsonl"
    preds.write_text(content)
    assert cli_main(["score", "--task", "vqav2", "--data", str(env["vqa"]), "--split", "val2014",
                     "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_tasks_lists_builtin_and_user_tasks(env, capsys, monkeypatch):
    assert cli_main(["tasks", "--tasks-dir", str(env["tasks"])]) == 0
    out = capsys.readouterr().out
    assert "tinyqa  metric=exact_match  splits: train, val*" in out
    assert "vqav2  metric=vqa_accuracy" in out and "v2_OpenEnded_mscoco_<split>_questions.json" in out
    monkeypatch.setenv("PGBENCH_TASKS", str(env["tasks"]))
    assert cli_main(["tasks"]) == 0
    assert "tinyqa" in capsys.readouterr().out


def test_unknown_task_lists_the_tasks(env, tmp_path, capsys):
    assert _eval(env, tmp_path, task="nope") == 2
    err = capsys.readouterr().err
    assert "unknown task 'nope'" in err and "vqav2" in err and "tinyqa" in err


def test_missing_data_files_are_listed(env, tmp_path, capsys):
    assert _eval(env, tmp_path / "r", data=tmp_path) == 2
    assert "v2_OpenEnded_mscoco_val2014_questions.json" in capsys.readouterr().err


def test_vae_for_a_task_without_masks_is_an_error(env, tmp_path, capsys):
    (tmp_path / "vae.npz").write_bytes(b"")
    assert _eval(env, tmp_path / "r", "--vae", str(tmp_path / "vae.npz")) == 2
    assert "does not use --vae" in capsys.readouterr().err


def test_failed_images_are_counted_and_the_run_goes_on(env, tmp_path, capsys):
    assert _eval(env, tmp_path, task="tinyqa") == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_examples"] == 7 and results["num_failed"] == 1
    assert results["failed_ids"] == ["102"]
    bad = [r for r in _lines(tmp_path / "predictions.jsonl") if "error" in r]
    assert [r["id"] for r in bad] == ["102"] and "img_002.jpg" in bad[0]["error"]
    assert "7 examples, 1 failed" in capsys.readouterr().out


def test_rerun_with_other_split_or_checkpoint_refuses(env, vqa_run, tmp_path, capsys):
    before = (vqa_run / "predictions.jsonl").read_text()
    other = fx.write_checkpoint(tmp_path / "other.npz", seed=3)
    argv = ["eval", "--task", "vqav2", "--data", str(env["vqa"]), "--checkpoint", str(other),
            "--tokenizer", str(fx.TOKENIZER), "--run-dir", str(vqa_run), *ARGS]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "checkpoint: saved" in err and "other.npz" in err
    assert (vqa_run / "predictions.jsonl").read_text() == before


def test_int8_weights_are_a_run_of_their_own(env, vqa_run, tmp_path, capsys):
    """--weights int8 evaluates (same ids, every example scored), records itself in
    config.json, and a float run directory refuses to be resumed with it."""
    run_dir = tmp_path / "int8"
    assert _eval(env, run_dir, "--split", "val2014", "--weights", "int8") == 0
    assert json.loads((run_dir / "config.json").read_text())["weights"] == "int8"
    assert json.loads((vqa_run / "config.json").read_text())["weights"] is None
    rows = _lines(run_dir / "predictions.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in _lines(vqa_run / "predictions.jsonl"))
    assert not any("error" in r for r in rows)
    capsys.readouterr()
    assert _eval(env, vqa_run, "--split", "val2014", "--weights", "int8") == 2
    assert "weights: saved None, now 'int8'" in capsys.readouterr().err
    # Replicated over two CPU devices (the products' accelerator path): the same predictions.
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "pgbench.cli", "eval", "--task", "vqav2", "--data", str(env["vqa"]),
           "--split", "val2014", "--checkpoint", str(env["ckpt"]), "--tokenizer", str(fx.TOKENIZER),
           "--run-dir", str(two), "--no-progress", "--weights", "int8", *ARGS]
    res = subprocess.run(cmd, env=_subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(_lines(two / "predictions.jsonl"), key=key) == sorted(rows, key=key)


def test_checkpoint_replaced_at_the_same_path_is_not_resumed_into(env, vqa_run, tmp_path):
    """config.json records fingerprints of the checkpoint's and tokenizer's bytes; a resume
    whose checkpoint path is the same but whose bytes are not is refused."""
    from pgbench import fingerprint, rundir
    from pgbench.evaluation import IDENTITY_KEYS

    saved = json.loads((vqa_run / "config.json").read_text())
    assert saved["inputs"] == fingerprint.inputs(saved["checkpoint"], saved["tokenizer"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(saved))
    assert rundir.check_config(run, saved, IDENTITY_KEYS)
    other = fx.write_checkpoint(tmp_path / "other.npz", seed=3)
    now = {**saved, "inputs": fingerprint.inputs(other, saved["tokenizer"])}  # same path, other bytes
    with pytest.raises(rundir.RunDirError, match="inputs: saved"):
        rundir.check_config(run, now, IDENTITY_KEYS)
    (run / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "inputs"}))
    assert rundir.check_config(run, now, IDENTITY_KEYS)  # written before fingerprints: resumes


# ---------------------------------------------------------------------------------------
# Slow: a real SIGKILL, and 8 host devices


def _subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**env, "PYTHONPATH": str(REPO_ROOT), **extra}


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_without_recomputing(env, tmp_path):
    data = fx.write_vqav2(tmp_path / "data", n=30)
    base = [sys.executable, "-m", "pgbench.cli", "eval", "--task", "vqav2", "--data", str(data),
            "--checkpoint", str(env["ckpt"]), "--tokenizer", str(fx.TOKENIZER), "--no-progress",
            "--batch-size", "2", "--max-new-tokens", "4", "--threads", "1"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*base, "--run-dir", str(killed)], env=_subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    preds = killed / "predictions.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if preds.is_file() and len(preds.read_bytes().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {json.loads(x)["id"] for x in preds.read_bytes().split(b"\n")[:-1]}
    assert 4 <= len(kept) < 30

    rerun = subprocess.run([*base, "--run-dir", str(killed)], env=_subprocess_env(),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["num_decoded_this_run"] == 30 - len(kept)

    whole = tmp_path / "whole"
    full = subprocess.run([*base, "--run-dir", str(whole)], env=_subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    uninterrupted = json.loads((whole / "results.json").read_text())
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["num_examples"] == uninterrupted["num_examples"] == 30
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(_lines(preds), key=key) == sorted(_lines(whole / "predictions.jsonl"), key=key)


@pytest.mark.slow
def test_eight_host_devices_give_the_one_device_predictions(env, vqa_run, tmp_path):
    """Batch 3 is rounded up to 8 and split over 8 CPU devices; predictions are identical."""
    run_dir = tmp_path / "eight"
    cmd = [sys.executable, "-m", "pgbench.cli", "eval", "--task", "vqav2", "--data",
           str(env["vqa"]), "--split", "val2014", "--checkpoint", str(env["ckpt"]),
           "--tokenizer", str(fx.TOKENIZER), "--run-dir", str(run_dir), "--no-progress", *ARGS]
    res = subprocess.run(cmd, env=_subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    config = json.loads((run_dir / "config.json").read_text())
    assert len(config["devices"]) == 8
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(_lines(run_dir / "predictions.jsonl"), key=key) == sorted(
        _lines(vqa_run / "predictions.jsonl"), key=key)
