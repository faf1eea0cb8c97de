"""ParamSource: in-memory dicts, random parameters and readers build the same model."""

from __future__ import annotations

import numpy as np
import pytest

from pgbench.checkpoints import load_checkpoint, write_bigvision_npz
from pgbench.checkpoints.bigvision_layout import expected_shapes, from_bigvision_params, to_bigvision_params
from pgbench.checkpoints.flat import ArrayDict, ParamSource, as_source
from pgbench.checkpoints.random_params import RandomParams, fan_in, random_param
from pgbench.config import PRESETS


def test_array_dict_lends_or_gives():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    lent = ArrayDict({"x": a})
    assert not lent.fresh and lent.read("x") is a and lent.shapes() == {"x": (2, 3)}
    mine = {"x": a}
    given = ArrayDict(mine, give=True)
    assert given.fresh and given.read("x") is a and mine == {}
    assert given.shapes() == {"x": (2, 3)} and given.dtypes() == {"x": np.dtype(np.float32)}
    assert as_source(given) is given and isinstance(as_source({"x": a}), ParamSource)


def test_random_params_are_per_name_and_order_free():
    """Each parameter has its own stream: reading in any order, in any process, gives the
    same values (the benchmarks' transformers process relies on it)."""
    cfg = PRESETS["pg2-tiny"]
    r = RandomParams(cfg, seed=3)
    keys = r.keys()
    forward = {k: r.read(k) for k in keys}
    backward = {k: RandomParams(cfg, seed=3).read(k) for k in reversed(keys)}
    for k in keys:
        np.testing.assert_array_equal(forward[k], backward[k])
    assert not np.array_equal(RandomParams(cfg, seed=4).read(keys[0]), forward[keys[0]])
    assert r.shapes() == expected_shapes(cfg) and set(r.dtypes().values()) == {np.dtype(np.float32)}


@pytest.mark.parametrize("name, shape, fan", [
    ("img/Transformer/encoderblock/MultiHeadDotProductAttention_0/out/kernel", (2, 4, 8, 32), 32),
    ("llm/layers/attn/attn_vec_einsum/w", (2, 4, 16, 64), 64),
    ("llm/layers/attn/q_einsum/w", (2, 4, 64, 16), 64),
    ("llm/layers/mlp/gating_einsum", (2, 2, 64, 128), 64),
    ("llm/layers/mlp/linear", (2, 128, 64), 128),
    ("img/embedding/kernel", (14, 14, 3, 32), 588),
    ("llm/embedder/input_embedding", (1000, 64), 64),
])
def test_fan_in_counts_every_contracted_axis(name, shape, fan):
    """Output projections contract over heads and head_dim: fan-in H * hd (the benchmarks
    once used hd alone); the draws have std 1/sqrt(fan-in)."""
    assert fan_in(name, shape) == fan
    x = random_param(name, shape)
    assert x.dtype == np.float32 and abs(x.std() * np.sqrt(fan) - 1) < 0.1


def test_small_scales_for_biases_norms_and_positions():
    for name in ("img/head/bias", "llm/final_norm/scale", "img/pos_embedding"):
        assert abs(random_param(name, (1, 256, 64)).std() / 0.02 - 1) < 0.1


def test_every_source_builds_the_same_model(tmp_path):
    """RandomParams straight into the builder, the same values as a dict, and as an .npz
    read back by load_checkpoint give bit-identical parameters."""
    cfg = PRESETS["pg1-tiny"]
    direct = to_bigvision_params(from_bigvision_params(RandomParams(cfg, 1), cfg))
    src = RandomParams(cfg, 1)
    flat = {k: src.read(k) for k in src.keys()}
    for k, v in to_bigvision_params(from_bigvision_params(dict(flat), cfg)).items():
        np.testing.assert_array_equal(v, direct[k], err_msg=k)
    write_bigvision_npz(RandomParams(cfg, 1), tmp_path / "r.npz")
    model, _ = load_checkpoint(tmp_path / "r.npz", family="gemma1")
    for k, v in to_bigvision_params(model).items():
        np.testing.assert_array_equal(v, flat[k], err_msg=k)
