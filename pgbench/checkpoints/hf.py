"""Hugging Face PaliGemma directories: ``config.json`` + safetensors (single or sharded).

Read lazily: the safetensors headers give every name, dtype and shape up front, and
``HFCheckpoint.read(bv_key)`` assembles one big_vision array (all its layers) from the
file bytes, so a loader converting key by key never holds the checkpoint twice.

The safetensors format is parsed directly (8-byte little-endian header length, a JSON
header, raw little-endian data): numpy has no bfloat16, and reading the bytes ourselves
lets bfloat16 tensors arrive as ``ml_dtypes.bfloat16`` without torch.
Layouts and names come from ``hf_mapping``.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from pgbench.checkpoints import hf_mapping as hm
from pgbench.checkpoints.bigvision_npz import aligned_empty
from pgbench.checkpoints.infer import apply_options
from pgbench.config import GemmaConfig, PaliGemmaConfig, SigLIPConfig
from pgbench.errors import CheckpointError
from pgbench.model.params import check_keys, expected_shapes, shape_mismatches

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers' default "5GB"

_DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
           "BF16": np.dtype(ml_dtypes.bfloat16), "F64": np.dtype(np.float64)}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}

# transformers' class defaults for fields a config.json may leave out.
_TEXT_DEFAULTS = {
    "gemma": {"num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256},
    "gemma2": {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
               "query_pre_attn_scalar": 256, "sliding_window": 4096,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
}
_FAMILY = {"gemma": "gemma1", "gemma2": "gemma2"}


# ---------------------------------------------------------------------------------------
# safetensors files


class _TensorInfo:
    __slots__ = ("file", "name", "dtype", "shape", "start", "end")

    def __init__(self, file, name, dtype, shape, start, end):
        self.file, self.name, self.dtype, self.shape, self.start, self.end = file, name, dtype, shape, start, end


def read_safetensors_header(path: Path) -> dict[str, _TensorInfo]:
    """Every tensor's dtype, shape and absolute byte range; checks the file is complete."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100 * 2**20:
                raise CheckpointError(f"{path}: corrupt or truncated safetensors file "
                                      f"(header of {n} bytes, file of {size} bytes)")
            header = json.loads(f.read(n).decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such safetensors file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors header entry for tensor {name!r}") from None
        if dtype_name not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype_name}; "
                                  f"expected one of {sorted(_DTYPES)}")
        dtype = _DTYPES[dtype_name]
        if end - start != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} spans {end - start} bytes, but "
                                  f"{dtype_name}{list(shape)} needs {math.prod(shape) * dtype.itemsize}")
        if base + end > size:
            raise CheckpointError(f"{path}: truncated: tensor {name!r} ends at byte {base + end}, "
                                  f"the file has {size} bytes")
        out[name] = _TensorInfo(path, name, dtype, shape, base + start, base + end)
    return out


def _read_tensor(info: _TensorInfo) -> np.ndarray:
    out = aligned_empty(info.shape, info.dtype)
    buf = out.reshape(-1).view(np.uint8)
    with open(info.file, "rb") as f:
        f.seek(info.start)
        if f.readinto(buf) != buf.nbytes:
            raise CheckpointError(f"{info.file}: truncated while reading tensor {info.name!r}")
    return out


