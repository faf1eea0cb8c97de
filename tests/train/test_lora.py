"""LoRA transfer: step 0 is the base model, only the adapters train, the merged export is the
trained (base + adapters) model, and bad flags are one readable error."""

from __future__ import annotations

import json
import shutil

import equinox as eqx
import jax
import numpy as np
import pytest

from pgbench import lora, optim
from pgbench.checkpoints import load_checkpoint
from pgbench.checkpoints.random_params import init_params
from pgbench.config import PRESETS
from pgbench.errors import InputError
from pgbench.model import paligemma as pg
from pgbench.model.layer_forms import unstack_layers
from pgbench.train import TransferConfig, _identity, check_run_dir, lora_spec_of, run_transfer
from pgbench.train_step import LossConfig, make_train_step, split_micro_batches
from tests.train import _fixture
from tests.train.test_train_step import _batch

FWD_KEYS = ("images", "tokens", "input_mask", "mask_ar")


@jax.jit
def _logits(model, batch):
    return pg.forward(model, *(batch[k] for k in FWD_KEYS))[0]


def _tiny():
    cfg = PRESETS["pg1-tiny"]
    return cfg, init_params(cfg, jax.random.key(1))


@pytest.mark.parametrize("stacked", [True, False])
def test_at_init_the_adapted_model_is_the_base_model_exactly(stacked):
    cfg, model = _tiny()
    if not stacked:
        model = eqx.tree_at(lambda m: m.llm.blocks, model, unstack_layers(model.llm.blocks))
    adapted = lora.attach(model, lora.make_spec(4), jax.random.key(0))
    batch = _batch(cfg, 2, 12)
    np.testing.assert_array_equal(np.asarray(_logits(adapted, batch)), np.asarray(_logits(model, batch)))
    # The A matrices are random (the test can fail if B were not zero): a nonzero B changes it.
    a = adapted.llm.blocks.lora["q"].a if stacked else adapted.llm.blocks[0].lora["q"].a
    assert float(np.std(np.asarray(a))) > 0
    bumped = jax.tree.map(lambda x: x + 0.1, eqx.filter(adapted, lora.trainable_mask(adapted)))
    assert not np.allclose(_logits(eqx.combine(bumped, adapted), batch), _logits(model, batch), atol=1e-3)


def test_only_adapters_train_and_carry_optimizer_state():
    cfg, model = _tiny()
    adapted = lora.attach(model, lora.make_spec(2, alpha=4.0, targets=["q,v", "down"]), jax.random.key(0))
    trainable, frozen = eqx.partition(adapted, lora.trainable_mask(adapted))
    names = optim.param_names(trainable)
    assert sorted(names) == sorted(f"llm/blocks/lora/{t}/{p}" for t in ("q", "v", "down") for p in "ab")
    trainable = jax.tree.map(lambda a: a.copy(), trainable)  # the step donates its input
    tx, sched = optim.bigvision_optimizer(trainable, lr=1e-2, wd=1e-3, total_steps=4)
    opt_state = tx.init(trainable)
    step_fn = make_train_step(tx, sched, lr=1e-2, lcfg=LossConfig(), seed=0)
    batch = split_micro_batches(_batch(cfg, 4, 12), 4)
    for s in range(3):
        trainable, opt_state, _ = step_fn(trainable, frozen, opt_state, batch, s)
    # (d) Adam's mu and nu for each adapter array and nothing else.
    state = [a for a in jax.tree.leaves(opt_state) if a.ndim > 0]
    want_shapes = sorted(a.shape for a in jax.tree.leaves(trainable))
    assert sorted(a.shape for a in state) == sorted(want_shapes * 2)
    # (c) The base is bit-unchanged; every B moved off zero (A moves too, once B is nonzero).
    after = optim.param_names(eqx.combine(trainable, frozen))
    for name, before in optim.param_names(model).items():
        np.testing.assert_array_equal(np.asarray(after[name]), np.asarray(before), err_msg=name)
    for t in ("q", "v", "down"):
        assert np.abs(np.asarray(after[f"llm/blocks/lora/{t}/b"])).max() > 0, t


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _fixture.setup(tmp_path_factory.mktemp("lora"))


def _cfg(files, run_dir, **kw):
    base = dict(run_dir=str(run_dir), steps=4, lr=3e-2, batch=4, hparams="paper", progress=False,
                ckpt_every=2, remat=None, family="gemma1", lora_rank=4, lora_alpha=8.0)
    return TransferConfig(**{**files, **base, **kw})


def _val_batch(files):
    from pgbench.batching import make_batch
    from pgbench.task import load_task
    from pgbench.tokenizer import Tokenizer

    exs = load_task("tinycolours", files["tasks_dir"]).examples(files["data"], "val")
    return make_batch(Tokenizer(files["tokenizer"]), [(f"{files['data']}/{e.image}", e.prefix) for e in exs],
                      image_size=56, max_len=16)


