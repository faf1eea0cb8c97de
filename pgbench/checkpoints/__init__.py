"""Checkpoint I/O: big_vision ``.npz`` and Hugging Face directories, read into the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pgbench.config import PaliGemmaConfig
from pgbench.errors import CheckpointError
from pgbench.checkpoints.bigvision_npz import NpzCheckpoint, write_bigvision_npz  # noqa: F401
from pgbench.checkpoints.infer import infer_config


class _Streaming(dict):
    """A mapping that reads each array from the file only when the model builder takes it."""

    def __init__(self, reader: NpzCheckpoint):
        super().__init__({k: None for k in reader.keys()})
        self._reader, self._shapes = reader, reader.shapes()

    def pop(self, key, *default):
        super().pop(key, *default)
        return self._reader.read(key)

    def __getitem__(self, key):
        return self._reader.read(key)

    def shapes(self):
        return dict(self._shapes)


def load_checkpoint(path: str | Path, *, family: str | None = None,
                    options: Mapping[str, Any] | None = None, dtype=None):
    """Load a big_vision ``.npz`` file or a Hugging Face directory -> (model, config).

    Tensors are read and converted one at a time, so the checkpoint never sits in memory
    twice. ``family``/``options`` supply what shapes cannot (see ``infer_config``).
    """
    from pgbench.model.params import from_bigvision_params

    path = Path(path)
    if path.is_dir():
        from pgbench.checkpoints import hf

        flat, cfg = hf.read_hf_dir(path, options=options)
        return from_bigvision_params(flat, cfg, dtype=dtype, source=str(path), consume=True), cfg
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    reader = NpzCheckpoint(path)
    try:
        cfg: PaliGemmaConfig = infer_config(reader.shapes(), family=family, options=options,
                                            source=str(path), name=path.stem)
        model = from_bigvision_params(_Streaming(reader), cfg, dtype=dtype, source=str(path), consume=True)
    finally:
        reader.close()
    return model, cfg
