"""pgbench.evaluation / rundir / data: the decode loop against a one-example-at-a-time
reference, the run directory, resuming, and process sharding (simulated in one process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pgbench import batching, data, decode, evaluation, images, rundir
from pgbench.checkpoints import load_checkpoint
from pgbench.task import Example, load_task
from pgbench.tokenizer import Tokenizer
from tests import _eval_fixtures as fx

MAX_NEW = 4
BATCH = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    ckpt = fx.write_checkpoint(root / "tiny.npz")
    tasks_dir = fx.write_task(root / "tasks")
    data_dir = fx.write_data(root / "data", corrupt=(4,), missing=(5,))
    task = load_task("tinyqa", [tasks_dir])
    tok = Tokenizer(fx.TOKENIZER, require_locseg=False)
    model, cfg = load_checkpoint(ckpt, stacked=False)
    return dict(root=root, ckpt=ckpt, data=data_dir, task=task, tok=tok, model=model, cfg=cfg)


def _settings(**kw):
    return evaluation.DecodeSettings(max_new_tokens=MAX_NEW, batch_size=BATCH, **kw)


def _request(env, run_dir, **kw):
    return evaluation.EvalRequest(task=env["task"], data=env["data"], checkpoint=env["ckpt"],
                                  tokenizer=fx.TOKENIZER, run_dir=run_dir,
                                  settings=kw.pop("settings", _settings()), **kw)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------
# rundir


def test_torn_last_line_is_skipped_and_cut_before_appending(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "1", "prediction": "a"}\n{"id": "2", "prediction": "b"}\n{"id": "3", "pre')
    assert [r["id"] for r in rundir.read_predictions(path)] == ["1", "2"]
    with rundir.PredictionWriter(path) as w:
        w.write([{"id": "3", "prediction": "c"}])
    assert [r["id"] for r in _lines(path)] == ["1", "2", "3"]
    # a complete JSON object without its newline is still dropped: the writer would cut it
    path.write_text('{"id": "1"}\n{"id": "2"}')
    assert [r["id"] for r in rundir.read_predictions(path)] == ["1"]


def test_bad_line_inside_a_file_names_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "1", "prediction": "a"}\nnot json\n{"id": "3", "prediction": "c"}')
    with pytest.raises(rundir.RunDirError, match="line 2 is not valid JSON"):
        rundir.read_predictions(path, strict=True)
    path.write_text('{"id": "1"}\n["x"]\n')
    with pytest.raises(rundir.RunDirError, match="line 2 is not a JSON object"):
        rundir.read_predictions(path, strict=True)
    # strict: a last line without newline is a normal line of a user's file
    path.write_text('{"id": 7, "prediction": "a"}')
    assert rundir.read_predictions(path, strict=True) == [{"id": "7", "prediction": "a"}]


def test_check_config_names_every_difference(tmp_path):
    saved = {"task": "a", "split": "val", "checkpoint": "/x.npz", "batch_size": 8}
    rundir.write_json(tmp_path / rundir.CONFIG, saved)
    keys = ("task", "split", "checkpoint")
    assert rundir.check_config(tmp_path, {**saved, "batch_size": 2}, keys)  # not identity
    with pytest.raises(rundir.RunDirError) as e:
        rundir.check_config(tmp_path, {**saved, "task": "b", "checkpoint": "/y.npz"}, keys)
    msg = str(e.value)
    assert "task: saved 'a', now 'b'" in msg and "checkpoint: saved '/x.npz', now '/y.npz'" in msg
    assert "split" not in msg.split("Differences")[1]
    assert not rundir.check_config(tmp_path / "new", saved, keys)


def test_results_markdown_flattens_nested_metrics():
    md = rundir.results_markdown({"task": "t", "split": "s", "num_examples": 3, "num_failed": 1,
                                  "metrics": {"accuracy": 0.5, "per_type": {"yes/no": 1.0}}})
    assert "| accuracy | 0.5000 |" in md and "| per_type/yes/no | 1.0000 |" in md
    assert "3 examples, 1 failed" in md


# ---------------------------------------------------------------------------------------
# data


def test_plan_batches_groups_prompts_by_padded_length():
    lengths = [5, 11, 4, 20, 7, 16, 3]
    prompts = [data.Prompt(np.zeros(n, np.int32)) for n in lengths]
    prompts[6] = data.Prompt(None, "too long")
    plan = data.plan_batches(prompts, range(7), 2, max_prompt_len=256)
    assert plan == [(8, [0, 2]), (8, [4]), (16, [1, 5]), (24, [3])]
    assert data.bucket(9, 10) == 10 and data.bucket(12, 10) == 12


def test_text_batch_matches_batching_collate(env):
    tok = env["tok"]
    exs = [batching.encode_prefix(tok, q, max_len=None) for q in fx.QUESTIONS[:3]]
    prompts = [data.Prompt(e["tokens"]) for e in exs]
    got = data.text_batch(prompts, [2, 0, 1], 16, tok.pad_id)
    want = batching.collate([exs[2], exs[0], exs[1]], pad_to=16, pad_id=tok.pad_id)
    for k in ("tokens", "input_mask", "mask_ar"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_image_stream_keeps_order_and_reports_bad_files(env):
    exs = env["task"].examples(env["data"], "val")
    got = list(data.image_stream(exs, [6, 4, 0, 5], data_dir=env["data"], image_size=16, threads=2))
    assert [g.index for g in got] == [6, 4, 0, 5]
    assert got[1].image is None and "img_004.jpg" in got[1].error
    assert got[3].image is None and "not found" in got[3].error
    np.testing.assert_array_equal(got[2].image, images.preprocess(env["data"] / "images/img_000.png", 16))


# ---------------------------------------------------------------------------------------
# generate


def _one_by_one(env, ex: Example) -> str:
    """Independent path: preprocess, encode_prefix padded to the bucket, greedy_decode of
    one example, tokenizer decode."""
    tok, cfg = env["tok"], env["cfg"]
    x = images.preprocess(env["data"] / ex.image, cfg.image_size)[None]
    n = len(batching.encode_prefix(tok, ex.prefix, max_len=None)["tokens"])
    e = batching.encode_prefix(tok, ex.prefix, max_len=data.bucket(n, 256))
    ids = decode.greedy_decode(env["model"], x, e["tokens"][None], e["input_mask"][None],
                               e["mask_ar"][None], max_new_tokens=MAX_NEW, eos_id=tok.eos_id)
    return tok.decode(np.asarray(ids)[0])


def test_generate_matches_one_example_at_a_time(env):
    exs = env["task"].examples(env["data"], "val")
    chunks = list(evaluation.generate(env["model"], env["cfg"], env["tok"], exs, _settings(),
                                      data_dir=env["data"]))
    outs = [o for c in chunks for o in c]
    assert sorted(o.index for o in outs) == list(range(len(exs)))
    failed = {o.index: o.error for o in outs if o.error}
    assert set(failed) == {4, 5} and "img_004.jpg" in failed[4]
    texts = {o.index: o.text for o in outs if not o.error}
    for i, text in texts.items():
        assert text == _one_by_one(env, exs[i]), i
    # both buckets were used: short "caption en" prompts and longer questions
    assert {data.bucket(len(batching.encode_prefix(env["tok"], exs[i].prefix, max_len=None)["tokens"]), 256)
            for i in texts} == {8, 16}
    assert all(len(c) >= 1 for c in chunks)


def test_beam_search_matches_one_example_at_a_time(env):
    """settings.beam > 1 decodes with decode.beam_decode; the best beam of each row equals a
    one-example beam search (examples 0, 2, 6: one prompt bucket, one batch)."""
    exs = env["task"].examples(env["data"], "val")
    outs = [o for c in evaluation.generate(env["model"], env["cfg"], env["tok"], exs,
                                           _settings(beam=2), data_dir=env["data"], todo=[6, 0, 2])
            for o in c]
    assert [o.index for o in outs] == [6, 0, 2]
    tok = env["tok"]
    for o in outs:
        ex = exs[o.index]
        x = images.preprocess(env["data"] / ex.image, env["cfg"].image_size)[None]
        e = batching.encode_prefix(tok, ex.prefix, max_len=8)
        ref = decode.beam_decode(env["model"], x, e["tokens"][None], e["input_mask"][None],
                                 e["mask_ar"][None], max_new_tokens=MAX_NEW, beam_size=2,
                                 eos_id=tok.eos_id)
        np.testing.assert_array_equal(o.tokens, np.asarray(ref.tokens)[0])


def test_vocabulary_mismatch_is_an_error(env):
    from pgbench.errors import InputError

    small = env["cfg"].replace_llm(vocab_size=100)
    exs = env["task"].examples(env["data"], "val")[:1]
    with pytest.raises(InputError, match="outside the model's vocabulary"):
        next(evaluation.generate(env["model"], small, env["tok"], exs, _settings(),
                                 data_dir=env["data"]))


# ---------------------------------------------------------------------------------------
# evaluate: run directory, resume, refusal, process shards


@pytest.fixture(scope="module")
def full_run(env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    return evaluation.evaluate(_request(env, run_dir), log=lambda m: None), run_dir


def test_run_directory_files(full_run, env):
    results, run_dir = full_run
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "predictions.jsonl",
                                                   "results.json", "results.md"}
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved == results
    assert saved["task"] == "tinyqa" and saved["split"] == "val"
    assert saved["num_examples"] == 7 and saved["num_failed"] == 2
    assert set(saved["metrics"]) == {"accuracy", "num_correct"}
    assert saved["seconds"] > 0 and saved["examples_per_second"] > 0
    rows = _lines(run_dir / "predictions.jsonl")
    assert sorted(r["id"] for r in rows) == [str(100 + i) for i in range(7)]
    by_id = {r["id"]: r for r in rows}
    assert by_id["104"]["error"] and by_id["104"]["prediction"] == ""
    assert by_id["100"]["prompt"] == "caption en" and by_id["100"]["references"] == ["ans0", "x"]
    assert "error" not in by_id["100"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["checkpoint"] == str(env["ckpt"].resolve()) and config["versions"]["jax"]
    assert config["options"] == {"flavour": "plain"}
    assert "| accuracy |" in (run_dir / "results.md").read_text()


def test_predictions_are_the_postprocessed_decodes(full_run, env):
    exs = {e.id: e for e in env["task"].examples(env["data"], "val")}
    rows = _lines(full_run[1] / "predictions.jsonl")
    for r in rows:
        if "error" not in r:
            assert r["prediction"] == _one_by_one(env, exs[r["id"]]).strip().lower()


def test_resume_decodes_only_what_is_missing(full_run, env, tmp_path, monkeypatch):
    """A partial predictions file (2 complete lines and a torn third): the re-run decodes
    only the other examples, and the results equal the uninterrupted run's."""
    results, full_dir = full_run
    lines = (full_dir / "predictions.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "config.json").write_text((full_dir / "config.json").read_text())
    (tmp_path / "predictions.jsonl").write_text("".join(lines[:2]) + lines[2][:15])
    seen = []
    real = evaluation.generate

    def spy(*a, todo=None, **kw):
        seen.extend(todo)
        return real(*a, todo=todo, **kw)

    monkeypatch.setattr(evaluation, "generate", spy)
    again = evaluation.evaluate(_request(env, tmp_path), log=lambda m: None)
    done_before = {json.loads(x)["id"] for x in lines[:2]}
    exs = env["task"].examples(env["data"], "val")
    assert sorted(exs[i].id for i in seen) == sorted(set(e.id for e in exs) - done_before)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "examples_per_second", "num_decoded_this_run")}  # noqa: E731
    assert strip(again) == strip(results)
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(_lines(tmp_path / "predictions.jsonl"), key=key) == sorted(_lines(full_dir / "predictions.jsonl"), key=key)
    # a third run finds everything done: nothing decoded, the model is not even loaded
    seen.clear()
    monkeypatch.setattr(evaluation, "_load_model", lambda req: pytest.fail("model loaded"))
    assert strip(evaluation.evaluate(_request(env, tmp_path), log=lambda m: None)) == strip(results)
    assert seen == []


