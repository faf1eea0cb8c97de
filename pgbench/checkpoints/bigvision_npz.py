"""big_vision ``.npz`` checkpoints: a zip of ``.npy`` members named by parameter path.

Members are read one at a time (never the whole archive at once). bfloat16 members
are stored by numpy as raw 2-byte void arrays (``|V2``) and reinterpreted here.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Iterator

import ml_dtypes
import numpy as np

from pgbench.errors import CheckpointError

_UNSCANNED = re.compile(r"^img/Transformer/encoderblock_(\d+)/(.*)$")


class NpzCheckpoint:
    """Lazy reader: ``shapes()`` from the member headers, ``read(key)`` one array at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such checkpoint file")
        try:
            self._npz = np.load(self.path, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise CheckpointError(f"{self.path}: not a readable .npz archive ({e})") from None
        if not isinstance(self._npz, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{self.path}: a single .npy array, not an .npz archive of parameters")
        self._prefix = "params/" if all(k.startswith("params/") for k in self._npz.files) else ""
        self._shapes = {k[len(self._prefix):]: self._header_shape(k) for k in self._npz.files}
        self._unscanned = self._find_unscanned()

    def _header_shape(self, member: str) -> tuple[int, ...]:
        try:
            with self._npz.zip.open(member + ".npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if major == 1
                               else np.lib.format.read_array_header_2_0)
                shape, _, _ = read_header(f)
            return tuple(shape)
        except Exception as e:
            raise CheckpointError(f"{self.path}: member {member!r} is damaged ({e})") from None

    def _find_unscanned(self) -> dict[str, list[str]]:
        """Group ``encoderblock_<i>/...`` members (an unscanned ViT) by their stacked name."""
        groups: dict[str, dict[int, str]] = {}
        for k in self._shapes:
            m = _UNSCANNED.match(k)
            if m:
                groups.setdefault(f"img/Transformer/encoderblock/{m.group(2)}", {})[int(m.group(1))] = k
        return {name: [idx[i] for i in sorted(idx)] for name, idx in groups.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes under big_vision's stacked names (unscanned ViT layers counted as stacked)."""
        out = {k: s for k, s in self._shapes.items() if not _UNSCANNED.match(k)}
        for name, members in self._unscanned.items():
            out[name] = (len(members), *self._shapes[members[0]])
        return out

    def _read_member(self, key: str) -> np.ndarray:
        try:
            arr = self._npz[self._prefix + key]
        except Exception as e:
            raise CheckpointError(f"{self.path}: member {key!r} cannot be read ({e}); the file may be truncated") from None
        if arr.dtype.kind == "V" and arr.dtype.itemsize == 2:
            arr = arr.view(ml_dtypes.bfloat16)
        return arr

    def read(self, key: str) -> np.ndarray:
        if key in self._unscanned:
            return np.stack([self._read_member(m) for m in self._unscanned[key]])
        if key not in self._shapes:
            raise CheckpointError(f"{self.path}: no member {key!r}")
        return self._read_member(key)

    def keys(self) -> list[str]:
        return sorted(self.shapes())

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for k in self.keys():
            yield k, self.read(k)

    def close(self) -> None:
        self._npz.close()


def write_bigvision_npz(flat: dict[str, np.ndarray], path: str | Path) -> None:
    """Write a flat dict as big_vision does (plain ``np.savez``; bfloat16 as raw ``|V2``)."""
    arrays = {k: (v.view("V2") if v.dtype == ml_dtypes.bfloat16 else v)
              for k, v in ((k, np.asarray(v)) for k, v in flat.items())}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