def test_merged_export_is_the_trained_base_plus_adapters(files, tmp_path):
    summary = run_transfer(_cfg(files, tmp_path / "run"), log=lambda *a: None)
    export = summary["export"]
    base, _ = load_checkpoint(files["checkpoint"], family="gemma1")
    merged, _ = load_checkpoint(export["bigvision_npz"], family="gemma1")
    adapters = np.load(export["lora_npz"])
    assert float(adapters["scale"]) == 2.0 and int(adapters["rank"]) == 4
    # The unmerged trained model: the base with the trained adapters attached, merged per
    # layer inside the jitted forward (as in training).
    spec = lora.make_spec(4, alpha=8.0)
    unmerged = lora.attach(base, spec, jax.random.key(0))
    for t in lora.TARGETS:
        ad = lora.Adapter(a=adapters[f"{t}/a"], b=adapters[f"{t}/b"])
        unmerged = eqx.tree_at(lambda m: m.llm.blocks.lora[t], unmerged, ad)
    batch = _val_batch(files)
    got, want, before = (np.asarray(_logits(m, batch)) for m in (merged, unmerged, base))
    # float32: the export merged eagerly, the forward merges under jit (other fusion order).
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got - before).max() > 1e-2  # training changed the model
    # Merged weights against an independent float64 merge; everything not adapted is the base.
    b_names, m_names = optim.param_names(base), optim.param_names(merged)
    for name, w in b_names.items():
        t = name.rsplit("/", 1)[-1]
        if name.startswith("llm/blocks/") and t in lora.TARGETS:
            want_w = np.asarray(w, np.float64) + 2.0 * np.matmul(adapters[f"{t}/b"].astype(np.float64),
                                                                 adapters[f"{t}/a"].astype(np.float64))
            np.testing.assert_allclose(m_names[name], want_w, rtol=1e-6, atol=1e-7, err_msg=name)
            assert not np.array_equal(m_names[name], w), name
        else:
            np.testing.assert_array_equal(m_names[name], w, err_msg=name)
    # lora.npz applied to the base gives the exported weights; the HF export holds them too.
    applied = optim.param_names(lora.apply_npz(base, export["lora_npz"]))
    hf, _ = load_checkpoint(export["hf_dir"])
    for name, w in m_names.items():
        np.testing.assert_allclose(applied[name], w, rtol=1e-6, atol=1e-7, err_msg=name)
        np.testing.assert_array_equal(optim.param_names(hf)[name], w, err_msg=name)
    # lora.npz is in Hugging Face's layout: layer l's <target> weight += scale * b[l] @ a[l].
    from safetensors.numpy import load_file

    tensors = {k: v for f in sorted((tmp_path / "run" / "export" / "hf").glob("*.safetensors"))
               for k, v in load_file(f).items()}
    for t, hf_name in lora.HF_NAMES.items():
        part = "mlp" if t in ("gate", "up", "down") else "self_attn"
        (key,) = [k for k in tensors if k.endswith(f"language_model.model.layers.1.{part}.{hf_name}.weight")]
        want_w = np.asarray(b_names[f"llm/blocks/{t}"][1], np.float64) + 2.0 * (
            adapters[f"{t}/b"][1].astype(np.float64) @ adapters[f"{t}/a"][1].astype(np.float64))
        np.testing.assert_allclose(tensors[key], want_w, rtol=1e-6, atol=1e-7, err_msg=key)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["resolved"]["lora"] == {"rank": 4, "alpha": 8.0, "scale": 2.0, "targets": list(lora.TARGETS)}
    assert config["resolved"]["trained_params"] == sum(adapters[k].size for k in adapters.files if "/" in k)


@pytest.mark.slow  # two short training runs (~30 s on a shared 2-core CPU)
def test_resumed_lora_run_is_bit_identical(files, tmp_path):
    run = tmp_path / "run"
    run_transfer(_cfg(files, run), log=lambda *a: None)
    shutil.copy(run / "export" / "lora.npz", tmp_path / "whole.npz")
    # As if killed after the step-2 checkpoint: the rerun resumes there.
    shutil.rmtree(run / "checkpoints" / "4")
    shutil.rmtree(run / "export")
    (run / "summary.json").unlink()
    logs = []
    run_transfer(_cfg(files, run), log=logs.append)
    assert any("resuming" in m and "at step 2" in m for m in logs), logs
    a, b = np.load(tmp_path / "whole.npz"), np.load(run / "export" / "lora.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_bad_lora_flags_are_one_readable_error(files, tmp_path):
    for rank in (0, -2):
        with pytest.raises(InputError, match="--lora-rank must be a positive integer"):
            lora.make_spec(rank)
    with pytest.raises(InputError, match=r"--lora-targets 'qkv' is not a projection; use any of q, k, v"):
        lora.parse_targets(["q", "qkv"])
    with pytest.raises(InputError, match="--lora-alpha must be a positive"):
        lora.make_spec(4, alpha=0.0)
    with pytest.raises(InputError, match="need --lora-rank"):
        lora.make_spec(None, targets=["q"])
    assert lora.parse_targets(["o,mlp"]) == ("attn_out", "gate", "up", "down")
    with pytest.raises(InputError, match="--freeze does not combine with --lora-rank"):
        lora_spec_of(_cfg(files, tmp_path / "r", freeze=("img",)))
    # LoRA settings are part of what a resume must repeat.
    run = tmp_path / "run"
    check_run_dir(run, _identity(_cfg(files, run)))
    (run / "config.json").write_text(json.dumps(_identity(_cfg(files, run))))
    with pytest.raises(Exception, match="lora_rank: saved 4, now 8"):
        check_run_dir(run, _identity(_cfg(files, run, lora_rank=8)))


def test_cli_bad_rank_exits_2_before_writing(files, tmp_path, capsys):
    from pgbench.cli import main

    run = tmp_path / "run"
    argv = ["transfer", "--task", "tinycolours", "--data", files["data"], "--checkpoint", files["checkpoint"],
            "--tokenizer", files["tokenizer"], "--run-dir", str(run), "--tasks-dir", files["tasks_dir"][0],
            "--family", "gemma1", "--no-progress"]
    assert main([*argv, "--lora-rank", "0"]) == 2
    assert "--lora-rank must be a positive integer, got 0" in capsys.readouterr().err
    assert main([*argv, "--lora-rank", "4", "--lora-targets", "q,proj"]) == 2
    assert "--lora-targets 'proj'" in capsys.readouterr().err
    assert not run.exists()