def test_rerun_with_another_config_refuses(full_run, env, tmp_path):
    other = fx.write_checkpoint(tmp_path / "other.npz", seed=1)
    req = _request(env, full_run[1])
    req.checkpoint = other
    with pytest.raises(rundir.RunDirError, match="checkpoint: saved .*tiny.npz.*other.npz"):
        evaluation.evaluate(req, log=lambda m: None)
    req = _request(env, full_run[1], split="train")
    with pytest.raises(Exception, match="split"):
        evaluation.evaluate(req, log=lambda m: None)


def test_two_process_shards_merge_to_the_single_process_predictions(full_run, env, tmp_path):
    """Process 1 then process 0 of a 2-process run (no real barrier needed in sequence)."""
    assert evaluation.evaluate(_request(env, tmp_path), process_index=1, process_count=2,
                               log=lambda m: None) is None
    assert (tmp_path / "predictions.1.jsonl").is_file()
    results = evaluation.evaluate(_request(env, tmp_path), process_index=0, process_count=2,
                                  log=lambda m: None)
    assert not list(tmp_path.glob("predictions.*.jsonl"))
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(_lines(tmp_path / "predictions.jsonl"), key=key) == sorted(
        _lines(full_run[1] / "predictions.jsonl"), key=key)
    assert results["metrics"] == full_run[0]["metrics"]


