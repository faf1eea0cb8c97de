"""The safetensors file format, read and written one tensor at a time.

A file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
byte range) and the raw little-endian tensor bytes.

Why not the ``safetensors`` library (it is a dependency, and the tests use it as the
independent reader): its ``safe_open(...).get_tensor`` returns a fresh copy of each
tensor and keeps the file mapped while open, and ``save_file`` takes every tensor of a
file at once. Reading a 512 MiB stack of four 128 MiB float32 tensors into one buffer grew
RSS by 1024 MiB with one ``safe_open`` handle, by 640 MiB with one handle per tensor, and
by 512 MiB reading each tensor's bytes straight into the destination buffer as done here
(``/proc/self/statm`` sampled after each tensor). A checkpoint's largest single tensor,
the token embedding (2.1 GB in a 3B float32 model), would sit in memory twice, and
writing through ``save_file`` would hold a whole shard (5 GB by default) at once.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from pgbench.checkpoints.aligned import aligned_empty
from pgbench.errors import CheckpointError

DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
          "BF16": np.dtype(ml_dtypes.bfloat16), "F64": np.dtype(np.float64)}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 2**20


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: ``file``, its ``name`` there, dtype, shape, absolute byte range."""

    file: Path
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Every tensor's dtype, shape and absolute byte range; checks the file is complete."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > _MAX_HEADER:
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
            if not all(isinstance(x, int) and x >= 0 for x in (*shape, start, end)):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors header entry for tensor {name!r}") from None
        if dtype_name not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype_name}; "
                                  f"expected one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype_name]
        if end - start != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} spans {end - start} bytes, but "
                                  f"{dtype_name}{list(shape)} needs {math.prod(shape) * dtype.itemsize}")
        if base + end > size:
            raise CheckpointError(f"{path}: truncated: tensor {name!r} ends at byte {base + end}, "
                                  f"the file has {size} bytes")
        out[name] = TensorInfo(path, name, dtype, shape, base + start, base + end)
    return out


def read_tensor_into(info: TensorInfo, out: np.ndarray) -> None:
    """Fill the C-contiguous ``out`` (``info``'s shape and dtype) with the tensor's bytes."""
    buf = out.reshape(-1).view(np.uint8)
    with open(info.file, "rb") as f:
        f.seek(info.start)
        if f.readinto(buf) != buf.nbytes:
            raise CheckpointError(f"{info.file}: truncated while reading tensor {info.name!r}")


def read_tensor(info: TensorInfo) -> np.ndarray:
    """One tensor in a fresh 64-byte aligned array."""
    out = aligned_empty(info.shape, info.dtype)
    read_tensor_into(info, out)
    return out


def write_header(f: BinaryIO, entries: list[tuple[str, np.dtype, tuple[int, ...]]]) -> None:
    """The header for tensors that follow in this order (the caller writes their bytes)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries:
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    f.write(struct.pack("<Q", len(raw)) + raw)


def write_tensor(f: BinaryIO, x: np.ndarray) -> None:
    """The raw bytes of one tensor, in the order ``write_header`` listed them."""
    f.write(np.ascontiguousarray(x).reshape(-1).view(np.uint8))
