"""benchmarks.transfer_memory: the compiled step's memory figures against independent counts
and against a real step's measured resident memory.

- Arguments: XLA's argument bytes must equal, to the byte, the parameters (counted from the
  big_vision checkpoint layout, ``expected_shapes``) in their dtype + two float32 Adam moments
  per trained parameter + the optimizer's two int32 step counters + the batch + the step.
- A real step: the executable compiled from abstract inputs, run on real arrays in a fresh
  process, raises the process's resident high-water mark over what was resident before it
  (its arguments) by the compiled temporaries and non-donated outputs, within
  [0.95 x, 1.15 x + 64 MiB]: the XLA-CPU runtime allocates some memory of its own outside
  its buffer assignment (measured: +55 MiB at pg1-tiny micro-batch 32, +95 MiB = 9 % on the
  131M train-mid config), and a step that missed its activations or gradients would fall
  below the floor.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import transfer_memory as tm
from pgbench.checkpoints.bigvision_layout import expected_shapes
from pgbench.config import get_preset
from tests.test_benchmarks import _run

MIB = 2**20


def _within_tolerance(check: dict) -> None:
    predicted, measured = check["predicted_rise_bytes"], check["measured_rise_bytes"]
    assert 0.95 * predicted <= measured <= 1.15 * predicted + 64 * MIB, (
        f"measured {measured / MIB:.1f} MiB vs compiled {predicted / MIB:.1f} MiB")


@pytest.mark.parametrize("option, dtype_bytes, trained_prefix", [
    ("full-f32", 4, ("img/", "llm/")), ("freeze-img-bf16", 2, ("llm/",))])
def test_arguments_are_parameters_adam_moments_and_batch(option, dtype_bytes, trained_prefix):
    cfg = get_preset("pg1-tiny")
    shapes = expected_shapes(cfg)
    params = sum(int(np.prod(s)) for s in shapes.values())
    trained = sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith(trained_prefix))
    m, t, r = 2, 64, cfg.image_size
    batch = m * r * r * 3 * 4 + m * t * (3 * 4 + 1)  # images f32, three int32 masks/tokens, one bool
    row = tm.step_memory(cfg, tm.options()[option], micro_batch=m, text_len=t)
    assert (row["params"], row["trainable_params"]) == (params, trained)
    assert row["argument_bytes"] == params * dtype_bytes + 2 * 4 * trained + 2 * 4 + batch + 4
    assert row["peak_bytes"] == (row["argument_bytes"] + row["output_bytes"] - row["alias_bytes"]
                                 + row["temp_bytes"])
    assert row["temp_bytes"] >= trained * dtype_bytes  # the gradient is a temporary
    assert row["other_bytes"] == row["peak_bytes"] - row["params_bytes"] - row["grads_bytes"] - row["opt_state_bytes"]


def test_lora_step_trains_the_adapters_counted_by_hand():
    """pg1-tiny, --lora-rank 16: width 64, 4 query heads and 1 KV head of 16, MLP 128, 2
    layers; adapters r x (in + out) on q 64+64, k and v 64+16 each, attn_out 64+64, gate and
    up 64+128 each, down 128+64. Only they train (float32, two Adam moments each); the base
    stays in the arguments in its own dtype."""
    cfg = get_preset("pg1-tiny")
    n = 2 * 16 * ((64 + 64) + 2 * (64 + 16) + (64 + 64) + 2 * (64 + 128) + (128 + 64))
    assert n == 31744 == tm.lora_adapter_params(cfg, 16)
    base = sum(int(np.prod(s)) for s in expected_shapes(cfg).values())
    row = tm.step_memory(cfg, tm.options(16)["lora-r16-bf16"], micro_batch=1, text_len=64)
    assert (row["trainable_params"], row["params"]) == (n, base + n)
    assert (row["grads_bytes"], row["opt_state_bytes"]) == (4 * n, 8 * n + 8)
    batch = cfg.image_size**2 * 3 * 4 + 64 * 13
    assert row["argument_bytes"] == 2 * base + 4 * n + 8 * n + 8 + batch + 4


def test_quick_run_writes_tables_and_its_real_step_matches_the_compiled_figure(tmp_path):
    _run("benchmarks.transfer_memory", "--quick", "--out", str(tmp_path / "mem"))
    res = json.loads((tmp_path / "mem.json").read_text())
    assert res["machine"]["jax"] and {r["option"] for r in res["rows"]} == {"full-f32", "lora-r16-bf16"}
    assert all(r["peak_bytes"] > r["params_bytes"] for r in res["rows"])
    _within_tolerance(res["check"])
    text = (tmp_path / "mem.md").read_text()
    assert "| pg1-tiny | full-f32 | 1 |" in text and "## Check: a real step measured" in text


@pytest.mark.slow
def test_real_step_matches_the_compiled_figure_at_131m_params():
    _within_tolerance(tm.measure_in_subprocess("train-mid", "full-f32", 2, 64))
