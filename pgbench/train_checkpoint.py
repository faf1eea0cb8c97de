"""Training checkpoints with Orbax: atomic, every N steps, the last K kept, resumable.

A checkpoint ``<run_dir>/checkpoints/<step>/`` holds the trained parameters (by name), the
optimizer state (its leaves in order) and the data iterator's state (JSON). Sharded arrays
are written by each device's shard and read back into the shards of the restoring mesh. Orbax writes
each into a temporary directory and renames it when complete, so a directory left by a kill
mid-write is never listed as a checkpoint (and is removed at the next start). Frozen
parameters are not saved: they are the pretrained checkpoint's, loaded again on resume.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from pgbench import optim
from pgbench.errors import PgbenchError

CHECKPOINTS = "checkpoints"


class CheckpointSpaceError(PgbenchError):
    """Too little disk for one training checkpoint."""


def state_bytes(tree) -> int:
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(tree) if hasattr(a, "dtype"))


def check_disk(run_dir: Path, trainable, opt_state) -> None:
    """Error before training when the run directory's disk cannot hold one checkpoint."""
    need = state_bytes(trainable) + state_bytes(opt_state)
    free = shutil.disk_usage(run_dir).free
    if free < need * 1.1 + (64 << 20):
        raise CheckpointSpaceError(f"{run_dir}: {free / 2**30:.2f} GiB free, one training checkpoint "
                                   f"needs {need / 2**30:.2f} GiB; free space or pick another --run-dir")


def _flat(trainable, opt_state) -> dict[str, Any]:
    return {"params": optim.param_names(trainable),
            "opt": {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(opt_state))}}


def _sharding(a):
    return a.sharding if isinstance(a, jax.Array) else None


class TrainCheckpoints:
    """Save and restore (trained params, optimizer state, data iterator state)."""

    def __init__(self, run_dir: Path, *, keep: int):
        self.dir = Path(run_dir).resolve() / CHECKPOINTS
        self.manager = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=False, cleanup_tmp_directories=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def path(self, step: int) -> Path:
        return self.dir / str(step)

    def save(self, step: int, trainable, opt_state, data_state: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_flat(trainable, opt_state)),
            data=ocp.args.JsonSave(data_state)), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, trainable, opt_state):
        """-> (trainable, opt_state, data_state) of ``step``; the given trees are templates
        (their structure, shapes, dtypes and shardings: each array is read straight into the
        shards the template's array has, whatever mesh the checkpoint was saved from)."""
        template = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=_sharding(a)),
                                _flat(trainable, opt_state))
        got = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template), data=ocp.args.JsonRestore()))
        params, opt = got["state"]["params"], got["state"]["opt"]
        names = optim.name_tree(trainable)
        trainable = jax.tree.map(lambda n: params[n], names)
        treedef = jax.tree.structure(opt_state)
        opt_state = jax.tree.unflatten(treedef, [opt[k] for k in sorted(opt)])
        return trainable, opt_state, dict(got["data"])

    def close(self) -> None:
        self.manager.close()