def _header_bytes(entries: list[tuple[str, np.dtype, tuple[int, ...]]]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries:
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


# ---------------------------------------------------------------------------------------
# config.json


def _sizes_from_tensors(found: Mapping[str, _TensorInfo], source: str) -> dict[str, int]:
    """ViT and LLM sizes that shapes reveal (heads and head_dim come from config.json)."""
    def shape(name):
        if name not in found:
            raise CheckpointError(f"{source}: missing tensor {name!r}; cannot infer the model size")
        return found[name].shape

    def depth(prefix):
        idx = {int(k[len(prefix):].split(".")[0]) for k in found
               if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()}
        if idx != set(range(len(idx))):
            missing = sorted(set(range(max(idx) + 1)) - idx)
            raise CheckpointError(f"{source}: layers {missing} missing under {prefix!r}")
        return len(idx)

    c, _, p, p_w = shape(hm.VISION + "embeddings.patch_embedding.weight")
    if p != p_w:
        raise CheckpointError(f"{source}: non-square patch kernel {p}x{p_w}")
    n = shape(hm.VISION + "embeddings.position_embedding.weight")[0]
    grid = math.isqrt(n)
    if grid * grid != n:
        raise CheckpointError(f"{source}: position_embedding has {n} rows, not a square grid")
    vocab, width = shape(hm.TEXT + "embed_tokens.weight")
    return dict(vit_width=c, patch=p, image_size=grid * p,
                vit_depth=depth(hm.VISION + "encoder.layers."),
                vit_mlp=shape(hm.VISION + "encoder.layers.0.mlp.fc1.weight")[0],
                vocab=vocab, width=width, depth=depth(hm.TEXT + "layers."),
                mlp=shape(hm.TEXT + "layers.0.mlp.gate_proj.weight")[0])


def config_from_hf(config: Mapping[str, Any], found: Mapping[str, _TensorInfo], *,
                   source: str, family: str | None = None,
                   options: Mapping[str, Any] | None = None) -> PaliGemmaConfig:
    """A PaliGemmaConfig: sizes from tensor shapes, the rest from config.json, then ``options``."""
    text, vision = config.get("text_config"), config.get("vision_config")
    if not isinstance(text, dict) or not isinstance(vision, dict):
        raise CheckpointError(f"{source}/config.json: needs 'text_config' and 'vision_config' objects "
                              "(a PaliGemmaForConditionalGeneration config)")
    mtype = text.get("model_type")
    if mtype not in _FAMILY:
        raise CheckpointError(f"{source}/config.json: text_config.model_type is {mtype!r}; "
                              f"expected 'gemma' (PaliGemma 1) or 'gemma2' (PaliGemma 2)")
    fam = _FAMILY[mtype]
    if family is not None and family != fam:
        raise CheckpointError(f"{source}: family {family!r} requested, but config.json says "
                              f"text_config.model_type={mtype!r} ({fam})")
    has_post = any(k.endswith("post_feedforward_layernorm.weight") for k in found)
    if has_post != (fam == "gemma2"):
        raise CheckpointError(f"{source}: config.json says {mtype!r}, but the weights "
                              f"{'have' if has_post else 'lack'} post_feedforward_layernorm tensors "
                              f"(Gemma 2 has them, Gemma 1 does not)")
    t = {**_TEXT_DEFAULTS[mtype], **{k: v for k, v in text.items() if v is not None or k in
                                      ("final_logit_softcapping", "attn_logit_softcapping")}}
    s = _sizes_from_tensors(found, source)
    image_size = vision.get("image_size")
    if image_size is not None and image_size != s["image_size"]:
        raise CheckpointError(f"{source}: config.json vision_config.image_size={image_size}, but the "
                              f"position embedding has {s['image_size'] // s['patch']}^2 patches of "
                              f"{s['patch']} px = {s['image_size']} px")
    rope = (text.get("rope_parameters") or {}).get("rope_theta") or text.get("rope_theta") or 10_000.0
    heads, head_dim = int(t["num_attention_heads"]), int(t["head_dim"])
    llm_kw: dict[str, Any] = {}
    if fam == "gemma2":
        scalar = t["query_pre_attn_scalar"]
        if scalar == head_dim:
            qnorm = "rsqrt_head_dim"
        elif scalar == s["width"] // heads:
            qnorm = "rsqrt_emb_per_head"
        else:
            raise CheckpointError(f"{source}/config.json: query_pre_attn_scalar={scalar} is neither "
                                  f"head_dim={head_dim} nor hidden_size/heads={s['width'] // heads}")
        layer_types = t.get("layer_types")
        if layer_types is not None:
            want = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(s["depth"])]
            if list(layer_types) != want:
                raise CheckpointError(f"{source}/config.json: layer_types {layer_types} is not the "
                                      "Gemma 2 pattern (sliding on even layers, full on odd) pgbench runs")
        llm_kw = dict(post_norms=True, query_pre_attn_norm=qnorm,
                      attn_logits_softcap=t["attn_logit_softcapping"] or None,
                      final_logits_softcap=t["final_logit_softcapping"] or None,
                      sliding_window=t["sliding_window"])
    try:
        llm = GemmaConfig(family=fam, width=s["width"], depth=s["depth"], num_heads=heads,
                          num_kv_heads=int(t["num_key_value_heads"]), head_dim=head_dim,
                          mlp_dim=s["mlp"], vocab_size=s["vocab"], rope_base=float(rope),
                          norm_eps=float(t.get("rms_norm_eps", 1e-6)), **llm_kw)
        vit = SigLIPConfig(width=s["vit_width"], depth=s["vit_depth"], mlp_dim=s["vit_mlp"],
                           num_heads=int(vision.get("num_attention_heads", 12)), patch_size=s["patch"],
                           image_size=s["image_size"],
                           layernorm_eps=float(vision.get("layer_norm_eps", 1e-6)))
    except ValueError as e:
        raise CheckpointError(f"{source}/config.json: {e}") from None
    llm = apply_options(llm, options, source)
    name = Path(source).name or "hf"
    return PaliGemmaConfig(name=name, vision=vit, llm=llm)


