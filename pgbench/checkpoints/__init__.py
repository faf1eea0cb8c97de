"""Checkpoint I/O: big_vision ``.npz`` and Hugging Face directories, read into the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pgbench.errors import CheckpointError
from pgbench.checkpoints.bigvision_npz import NpzCheckpoint, write_bigvision_npz  # noqa: F401
from pgbench.checkpoints.hf import HFCheckpoint, read_hf_dir, write_hf_dir  # noqa: F401
from pgbench.checkpoints.infer import expected_shapes, infer_config, validate  # noqa: F401


class _Streaming(dict):
    """A mapping that reads each array from the file only when the model builder takes it.

    Arrays come back as the reader's (64-byte aligned, writable) numpy buffers, which the
    builder hands to ``jax.device_put`` without copying (``consume=True``).
    """

    def __init__(self, reader):
        super().__init__({k: None for k in reader.keys()})
        self._reader, self._shapes = reader, reader.shapes()

    def pop(self, key, *default):
        super().pop(key, *default)
        return self[key]

    def __getitem__(self, key):
        return self._reader.read(key)

    def shapes(self):
        return dict(self._shapes)


def open_checkpoint(path: str | Path, *, family: str | None = None,
                    options: Mapping[str, Any] | None = None):
    """A lazy reader (``shapes()``, ``read(key)``, ``keys()``) and its config, for either format."""
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
                    options: Mapping[str, Any] | None = None, dtype=None, stacked: bool = True):
    """Load a big_vision ``.npz`` file or a Hugging Face directory -> (model, config).

    Tensors are read and converted one at a time, so the checkpoint never sits in memory
    twice. ``family``/``options`` supply what shapes cannot (see ``infer_config``).
    ``stacked=False`` holds the layers one block each: the faster form for inference
    (``pgbench predict`` and ``parity`` load it); keep the default for training.
    """
    from pgbench.model.params import from_bigvision_params

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    reader, cfg = open_checkpoint(path, family=family, options=options)
    try:
        model = from_bigvision_params(_Streaming(reader), cfg, dtype=dtype, source=str(path),
                                      consume=True, stacked=stacked)
    finally:
        reader.close()
    return model, cfg
