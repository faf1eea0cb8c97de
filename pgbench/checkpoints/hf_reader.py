"""Reading a Hugging Face PaliGemma directory (``config.json`` + safetensors, single or
sharded) lazily, under big_vision names.

The safetensors headers give every name, dtype and shape up front, and
``HFCheckpoint.read(bv_key)`` assembles one big_vision array (all its layers) from the
file bytes, so a loader converting key by key never holds the checkpoint twice.
Names and layouts come from ``hf_mapping``; the config from ``hf_config``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pgbench.checkpoints import hf_mapping as hm
from pgbench.checkpoints.aligned import aligned_empty
from pgbench.checkpoints.bigvision_layout import expected_shapes, shape_mismatches
from pgbench.checkpoints.flat import ParamSource
from pgbench.checkpoints.hf_config import config_from_hf, top_fields
from pgbench.checkpoints.safetensors_io import TensorInfo, read_header, read_tensor_into
from pgbench.config import PaliGemmaConfig
from pgbench.errors import CheckpointError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


class HFCheckpoint(ParamSource):
    """Lazy view of an HF directory under big_vision names (a ``ParamSource``: ``keys()``,
    ``shapes()``, ``dtypes()``, ``read(key)``, ``close()``); ``cfg`` is its config."""

    fresh = True  # every read() is a new buffer the caller may keep or change

    def __init__(self, path: str | Path, *, family: str | None = None,
                 options: Mapping[str, Any] | None = None):
        self.path = Path(path)
        src = str(self.path)
        if not self.path.is_dir():
            raise CheckpointError(f"{src}: no such Hugging Face checkpoint directory")
        cfg_path = self.path / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"{cfg_path}: missing (a Hugging Face checkpoint needs config.json)")
        try:
            config = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
        top = top_fields(config, str(cfg_path))
        found = self._scan_files()
        if top.get("tie_word_embeddings", "bool", True) is False or \
                top.section("text_config").get("tie_word_embeddings", "bool", True) is False:
            raise CheckpointError(f"{cfg_path}: tie_word_embeddings is false; PaliGemma ties the "
                                  "output layer to the token embedding and pgbench supports only that")
        # Tied: transformers ignores a stored lm_head, and so do we.
        found.pop(hm.LM_HEAD, None)
        if top.section("vision_config").get("vision_use_head", "bool", True):
            for k in [k for k in found if k.startswith(hm.VISION_HEAD)]:
                del found[k]  # the SigLIP pooling head, unused by PaliGemma
        self.config = config
        self.cfg: PaliGemmaConfig = config_from_hf(config, {k: v.shape for k, v in found.items()},
                                                   source=src, family=family, options=options)
        self._validate(found)
        self._found = found
        self._sources: dict[str, list[hm.Entry]] = defaultdict(list)
        for e in hm.hf_entries(self.cfg):
            self._sources[e.bv].append(e)
        self._shapes = expected_shapes(self.cfg)

    def _scan_files(self) -> dict[str, TensorInfo]:
        index = self.path / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: not a safetensors index with a 'weight_map' ({e})") from None
            if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
                raise CheckpointError(f"{index}: 'weight_map' must map tensor names to shard file names")
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (self.path / f).is_file()]
            if missing:
                raise CheckpointError(f"{index}: shard file(s) missing from {self.path}: {', '.join(missing)}")
        elif (self.path / SINGLE).is_file():
            weight_map, files = None, [SINGLE]
        else:
            raise CheckpointError(f"{self.path}: no {SINGLE} and no {INDEX}")
        found: dict[str, TensorInfo] = {}
        for fname in files:
            for name, info in read_header(self.path / fname).items():
                canon = hm.canonical_name(name)
                if canon in found:
                    raise CheckpointError(f"{self.path}: tensor {canon!r} stored twice "
                                          f"({found[canon].file.name}:{found[canon].name}, {fname}:{name})")
                found[canon] = info
        if weight_map is not None:
            lost = [k for k, f in weight_map.items()
                    if hm.canonical_name(k) not in found or found[hm.canonical_name(k)].file.name != f]
            if lost:
                raise CheckpointError(f"{index}: tensors listed but not found in their shard: "
                                      + ", ".join(f"{k} ({weight_map[k]})" for k in lost[:10])
                                      + (f" and {len(lost) - 10} more" if len(lost) > 10 else ""))
        return found

    def _validate(self, found: Mapping[str, TensorInfo]) -> None:
        problems = shape_mismatches(hm.expected_hf_shapes(self.cfg), {k: v.shape for k, v in found.items()},
                                    noun="tensors", label=lambda k: f"{k} ({found[k].file.name})")
        if problems:
            raise CheckpointError(f"{self.path} does not fit the model its config.json describes "
                                  f"({self.cfg.llm.family}, vision {self.cfg.vision.image_size}px, "
                                  f"LLM width {self.cfg.llm.width} x {self.cfg.llm.depth} layers): "
                                  + problems)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def dtypes(self) -> dict[str, np.dtype]:
        return {k: self._found[es[0].hf].dtype for k, es in self._sources.items()}

    def keys(self) -> list[str]:
        return sorted(self._shapes)

    def read(self, key: str) -> np.ndarray:
        """One big_vision array, assembled layer by layer from the HF tensors."""
        if key not in self._sources:
            raise CheckpointError(f"{self.path}: no big_vision key {key!r} in this checkpoint")
        entries = self._sources[key]
        shape = self._shapes[key]
        # Stack the tensors in their HF layout and view the stack in big_vision's: no
        # transpose is copied, and the model keeps the HF [out, in] memory as it is.
        lead = len(entries[0].index)
        first = self._found[entries[0].hf]
        out = aligned_empty((*shape[:lead], *first.shape), first.dtype)
        for e in entries:
            info = self._found[e.hf]
            if info.dtype != first.dtype:
                raise CheckpointError(f"{info.file}: tensor {info.name!r} is {info.dtype}, but "
                                      f"{first.name!r} of the same big_vision array {key!r} is {first.dtype}")
            read_tensor_into(info, out[e.index])
        return hm.from_hf(out, entries[0].kind, shape)

    def close(self) -> None:
        pass


def read_hf_dir(path: str | Path, *, family: str | None = None,
                options: Mapping[str, Any] | None = None) -> tuple[dict[str, np.ndarray], PaliGemmaConfig]:
    """A Hugging Face PaliGemma directory -> (flat big_vision dict, config)."""
    ck = HFCheckpoint(path, family=family, options=options)
    return {k: ck.read(k) for k in ck.keys()}, ck.cfg
