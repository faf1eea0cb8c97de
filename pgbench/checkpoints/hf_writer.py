"""Writing a transformers ``PaliGemmaForConditionalGeneration`` directory, one tensor at a time."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from pgbench.checkpoints import hf_mapping as hm
from pgbench.checkpoints.bigvision_layout import check_keys
from pgbench.checkpoints.flat import ParamSource, as_source
from pgbench.checkpoints.hf_config import config_to_hf
from pgbench.checkpoints.hf_reader import INDEX, SINGLE
from pgbench.checkpoints.safetensors_io import DTYPE_NAMES, write_header, write_tensor
from pgbench.config import PaliGemmaConfig
from pgbench.errors import CheckpointError

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' default "5GB"
_TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def write_hf_dir(flat: ParamSource | Mapping[str, np.ndarray], cfg: PaliGemmaConfig, path: str | Path, *,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[Path]:
    """Write big_vision-named parameters as a transformers PaliGemma directory; returns the files.

    ``flat`` may be a lazy ``ParamSource``: each big_vision array is read once per shard
    it lands in and sliced into its per-layer HF tensors, so memory holds one array and
    one tensor at a time. Above ``max_shard_bytes`` the tensors go to
    ``model-0000i-of-0000n.safetensors`` shards with a ``model.safetensors.index.json``.
    """
    path = Path(path)
    src = as_source(flat)
    shapes = src.shapes()
    check_keys(shapes, cfg, "parameters to write")
    dtypes = src.dtypes()
    for k, dt in dtypes.items():
        if np.dtype(dt) not in DTYPE_NAMES:
            raise CheckpointError(f"parameters to write: {k!r} has dtype {dt}; "
                                  "expected float32, float16 or bfloat16")
    want = hm.expected_hf_shapes(cfg)
    entries = hm.hf_entries(cfg)
    first = {}
    for i, e in enumerate(entries):
        first.setdefault(e.bv, i)
    entries.sort(key=lambda e: first[e.bv])  # grouped by big_vision key: each array fetched once
    shards: list[list[hm.Entry]] = [[]]
    size = 0
    for e in entries:
        nbytes = math.prod(want[e.hf]) * np.dtype(dtypes[e.bv]).itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += nbytes
    path.mkdir(parents=True, exist_ok=True)
    n = len(shards)
    names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    written = []
    current_key, current = None, None
    for fname, shard in zip(names, shards):
        target = path / fname
        with open(target, "wb") as f:
            write_header(f, [(e.hf, np.dtype(dtypes[e.bv]), want[e.hf]) for e in shard])
            for e in shard:
                if e.bv != current_key:
                    current = None  # drop the previous array before fetching the next
                    current_key, current = e.bv, np.asarray(src.read(e.bv))
                write_tensor(f, hm.to_hf(current[e.index], e.kind))
        written.append(target)
    current = None
    if n > 1:
        total = sum(math.prod(want[e.hf]) * np.dtype(dtypes[e.bv]).itemsize for e in entries)
        index = {"metadata": {"total_size": total},
                 "weight_map": {e.hf: fname for fname, shard in zip(names, shards) for e in shard}}
        (path / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        written.append(path / INDEX)
    elif (path / INDEX).exists():
        os.remove(path / INDEX)  # a stale index would point transformers at missing shards
    emb_dtype = _TORCH_DTYPE[DTYPE_NAMES[np.dtype(dtypes["llm/embedder/input_embedding"])]]
    (path / "config.json").write_text(json.dumps(config_to_hf(cfg, emb_dtype), indent=2) + "\n")
    written.append(path / "config.json")
    return written
