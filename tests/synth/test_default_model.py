"""The default model: its pre-training mixture, its random start, and a smoke run of
`make eval`'s default (the shipped default_model/ on a few examples of two families)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pgbench.synth import generate, mixture, small_model
from pgbench.task import load_task

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = Path(os.environ.get("PGBENCH_DEFAULT_MODEL", ROOT / "default_model"))
TINY_TOKENIZER = ROOT / "tests" / "fixtures" / "tiny_tokenizer"


def test_mixture_holds_each_family_through_its_adapter(tmp_path):
    synth = tmp_path / "synth"
    families = ["vqav2", "docvqa", "rsvqa_lr", "detection"]
    generate.generate(synth, seed=3, sizes={"train": 3, "val": 1, "test": 1}, family_names=families,
                      image_size=48, with_chance=False)
    counts = mixture.write_mixture(synth, tmp_path / "mix", exclude=["rsvqa_lr"])
    assert set(counts) == {"vqav2", "docvqa", "detection"}
    jsonl = load_task("jsonl")
    mixed = jsonl.examples(tmp_path / "mix", "train", jsonl.resolve_options({}))
    assert len(mixed) == sum(counts.values())
    by_id = {e.id: e for e in mixed}
    manifest = json.loads((synth / "manifest.json").read_text())
    for family in counts:
        fam = manifest["families"][family]
        task = load_task(fam["task"])
        own = task.examples(synth / fam["data"], fam["splits"]["train"][0], task.resolve_options(fam["options"]))
        assert len(own) == counts[family]
        for ex in own:
            m = by_id[f"{family}/{ex.id}"]
            assert m.prefix == ex.prefix and m.train_targets == ex.train_targets
            assert (tmp_path / "mix" / m.image).resolve() == (synth / fam["data"] / ex.image).resolve()


def test_mixture_reads_a_larger_training_split_from_its_own_folder(tmp_path):
    from pgbench.errors import InputError

    small, big = tmp_path / "small", tmp_path / "big"
    generate.generate(small, seed=3, sizes={"train": 2, "val": 1, "test": 1}, family_names=["vqav2", "detection"],
                      image_size=48, with_chance=False)
    generate.generate(big, seed=3, sizes={"train": 5, "val": 0, "test": 0}, family_names=["detection"],
                      image_size=48, with_chance=False)
    counts = mixture.write_mixture(small, tmp_path / "mix", larger={"detection": big})
    assert counts["detection"] == 5 and counts["vqav2"] == 2 * 3  # three questions per VQA image
    jsonl = load_task("jsonl")
    mixed = {e.id: e for e in jsonl.examples(tmp_path / "mix", "train", jsonl.resolve_options({}))}
    det = [e for i, e in mixed.items() if i.startswith("detection/")]
    assert len(det) == 5 and all((tmp_path / "mix" / e.image).resolve().is_relative_to(big.resolve()) for e in det)
    # same seed: the larger split starts with the smaller one's examples
    small_det = mixture.mixture_lines(small, tmp_path / "mix")["detection"]
    assert [tuple(r["suffix"]) for r in small_det] == [tuple(mixed[r["id"]].train_targets) for r in small_det]
    with pytest.raises(InputError, match="cococap"):
        mixture.write_mixture(small, tmp_path / "mix2", larger={"cococap": big})


def test_mixture_refuses_an_unknown_held_out_family(tmp_path):
    from pgbench.errors import InputError

    generate.generate(tmp_path / "s", seed=0, sizes={"train": 1, "val": 1, "test": 1},
                      family_names=["vqav2"], image_size=48, with_chance=False)
    with pytest.raises(InputError, match="nope"):
        mixture.write_mixture(tmp_path / "s", tmp_path / "m", exclude=["nope"])


def test_stage2_mixture_repeats_the_upweighted_family_to_its_share(tmp_path):
    from pgbench.errors import InputError

    synth = tmp_path / "synth"
    generate.generate(synth, seed=1, sizes={"train": 4, "val": 1, "test": 1},
                      family_names=["vqav2", "textvqa", "cococap"], image_size=48, with_chance=False)
    plain = mixture.mixture_lines(synth, tmp_path / "mix")
    counts = mixture.write_mixture(synth, tmp_path / "mix", upweight={"textvqa": 0.5})
    rest = len(plain["vqav2"]) + len(plain["cococap"])
    assert counts["vqav2"] == len(plain["vqav2"]) and counts["cococap"] == len(plain["cococap"])
    copies = counts["textvqa"] // len(plain["textvqa"])
    assert counts["textvqa"] == copies * len(plain["textvqa"]) and copies == round(rest / len(plain["textvqa"]))
    assert abs(counts["textvqa"] / sum(counts.values()) - 0.5) <= len(plain["textvqa"]) / sum(counts.values())
    jsonl = load_task("jsonl")  # the adapter reads it: ids stay unique, repeats keep prompt and targets
    mixed = {e.id: e for e in jsonl.examples(tmp_path / "mix", "train", jsonl.resolve_options({}))}
    assert len(mixed) == sum(counts.values())
    for row in plain["textvqa"]:
        again = [mixed[row["id"]]] + [mixed[f"{row['id']}#{k}"] for k in range(1, copies)]
        assert all(e.prefix == row["prefix"] and list(e.train_targets) == row["suffix"] for e in again)
    # the same lines moved to another folder point at the same images
    moved = mixture.relocated(plain, tmp_path / "mix", tmp_path / "a" / "b")
    for family, rows in plain.items():
        for r, m in zip(rows, moved[family]):
            assert (tmp_path / "a" / "b" / m["image"]).resolve() == (tmp_path / "mix" / r["image"]).resolve()
            assert m["image"] != r["image"] and {**m, "image": r["image"]} == r
    for bad in ({"nope": 0.5}, {"textvqa": 1.0}, {"textvqa": 0.6, "vqav2": 0.5}):
        with pytest.raises(InputError):
            mixture.upweighted(plain, bad)


def test_random_init_is_a_gemma2_paligemma_directory_pgbench_loads(tmp_path):
    from pgbench.checkpoints import load_checkpoint
    from pgbench.checkpoints.random_params import random_param
    from pgbench.checkpoints.bigvision_layout import to_bigvision_params
    from pgbench.tokenizer import Tokenizer

    vocab = Tokenizer(TINY_TOKENIZER / "tokenizer.model", require_locseg=False).vocab_size
    cfg = small_model.small_config(vocab, vit_width=32, vit_depth=1, width=64, depth=2, heads=2,
                                   kv_heads=1, head_dim=32)
    out = small_model.write_random_init(cfg, TINY_TOKENIZER, tmp_path / "init", seed=5)
    assert (out / "tokenizer.model").is_file()
    model, loaded = load_checkpoint(out)
    g = loaded.llm
    assert (g.family, g.post_norms, g.attn_logits_softcap, g.final_logits_softcap, g.sliding_window) == \
        ("gemma2", True, 50.0, 30.0, small_model.SLIDING_WINDOW)
    assert g.num_kv_heads < g.num_heads and loaded.num_image_tokens == 64 and g.vocab_size == vocab
    flat = to_bigvision_params(model)  # weights: random_params' draws for seed 5
    for key in ("img/embedding/kernel", "llm/layers/mlp/linear"):
        np.testing.assert_array_equal(np.asarray(flat[key]), random_param(key, flat[key].shape, (5,)))
    # the token embedding: the draws, except the 1024 <loc> rows, which carry a position code
    emb = np.asarray(flat["llm/embedder/input_embedding"])
    drawn = random_param("llm/embedder/input_embedding", emb.shape, (5,))
    tok = Tokenizer(TINY_TOKENIZER / "tokenizer.model", require_locseg=False)
    assert tok.has_locseg  # else the <loc> rows below would be checked on nothing
    loc = np.asarray(tok.locseg.loc)
    other = np.setdiff1d(np.arange(emb.shape[0]), loc)
    np.testing.assert_array_equal(emb[other], drawn[other])
    np.testing.assert_allclose(emb[loc], small_model.sincos_locations(loc.size, emb.shape[1]), atol=1e-6)
    # image positions: a 2-D sine-cosine code over the 8 x 8 patch grid
    pos = np.asarray(flat["img/pos_embedding"])
    np.testing.assert_allclose(pos.reshape(64, -1), small_model.sincos_2d(8, pos.shape[-1]), atol=1e-6)
    # norms start as the identity: ViT LayerNorm scale 1, Gemma RMSNorm (1 + scale) scale 0
    np.testing.assert_array_equal(np.asarray(flat["img/Transformer/encoderblock/LayerNorm_0/scale"]), 1.0)
    np.testing.assert_array_equal(np.asarray(flat["img/Transformer/encoder_norm/scale"]), 1.0)
    np.testing.assert_array_equal(np.asarray(flat["llm/layers/post_ffw_norm/scale"]), 0.0)
    np.testing.assert_array_equal(np.asarray(flat["img/head/bias"]), 0.0)


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="default_model/ is built by `make default-model`")
def test_default_eval_smoke_writes_table_and_run_dirs(tmp_path):
    from pgbench.synth import default_eval, model_card

    rows = default_eval.run(SHIPPED, tmp_path / "data", tmp_path / "eval", limit=2,
                            families=["vqav2", "rsvqa_lr"], batch_size=2)
    assert [r["family"] for r in rows] == ["vqav2", "rsvqa_lr"]
    shipped = json.loads((SHIPPED / default_eval.MANIFEST).read_text())["families"]
    for r in rows:
        run = tmp_path / "eval" / r["family"]
        assert (run / "predictions.jsonl").is_file() and (run / "results.json").is_file()
        assert r["examples"] == 2 and r["failed"] == 0
        assert r["chance"] == shipped[r["family"]]["chance"]["score"]
        assert json.loads((run / "results.json").read_text())["metrics"][shipped[r["family"]]["chance"]["metric"]] == r["score"]
    assert rows[1]["held_out"]
    table = (tmp_path / "eval" / default_eval.TABLE_MD).read_text()
    assert "| vqav2 |" in table and "held out of pre-training" in table and "2 of " in table
    card = model_card.render(SHIPPED, tmp_path / "eval")
    assert default_eval.table_markdown(rows, 2).strip() in card


def test_default_eval_int8_weights_run_through_pgbench_eval(tmp_path):
    from pgbench.synth import default_eval

    rows = default_eval.run(SHIPPED, tmp_path / "data", tmp_path / "eval", limit=2,
                            families=["vqav2"], batch_size=2, weights="int8")
    assert rows[0]["examples"] == 2 and rows[0]["failed"] == 0
    assert json.loads((tmp_path / "eval" / "vqav2" / "config.json").read_text())["weights"] == "int8"
    assert "(int8 decoder weights)" in (tmp_path / "eval" / default_eval.TABLE_MD).read_text()


def test_sincos_2d_codes_each_patch_by_its_row_and_column():
    width, grid = 32, 5
    code = small_model.sincos_2d(grid, width)
    assert code.shape == (grid * grid, width)
    omega = 1.0 / 10000.0 ** (np.arange(8) / 7)
    row, col = 3, 1  # patch 3 * grid + 1 in row-major order
    expect = np.concatenate([np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)])
    np.testing.assert_allclose(code[row * grid + col], expect, rtol=1e-6, atol=1e-6)
    assert len({tuple(np.round(r, 5)) for r in code}) == grid * grid  # every patch distinct
    with pytest.raises(ValueError, match="divisible by 4"):
        small_model.sincos_2d(2, 30)


def test_sincos_locations_unit_rows_near_bins_similar_far_bins_not():
    rows = small_model.sincos_locations(1024, 128)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    sim = rows @ rows.T
    assert sim[500, 501] > 0.95 and sim[500, 510] > sim[500, 540] and abs(sim[100, 900]) < 0.2


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="default_model/ is built by `make default-model`")
def test_eval_data_from_an_older_generator_is_rewritten(tmp_path):
    from pgbench.synth import default_eval

    shipped = default_eval.read_model_manifest(SHIPPED)
    data = tmp_path / "data"
    have = default_eval.ensure_eval_data(shipped, data, ["textvqa"], SHIPPED / "vae.npz")
    assert have["generator_version"] == generate.GENERATOR_VERSION
    stamp = (data / "manifest.json").stat().st_mtime_ns
    assert default_eval.ensure_eval_data(shipped, data, ["textvqa"], SHIPPED / "vae.npz") == have  # reused
    assert (data / "manifest.json").stat().st_mtime_ns == stamp
    old = dict(have, generator_version=generate.GENERATOR_VERSION - 1)
    (data / "manifest.json").write_text(json.dumps(old))
    again = default_eval.ensure_eval_data(shipped, data, ["textvqa"], SHIPPED / "vae.npz")
    assert again["generator_version"] == generate.GENERATOR_VERSION


def test_build_refuses_a_work_folder_from_an_older_generator(tmp_path):
    from pgbench.errors import InputError
    from pgbench.synth import default_model

    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "manifest.json").write_text(json.dumps({"generator": "pgbench synth", "seed": 0}))
    with pytest.raises(InputError, match="delete .* to rebuild from nothing"):
        default_model.check_generator(tmp_path)
    (tmp_path / "synth" / "manifest.json").write_text(json.dumps({"generator_version": generate.GENERATOR_VERSION}))
    default_model.check_generator(tmp_path)  # current: no error


def test_data_step_is_done_only_when_tokenizer_and_vae_exist_too(tmp_path):
    from pgbench.synth import default_model

    synth, tok, vae = tmp_path / "synth", tmp_path / "tokenizer", tmp_path / "vae.npz"
    synth.mkdir()
    (synth / "manifest.json").write_text("{}")  # written first; the tokenizer then failed
    assert not default_model.synth_done(synth, tok, vae)
    tok.mkdir()
    (tok / "tokenizer.model").write_bytes(b"x")
    assert not default_model.synth_done(synth, tok, vae)
    vae.write_bytes(b"x")
    assert default_model.synth_done(synth, tok, vae)


@pytest.mark.slow  # a tiny build twice (~2 min on 2 CPU cores)
def test_tiny_build_detection_first_two_stages_and_a_rerun_reuses_each_finished_step(tmp_path):
    from pgbench.checkpoints import load_checkpoint
    from pgbench.synth import default_model

    tiny = dict(vit_width=32, vit_depth=1, width=64, depth=2, heads=2, kv_heads=1, head_dim=32)
    kw = dict(steps=6, stage2_steps=4, detection_steps=3, vae_steps=2, sizes="train=100", model_kw=tiny)
    first = default_model.build(tmp_path / "model", tmp_path / "work", **kw)
    names = [s["name"] for s in first["steps"]]
    assert names[-2:] == ["stage-2 mixture", "stage 2 (pgbench transfer)"] and not any(s.get("reused") for s in first["steps"])
    two = first["steps"][-2]
    assert set(two["examples"]) == set(first["steps"][names.index("pre-training mixture")]["examples"])
    # detection alone first, from the random start, on the mixture's detection lines only
    work = tmp_path / "work"
    det_cfg = json.loads((work / "detection-first" / "config.json").read_text())
    assert det_cfg["checkpoint"].endswith("init") and first["detection_first"]["steps"] == 3
    det_lines = [json.loads(x) for x in (work / "mixture-detection" / "train.jsonl").read_text().splitlines()]
    mix_lines = [json.loads(x) for x in (work / "mixture" / "train.jsonl").read_text().splitlines()]
    assert det_lines and all(r["id"].startswith("detection/") for r in det_lines)
    assert len(det_lines) == sum(r["id"].startswith("detection/") for r in mix_lines)
    assert all((work / "mixture-detection" / r["image"]).is_file() for r in det_lines[:5])
    # stage 1 starts from its export, stage 2 from stage 1's, and the model directory holds stage 2
    stage1_cfg = json.loads((work / "pretrain" / "config.json").read_text())
    assert stage1_cfg["checkpoint"].endswith("detection-first/export/hf")
    stage2_cfg = json.loads((work / "stage2" / "config.json").read_text())
    assert stage2_cfg["checkpoint"].endswith("pretrain/export/hf") and first["stage2"]["steps"] == 4
    shipped, _ = load_checkpoint(tmp_path / "model")
    exported, _ = load_checkpoint(work / "stage2" / "export" / "hf")
    for a, b in zip(jax_leaves(shipped), jax_leaves(exported)):
        np.testing.assert_array_equal(a, b)
    again = default_model.build(tmp_path / "model", tmp_path / "work", **kw)
    reused = {s["name"]: s for s in again["steps"] if s.get("reused")}
    assert set(reused) == {names[0], names[1], "detection first (pgbench transfer)",
                           "pre-training (pgbench transfer)", "stage 2 (pgbench transfer)"}
    for s in first["steps"]:
        if s["name"] in reused:
            assert reused[s["name"]]["seconds"] == s["seconds"]  # the first run's durations
    assert again["seconds"] == round(sum(s["seconds"] for s in again["steps"]), 1)


def jax_leaves(model):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(model)]


def test_command_line_keeps_the_recipe_proportions(tmp_path, monkeypatch):
    from pgbench.synth import default_model

    seen = []
    monkeypatch.setattr(default_model, "build", lambda out, work, **kw: seen.append(kw) or {"seconds": 0})
    default_model.main(["--out", str(tmp_path / "m")])
    default_model.main(["--out", str(tmp_path / "m"), "--steps", "90", "--tiny"])
    default_model.main(["--out", str(tmp_path / "m"), "--steps", "90", "--stage2-steps", "0", "--detection-steps", "0"])
    assert [kw["steps"] for kw in seen] == [default_model.STEPS, 90, 90]
    for key, default in (("stage2_steps", default_model.STAGE2_STEPS), ("detection_steps", default_model.DETECTION_STEPS)):
        assert seen[0][key] == default
        assert seen[1][key] == round(90 * default / default_model.STEPS) > 0
        assert seen[2][key] == 0