def config_to_hf(cfg: PaliGemmaConfig, dtype_name: str = "float32") -> dict[str, Any]:
    """A config.json that transformers (4.x and 5.x) loads as PaliGemmaForConditionalGeneration."""
    v, g = cfg.vision, cfg.llm
    text: dict[str, Any] = {
        "model_type": "gemma2" if g.family == "gemma2" else "gemma",
        "hidden_size": g.width, "intermediate_size": g.mlp_dim, "num_hidden_layers": g.depth,
        "num_attention_heads": g.num_heads, "num_key_value_heads": g.num_kv_heads,
        "head_dim": g.head_dim, "vocab_size": g.vocab_size, "rms_norm_eps": g.norm_eps,
        "rope_theta": g.rope_base,
        "rope_parameters": {"rope_theta": g.rope_base, "rope_type": "default"},
        "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
        "max_position_embeddings": 8192, "num_image_tokens": v.num_patches,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "tie_word_embeddings": True,
    }
    if g.family == "gemma2":
        text.update(
            query_pre_attn_scalar=(g.head_dim if g.query_pre_attn_norm == "rsqrt_head_dim"
                                   else g.width // g.num_heads),
            attn_logit_softcapping=g.attn_logits_softcap,
            final_logit_softcapping=g.final_logits_softcap,
            # transformers always runs a window on the local layers; 4096 is the released one.
            sliding_window=g.sliding_window or 4096,
            layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(g.depth)],
        )
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": v.width, "intermediate_size": v.mlp_dim,
        "num_hidden_layers": v.depth, "num_attention_heads": v.num_heads, "patch_size": v.patch_size,
        "image_size": v.image_size, "num_image_tokens": v.num_patches, "projection_dim": g.width,
        "layer_norm_eps": v.layernorm_eps, "hidden_act": "gelu_pytorch_tanh", "vision_use_head": False,
    }
    return {
        "architectures": ["PaliGemmaForConditionalGeneration"], "model_type": "paligemma",
        "hidden_size": g.width, "projection_dim": g.width,
        # An id past the vocabulary: transformers maps it to the image features.
        "image_token_index": g.vocab_size, "vocab_size": g.vocab_size,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "tie_word_embeddings": True,
        "dtype": dtype_name, "torch_dtype": dtype_name,
        "text_config": text, "vision_config": vision,
    }


# ---------------------------------------------------------------------------------------
# Reading


