"""pgbench.sharding: the mesh flag, the one parameter table, and (on 8 simulated CPU devices,
in a subprocess) the loader's placement, the Pallas kernel under shard_map and the
training step's loss curve on DP / FSDP meshes against one device."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from pgbench import optim, sharding
from pgbench.config import PRESETS
from pgbench.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _checks(*args: str, timeout: int = 600) -> str:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "tests._sharding_checks", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


# ---------------------------------------------------------------------------------------
# The --mesh flag


@pytest.mark.parametrize("spec, n, want", [
    (None, 8, {"data": 8, "fsdp": 1}),
    ("data=8", 8, {"data": 8, "fsdp": 1}),
    ("fsdp=8", 8, {"data": 1, "fsdp": 8}),
    ("data=2,fsdp=4", 8, {"data": 2, "fsdp": 4}),
    ("data=-1,fsdp=4", 8, {"data": 2, "fsdp": 4}),
    ("fsdp=-1", 4, {"data": 1, "fsdp": 4}),
])
def test_parse_mesh(spec, n, want):
    assert sharding.parse_mesh(spec, n) == want


@pytest.mark.parametrize("spec, words", [
    ("data=4", "needs 4 devices"), ("model=8", "AXIS=SIZE"), ("data=x", "not an integer"),
    ("data=0,fsdp=8", "positive"), ("data=-1,fsdp=3", "groups of 3"), ("data", "AXIS=SIZE"),
])
def test_bad_mesh_is_one_readable_error(spec, words):
    with pytest.raises(InputError, match=words):
        sharding.parse_mesh(spec, 8)


def test_make_mesh_on_this_process():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == ("data", "fsdp") and mesh.devices.size == len(jax.devices())


def test_distributed_flags_default_to_one_process():
    p = argparse.ArgumentParser()
    sharding.add_distributed_arguments(p)
    assert sharding.initialize_distributed(p.parse_args([])) == (0, 1, None)
    args = p.parse_args(["--distributed", "--coordinator", "h:1234", "--num-processes", "2",
                         "--process-id", "1"])
    assert (args.coordinator, args.num_processes, args.process_id) == ("h:1234", 2, 1)


# ---------------------------------------------------------------------------------------
# The parameter table


def _abstract_model(name: str, *, stacked: bool = True):
    """The model's parameters as shapes only (no memory): the released sizes cost nothing."""
    from pgbench.checkpoints.bigvision_layout import expected_shapes, from_bigvision_params

    cfg = PRESETS[name]
    flat = {k: jax.ShapeDtypeStruct(s, np.float32) for k, s in expected_shapes(cfg).items()}
    return jax.eval_shape(lambda f: from_bigvision_params(f, cfg, stacked=stacked), flat)