def test_score_file_perfect_missing_and_unknown(env, tmp_path):
    from pgbench.errors import InputError

    exs = env["task"].examples(env["data"], "val")
    perfect = tmp_path / "perfect.jsonl"
    perfect.write_text("".join(json.dumps({"id": e.id, "prediction": " " + e.references[0].upper()}) + "\n"
                               for e in exs))
    res = evaluation.score_file(env["task"], env["data"], "val", perfect, run_dir=tmp_path / "r")
    assert res["metrics"]["accuracy"] == 1.0 and res["num_missing"] == 0  # post-processed
    assert json.loads((tmp_path / "r" / "results.json").read_text()) == res
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(json.dumps({"id": e.id, "prediction": e.references[0]}) + "\n"
                               for e in exs[:5]))
    res = evaluation.score_file(env["task"], env["data"], "val", partial)
    assert res["num_missing"] == 2 and res["missing_ids"] == ["105", "106"]
    assert res["metrics"]["accuracy"] == pytest.approx(5 / 7)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"id": "100", "prediction": "a"}\n{"id": "999", "prediction": "b"}\n')
    with pytest.raises(InputError, match="1 id\\(s\\) are not in tinyqa split 'val', e.g. '999'"):
        evaluation.score_file(env["task"], env["data"], "val", unknown)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "100", "prediction": "a"}\n{"id": "100", "prediction": "b"}\n')
    with pytest.raises(InputError, match="line 2 repeats id '100'"):
        evaluation.score_file(env["task"], env["data"], "val", dup)