class HFCheckpoint:
    """Lazy view of an HF directory under big_vision names: ``shapes()``, ``read(key)``."""

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
        found = self._scan_files()
        if config.get("tie_word_embeddings", True) is False or \
                config.get("text_config", {}).get("tie_word_embeddings", True) is False:
            raise CheckpointError(f"{cfg_path}: tie_word_embeddings is false; PaliGemma ties the "
                                  "output layer to the token embedding and pgbench supports only that")
        # Tied: transformers ignores a stored lm_head, and so do we.
        found.pop(hm.LM_HEAD, None)
        if config.get("vision_config", {}).get("vision_use_head", True):
            for k in [k for k in found if k.startswith(hm.VISION_HEAD)]:
                del found[k]  # the SigLIP pooling head, unused by PaliGemma
        self.config = config
        self.cfg = config_from_hf(config, found, source=src, family=family, options=options)
        self._validate(found)
        self._found = found
        self._sources: dict[str, list[hm.Entry]] = defaultdict(list)
        for e in hm.hf_entries(self.cfg):
            self._sources[e.bv].append(e)
        self._shapes = expected_shapes(self.cfg)

    def _scan_files(self) -> dict[str, _TensorInfo]:
        index = self.path / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: not a safetensors index with a 'weight_map' ({e})") from None
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (self.path / f).is_file()]
            if missing:
                raise CheckpointError(f"{index}: shard file(s) missing from {self.path}: {', '.join(missing)}")
        elif (self.path / SINGLE).is_file():
            weight_map, files = None, [SINGLE]
        else:
            raise CheckpointError(f"{self.path}: no {SINGLE} and no {INDEX}")
        found: dict[str, _TensorInfo] = {}
        for fname in files:
            for name, info in read_safetensors_header(self.path / fname).items():
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

    def _validate(self, found: Mapping[str, _TensorInfo]) -> None:
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
            out[e.index] = _read_tensor(self._found[e.hf])
        return hm.from_hf(out, entries[0].kind, shape)

    def close(self) -> None:
        pass


def read_hf_dir(path: str | Path, *, family: str | None = None,
                options: Mapping[str, Any] | None = None) -> tuple[dict[str, np.ndarray], PaliGemmaConfig]:
    """A Hugging Face PaliGemma directory -> (flat big_vision dict, config)."""
    ck = HFCheckpoint(path, family=family, options=options)
    return {k: ck.read(k) for k in ck.keys()}, ck.cfg


# ---------------------------------------------------------------------------------------
# Writing


def write_hf_dir(flat: Mapping[str, np.ndarray], cfg: PaliGemmaConfig, path: str | Path, *,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[Path]:
    """Write a flat big_vision dict as a transformers PaliGemma directory; returns the files.

    ``flat`` may be lazy (anything with ``[key]``; ``shapes()``/``dtypes()`` are used when
    offered): each big_vision array is fetched once per shard it lands in and sliced into
    its per-layer HF tensors, so memory holds one array and one tensor at a time. Above
    ``max_shard_bytes`` the tensors go to ``model-0000i-of-0000n.safetensors`` shards with
    a ``model.safetensors.index.json``.
    """
    path = Path(path)
    shapes = flat.shapes() if hasattr(flat, "shapes") else {k: np.shape(v) for k, v in flat.items()}
    check_keys(shapes, cfg, "parameters to write")
    dtypes = flat.dtypes() if hasattr(flat, "dtypes") else {k: np.asarray(flat[k]).dtype for k in shapes}
    for k, dt in dtypes.items():
        if np.dtype(dt) not in _DTYPE_NAMES:
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
            f.write(_header_bytes([(e.hf, np.dtype(dtypes[e.bv]), want[e.hf]) for e in shard]))
            for e in shard:
                if e.bv != current_key:
                    current = None  # drop the previous array before fetching the next
                    current_key, current = e.bv, np.asarray(flat[e.bv])
                t = np.ascontiguousarray(hm.to_hf(current[e.index], e.kind))
                f.write(t.reshape(-1).view(np.uint8))
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
    emb_dtype = _TORCH_DTYPE[_DTYPE_NAMES[np.dtype(dtypes["llm/embedder/input_embedding"])]]
    (path / "config.json").write_text(json.dumps(config_to_hf(cfg, emb_dtype), indent=2) + "\n")
    written.append(path / "config.json")
    return written
