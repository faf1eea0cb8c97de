"""``pgbench sweep``: budgets parsing, the per-budget statistics, the report files, skipping
finished runs and resuming an interrupted sweep.

The bookkeeping tests replace the transfer run with one that writes the files run_transfer
writes (config.json, eval/results.json, summary.json) with known scores, so the statistics
can be checked against a hand computation in a fraction of a second; the end-to-end tests
(slow) train the tiny model for real."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from pgbench import sweep, sweep_report
from pgbench.errors import InputError
from pgbench.train import TransferConfig, _identity
from tests.conftest import REPO_ROOT
from tests.train import _fixture

# Known per-run scores: budget -> scores of seeds 0, 1, 2 (None: the run fails).
SCORES = {"2": [0.25, 0.5, 0.75], "3": [0.5, 0.5, 0.5], "8": [1.0, 0.0, None]}
SPLIT = 4  # the fixture's training split


def test_parse_budgets_orders_and_rejects():
    assert sweep.parse_budgets("full,4096,64, 1k,256") == ("64", "256", "1024", "4096", "full")
    for bad, match in [("64,lots", "'lots' is not a budget"), ("64,0", "'0' is not a budget"),
                       ("1k,1024", "'1024' is listed twice"), (" , ", "at least one budget")]:
        with pytest.raises(InputError, match=match):
            sweep.parse_budgets(bad)


def test_aggregate_against_hand_computation():
    runs = [{"budget": b, "seed": s, "score": v, "status": "done" if v is not None else "failed",
             "examples": min(int(b), SPLIT), "split_examples": SPLIT}
            for b, vs in SCORES.items() for s, v in enumerate(vs)]
    rows = {r["budget"]: r for r in sweep_report.aggregate(runs, ["2", "3", "8"])}
    # budget 2: mean (0.25 + 0.5 + 0.75) / 3 = 0.5; sample std sqrt((0.0625 + 0 + 0.0625) / 2) = 0.25
    assert rows["2"]["mean"] == pytest.approx(0.5, abs=1e-12)
    assert rows["2"]["std"] == pytest.approx(0.25, abs=1e-12)
    assert (rows["2"]["best"], rows["2"]["best_seed"], rows["2"]["n"]) == (0.75, 2, 3)
    assert rows["3"]["std"] == pytest.approx(0.0, abs=1e-12) and rows["3"]["best_seed"] == 0
    # budget 8: the failed seed is left out: mean 0.5, std sqrt((0.25 + 0.25) / 1), best seed 0
    assert rows["8"]["mean"] == pytest.approx(0.5, abs=1e-12)
    assert rows["8"]["std"] == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert (rows["8"]["n"], rows["8"]["failed"], rows["8"]["best_seed"]) == (2, 1, 0)
    assert rows["8"]["examples"] == SPLIT and "budget 8 is larger than the split (4 examples)" in rows["8"]["note"]
    assert rows["2"]["note"] is None and rows["2"]["examples"] == 2
    one = sweep_report.aggregate(runs[:1], ["2"])[0]
    assert one["std"] is None and one["mean"] == one["best"] == 0.25


def test_headline_key_and_paper_number():
    assert sweep_report.headline_key("rsvqa_accuracy", {"accuracy_overall": 0.9, "accuracy_average": 0.8,
                                                        "accuracy/presence": 0.7}) == "accuracy_average"
    assert sweep_report.headline_key("exact_match", {"note": "x", "accuracy": 0.5}) == "accuracy"
    assert sweep_report.headline_key("vqa_accuracy", {"accuracy": 0.5, "accuracy/yes/no": 0.7},
                                     "accuracy/yes/no") == "accuracy/yes/no"
    with pytest.raises(InputError, match="--metric 'cider'"):
        sweep_report.headline_key("vqa_accuracy", {"accuracy": 0.5}, "cider")
    assert sweep_report.paper_score("141.92 CIDEr Karpathy val (pt-224)") == pytest.approx(1.4192)
    assert sweep_report.paper_score("73.40 / 68.32 / 67.65 mIoU val") == pytest.approx(0.734)
    assert sweep_report.paper_score("") is None


# ---------------------------------------------------------------------------------------
# The sweep's bookkeeping, with a transfer that writes known scores


def _known_train(calls: list, stop_at: int | None = None):
    """A stand-in for run_transfer: the files it writes, with the score from SCORES."""

    def train(cfg: TransferConfig, log):
        calls.append((cfg.budget, cfg.seed))
        run = Path(cfg.run_dir)
        examples = SPLIT if cfg.budget is None else min(cfg.budget, SPLIT)
        resolved = {"examples": examples, "split_examples": SPLIT, "steps": 3}
        (run / "config.json").write_text(json.dumps({**_identity(cfg), "resolved": resolved}))
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt  # the sweep is stopped while this run trains
        score = SCORES[str(cfg.budget)][cfg.seed]
        if score is None:
            from pgbench.train import TrainingError
            raise TrainingError("loss is nan at step 2; stopped")
        (run / "eval").mkdir(exist_ok=True)
        (run / "eval" / "results.json").write_text(json.dumps({"metrics": {"accuracy": score}}))
        (run / "summary.json").write_text(json.dumps({"steps": 3, "final_loss": 0.125}))
    return train


def _zero_shot(sweep_cfg, task, log):
    return {"metrics": {"accuracy": 0.125}, "num_examples": 4}


@pytest.fixture()
def files(tmp_path):
    tasks = _fixture.write_task(tmp_path / "tasks")
    return dict(task="tinycolours", data=str(_fixture.write_data(tmp_path / "data")),
                checkpoint=str(tmp_path / "unused.npz"), tokenizer=str(_fixture.TOKENIZER),
                tasks_dir=(str(tasks.parent),))


def _sweep_cfg(files, run_dir, budgets="2,3,8", seeds=3):
    base = TransferConfig(**files, run_dir=str(run_dir), steps=3, batch=2, progress=False)
    return sweep.SweepConfig(base=base, budgets=sweep.parse_budgets(budgets), seeds=seeds, run_dir=str(run_dir))


def test_sweep_writes_table_and_plot_and_rerun_skips_finished(files, tmp_path):
    out, calls, lines = tmp_path / "sw", [], []
    report = sweep.run_sweep(_sweep_cfg(files, out), train=_known_train(calls),
                             evaluate_zero_shot=_zero_shot, log=lines.append)
    assert calls == [(b, s) for b in (2, 3, 8) for s in range(3)]
    assert sum("training in" in x for x in lines) == 9 and sum("/9] budget" in x for x in lines) == 18
    saved = json.loads((out / "sweep.json").read_text())
    assert saved == json.loads(json.dumps(report))
    rows = {r["budget"]: r for r in saved["summary"]}
    assert rows["2"]["mean"] == pytest.approx(0.5) and rows["2"]["std"] == pytest.approx(0.25)
    assert rows["8"]["failed"] == 1 and saved["zero_shot"]["score"] == 0.125 and saved["paper"] is None
    assert [r["status"] for r in saved["runs"]].count("failed") == 1
    md = (out / "sweep.md").read_text()
    assert "| 2 | 2 | 3 | 0.5000 | 0.2500 | 0.7500 | 2 |  |" in md
    assert "budget 8 is larger than the split (4 examples): all of it used; 1 run(s) not finished" in md
    assert "| 8 | 2 | – | 3 | – | failed: loss is nan at step 2; stopped | `runs/8-s2` |" in md
    png = out / "sweep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.size[0] > 400 and im.size[1] > 300

    # Again: the finished runs are read back, untouched; only the failed one trains again.
    done = out / "runs" / "2-s1" / "eval" / "results.json"
    before = (done.stat().st_mtime_ns, done.read_bytes())
    calls.clear()
    again = sweep.run_sweep(_sweep_cfg(files, out), train=_known_train(calls),
                            evaluate_zero_shot=_zero_shot, log=lines.append)
    assert calls == [(8, 2)]
    assert (done.stat().st_mtime_ns, done.read_bytes()) == before
    assert again["summary"] == report["summary"]


def test_interrupted_sweep_resumes_where_it_stopped(files, tmp_path):
    out, calls = tmp_path / "sw", []
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(_sweep_cfg(files, out, budgets="2,3", seeds=2), train=_known_train(calls, stop_at=3),
                        evaluate_zero_shot=_zero_shot, log=lambda m: None)
    partial = json.loads((out / "sweep.json").read_text())  # written after each finished run
    assert [r["status"] for r in partial["runs"]] == ["done", "done", "not finished", "not finished"]
    calls.clear()
    report = sweep.run_sweep(_sweep_cfg(files, out, budgets="2,3", seeds=2), train=_known_train(calls),
                             evaluate_zero_shot=_zero_shot, log=lambda m: None)
    assert calls == [(3, 0), (3, 1)]
    assert [r["score"] for r in report["runs"]] == [0.25, 0.5, 0.5, 0.5]


def test_a_run_dir_with_other_settings_is_refused_before_training(files, tmp_path):
    out = tmp_path / "sw"
    sweep.run_sweep(_sweep_cfg(files, out, budgets="2", seeds=1), train=_known_train([]),
                    evaluate_zero_shot=_zero_shot, log=lambda m: None)
    other = _sweep_cfg(files, out, budgets="2", seeds=1)
    other = dataclasses.replace(other, base=dataclasses.replace(other.base, lr=0.5))
    calls = []
    with pytest.raises(Exception, match="holds a run with other settings.*lr: saved None, now 0.5"):
        sweep.run_sweep(other, train=_known_train(calls), evaluate_zero_shot=_zero_shot, log=lambda m: None)
    assert calls == []


def test_cli_bad_input_is_one_line_and_exit_2(files, tmp_path, capsys):
    from pgbench.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["sweep", "--task", "tinycolours", "--data", files["data"], "--checkpoint", files["checkpoint"],
            "--tokenizer", files["tokenizer"], "--tasks-dir", files["tasks_dir"][0], "--run-dir", str(tmp_path / "r")]
    for extra, message in [(["--budgets", "64,many"], "--budgets: 'many' is not a budget"),
                           (["--seeds", "0"], "--seeds must be at least 1, got 0"),
                           (["--run-dir", str(blocker / "r")], "is not writable")]:
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pgbench sweep: error: ") and message in err[0], err


# ---------------------------------------------------------------------------------------
# End to end, training the tiny model


def _cli_args(files: dict, run_dir: Path, budgets: str, seeds: int, steps: int) -> list[str]:
    return ["sweep", "--task", "tinycolours", "--data", files["data"], "--checkpoint", files["checkpoint"],
            "--tokenizer", files["tokenizer"], "--tasks-dir", files["tasks_dir"][0], "--family", "gemma1",
            "--budgets", budgets, "--seeds", str(seeds), "--steps", str(steps), "--batch", "2", "--lr", "1e-3",
            "--remat", "none", "--no-export", "--no-progress", "--ckpt-every", "1", "--run-dir", str(run_dir)]


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    return _fixture.setup(tmp_path_factory.mktemp("sweep"))


@pytest.mark.slow  # zero-shot and two real transfer runs (~60 s on a shared 2-core CPU)
def test_real_sweep_trains_reports_and_skips_on_rerun(real_files, tmp_path, capsys):
    from pgbench.cli import main

    out = tmp_path / "sw"
    assert main(_cli_args(real_files, out, "2,8", 1, 2)) == 0
    printed = capsys.readouterr().out
    assert "[2/2] budget 8, seed 0: accuracy" in printed and "budget 8 is larger than the split" in printed
    report = json.loads((out / "sweep.json").read_text())
    assert [(r["budget"], r["examples"], r["status"]) for r in report["runs"]] == [("2", 2, "done"), ("8", 4, "done")]
    for r in report["runs"]:  # the score is the run's own final evaluation
        res = json.loads((out / r["run_dir"] / "eval" / "results.json").read_text())
        assert r["score"] == res["metrics"]["accuracy"] and res["num_examples"] == 4
    zs = json.loads((out / "zero_shot" / "results.json").read_text())
    assert report["zero_shot"]["score"] == zs["metrics"]["accuracy"]
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/**/*") if p.is_file()}
    assert main(_cli_args(real_files, out, "2,8", 1, 2)) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/**/*") if p.is_file()} == stamp


@pytest.mark.slow  # a sweep process killed inside its second run, then run again (~90 s)
def test_killed_sweep_resumes_the_interrupted_run(real_files, tmp_path):
    out = tmp_path / "sw"
    argv = [sys.executable, "-m", "pgbench.cli", *_cli_args(real_files, out, "2,3", 1, 12)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    p = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "runs" / "3-s0" / "metrics.jsonl"
    deadline = time.time() + 600
    while p.poll() is None and time.time() < deadline and (
            not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.05)
    assert p.poll() is None, "the sweep ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (out / "runs" / "2-s0" / "summary.json").is_file()
    assert not (out / "runs" / "3-s0" / "summary.json").exists()
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[1/2] budget 2, seed 0: finished earlier, skipped" in done.stdout
    assert "pgbench transfer: resuming" in done.stdout and "at step " in done.stdout
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == list(range(1, 13))
    report = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["done", "done"]