def _shapes(tree) -> dict[str, jax.ShapeDtypeStruct]:
    """optim.param_names for a tree of shapes."""
    return {optim._name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


FSDP8 = AbstractMesh((1, 8), ("data", "fsdp"))


@pytest.mark.parametrize("stacked", [True, False])
def test_every_matrix_is_split_along_the_width_and_vectors_replicated(stacked):
    cfg = PRESETS["pg2-tiny"]
    names = _shapes(_abstract_model("pg2-tiny", stacked=stacked))
    assert len(names) > 20
    for name, a in names.items():
        spec = sharding.param_spec(name, a.shape, FSDP8)
        layer = "/blocks/" in name and stacked
        if a.ndim - layer < 2:
            assert spec == P(), name
            continue
        assert spec.count("fsdp") == 1, (name, spec)
        dim = a.shape[list(spec).index("fsdp")]
        width = cfg.vision.width if name.startswith("img/") and name != "img/head_kernel" else None
        assert dim in (cfg.vision.width, cfg.llm.width), (name, a.shape, spec)
        if width is not None:
            assert dim == width, (name, a.shape, spec)
    gate = "llm/blocks/gate" if stacked else "llm/blocks/0/gate"
    assert sharding.param_spec(gate, names[gate].shape, FSDP8) == (
        P(None, None, "fsdp") if stacked else P(None, "fsdp"))


def test_no_fsdp_axis_replicates_everything():
    mesh = AbstractMesh((8, 1), ("data", "fsdp"))
    for name, a in _shapes(_abstract_model("pg1-tiny")).items():
        assert sharding.param_spec(name, a.shape, mesh) == P(), name


@pytest.mark.parametrize("preset", ["pg1-3b-224", "pg2-3b-448", "pg2-10b-224", "pg2-28b-896"])
def test_released_sizes_split_over_fsdp_16(preset):
    mesh = AbstractMesh((1, 16), ("data", "fsdp"))
    names = _shapes(_abstract_model(preset))
    specs = {n: sharding.param_spec(n, a.shape, mesh) for n, a in names.items()}
    sharded = sum(int(np.prod(names[n].shape)) for n, s in specs.items() if s != P())
    total = sum(int(np.prod(a.shape)) for a in names.values())
    assert sharded / total > 0.999, (preset, sharded / total)


def test_optimizer_state_follows_its_parameter():
    from pgbench.checkpoints.random_params import init_params

    model = init_params(PRESETS["pg1-tiny"], jax.random.key(0))
    trainable, _ = eqx.partition(model, optim.trainable_mask(model, ["img"]))
    tx, _ = optim.bigvision_optimizer(trainable, lr=1e-3, wd=1e-4, total_steps=10)
    state = jax.eval_shape(tx.init, trainable)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    moments = [(optim._name(p), x) for p, x in leaves if x.ndim]
    assert {n.split("/", 2)[-1] for n, _ in moments} == {
        n for n in optim.param_names(trainable)}
    for name, x in moments:
        param = name.split("/", 2)[-1]
        assert sharding.param_spec(name, x.shape, FSDP8) == sharding.param_spec(param, x.shape, FSDP8)
    counts = [x for p, x in leaves if not x.ndim]
    assert counts and all(sharding.param_spec(optim._name(p), x.shape, FSDP8) == P()
                          for p, x in leaves if not x.ndim)


@pytest.mark.parametrize("stacked", [True, False])
def test_lora_adapters_split_along_the_width_like_their_projections(stacked):
    from pgbench import lora

    cfg = PRESETS["pg1-tiny"]
    # Real (tiny) adapters on an abstract base.
    model = lora.attach(_abstract_model("pg1-tiny", stacked=stacked), lora.make_spec(4), jax.random.key(0))
    adapters = _shapes(eqx.filter(model, lora.trainable_mask(model)))
    assert len(adapters) == 2 * len(lora.TARGETS) * (1 if stacked else cfg.llm.depth)
    for name, a in adapters.items():
        spec = sharding.param_spec(name, a.shape, FSDP8)
        target, part = name.split("/")[-2:]
        split = (part == "a") == (target not in ("attn_out", "down"))  # the width side
        assert spec.count("fsdp") == int(split), (name, spec)
        if split:
            assert a.shape[list(spec).index("fsdp")] == cfg.llm.width, (name, a.shape, spec)


def test_indivisible_width_is_one_readable_error():
    mesh = AbstractMesh((1, 3), ("data", "fsdp"))
    with pytest.raises(InputError, match=r"llm/blocks/gate.*not divisible by --mesh fsdp=3"):
        sharding.param_spec("llm/blocks/gate", (2, 128, 64), mesh)


def test_batch_parallel_without_a_mesh_is_the_plain_call():
    assert sharding.batch_parallel(lambda x, *, y: x + y, 1, y=2) == 3


# ---------------------------------------------------------------------------------------
# 8 simulated devices (subprocesses)


def test_loader_places_each_tensor_on_its_shards():
    assert "loader ok" in _checks("loader")


def test_pallas_attention_under_shard_map_equals_one_device():
    assert "pallas ok" in _checks("pallas")


@pytest.mark.slow  # four meshes, each one compile of a training step (~60-130 s on 2 shared cores)
def test_loss_curve_on_8_devices_equals_1_device():
    # Tolerance: losses rtol 1e-5 (float32 sums in another order; measured equal to the bit),
    # parameters after 3 updates rtol 1e-4 and atol 1e-3 x lr (Adam magnifies rounding in
    # near-zero gradient elements; see _sharding_checks.train).
    out = _checks("train", "one", "data=8", "fsdp=8", "data=2,fsdp=4/pallas")
    curves = json.loads(out.strip().splitlines()[-1])
    assert len(curves) == 4 and len(set(map(len, curves.values()))) == 1
