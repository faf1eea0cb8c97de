"""Checkpoint I/O: big_vision ``.npz`` and Hugging Face directories, read into the model.

Every reader is a ``ParamSource`` (``flat.py``): big_vision-named arrays handed out one
at a time. ``bigvision_layout`` turns them into the model and back.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping

from pgbench.errors import CheckpointError
from pgbench.checkpoints.bigvision_layout import from_bigvision_params, to_bigvision_params  # noqa: F401
from pgbench.checkpoints.bigvision_npz import NpzCheckpoint, write_bigvision_npz  # noqa: F401
from pgbench.checkpoints.flat import ArrayDict, ParamSource  # noqa: F401
from pgbench.checkpoints.hf_reader import HFCheckpoint, read_hf_dir  # noqa: F401
from pgbench.checkpoints.hf_writer import write_hf_dir  # noqa: F401
from pgbench.checkpoints.infer import expected_shapes, infer_config, validate  # noqa: F401


def open_checkpoint(path: str | Path, *, family: str | None = None,
                    options: Mapping[str, Any] | None = None) -> tuple[ParamSource, Any]:
    """A lazy reader (a ``ParamSource``) and its config, for either format."""
    path = Path(path)
    if path.is_dir():
        reader = HFCheckpoint(path, family=family, options=options)
        return reader, reader.cfg
    reader = NpzCheckpoint(path)
    try:
        cfg = infer_config(reader.shapes(), family=family, options=options, source=str(path), name=path.stem)
    except Exception:
        reader.close()
        raise
    return reader, cfg


def load_checkpoint(path: str | Path, *, family: str | None = None,
                    options: Mapping[str, Any] | None = None, dtype=None, stacked: bool = True,
                    mesh=None):
    """Load a big_vision ``.npz`` file or a Hugging Face directory -> (model, config).

    Tensors are read and converted one at a time, so the checkpoint never sits in memory
    twice. ``family``/``options`` supply what shapes cannot (see ``infer_config``).
    ``stacked=False`` holds the layers one block each: the faster form for inference
    (``pgbench predict`` and ``parity`` load it); keep the default for training.
    ``mesh`` (a ``pgbench.sharding`` mesh): each tensor goes straight onto its shards as the
    sharding table places it, so a model larger than one device's memory never sits whole
    on one device.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    reader, cfg = open_checkpoint(path, family=family, options=options)
    placement = None
    if mesh is not None:
        from pgbench.sharding import param_sharding
        placement = functools.partial(param_sharding, mesh=mesh)
    try:
        model = from_bigvision_params(reader, cfg, dtype=dtype, source=str(path), stacked=stacked,
                                      sharding=placement)
    finally:
        reader.close()
    return model, cfg
