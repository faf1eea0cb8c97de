"""Checkpoints: a run killed with SIGKILL and started again finishes bit-identical to an
uninterrupted run of the same seed; a half-written checkpoint is never loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from pgbench.train_checkpoint import TrainCheckpoints
from tests.conftest import REPO_ROOT
from tests.train import _fixture

RUNNER = "import json, sys; from pgbench.train import TransferConfig, run_transfer; " \
         "run_transfer(TransferConfig(**json.loads(sys.argv[1])))"


def _start(kw: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(kw)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(kw: dict) -> None:
    p = _start(kw)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]


def _lines(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow  # three training processes (~20 s each on a shared 2-core CPU)
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    files = _fixture.setup(tmp_path)
    base = dict(**files, steps=14, lr=3e-3, batch=4, micro_batch=2, dropout=0.1, ckpt_every=3,
                keep=2, progress=False, remat=None, family="gemma1")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _finish({**base, "run_dir": str(straight)})

    p = _start({**base, "run_dir": str(killed)})
    deadline = time.time() + 600
    while _lines(killed) < 7 and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert p.poll() is None, "the run ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert 7 <= _lines(killed) < 14
    _finish({**base, "run_dir": str(killed)})

    a = np.load(straight / "export" / "model.npz")
    b = np.load(killed / "export" / "model.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 15))
    la = [json.loads(x)["loss"] for x in (straight / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert la == lb


def test_half_written_checkpoint_is_never_loaded(tmp_path):
    params = {"w": jnp.arange(4.0)}
    opt = (jnp.zeros(4), jnp.int32(3))
    ck = TrainCheckpoints(tmp_path, keep=2)
    ck.save(2, params, opt, {"next_index": 2})
    ck.close()
    # What a kill during the save of step 4 leaves: Orbax's temporary directory, half filled.
    tmp = tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-1700000000000000"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_bytes(b"\0" * 10)
    ck = TrainCheckpoints(tmp_path, keep=2)
    assert ck.latest_step() == 2
    got_params, got_opt, data = ck.restore(2, params, opt)
    assert data == {"next_index": 2} and np.array_equal(got_params["w"], params["w"])
    assert int(got_opt[1]) == 3
    ck.close()
