"""big_vision ``.npz`` checkpoints: a zip of ``.npy`` members named by parameter path.

Members are read one at a time (never the whole archive at once). bfloat16 members
are stored by numpy as raw 2-byte void arrays (``|V2``) and reinterpreted here.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Mapping

import ml_dtypes
import numpy as np

from pgbench.checkpoints.aligned import aligned_empty
from pgbench.checkpoints.flat import ParamSource, as_source
from pgbench.errors import CheckpointError

_UNSCANNED = re.compile(r"^img/Transformer/encoderblock_(\d+)/(.*)$")
_CHUNK = 16 * 2**20
# What parameters may be stored as (float16/32/64, and bfloat16 as raw |V2).
_FLOAT_KINDS = "f"
_ZIP_MAGIC = b"PK"
_NPY_MAGIC = b"\x93NUMPY"


def _load_npz(path: Path, error: type[Exception]):
    """``np.load`` of an archive, or ``error``: a file that is neither a zip nor a .npy
    would make numpy suggest unpickling it, which is never the fix for a checkpoint."""
    with open(path, "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if not (magic.startswith(_ZIP_MAGIC) or magic == _NPY_MAGIC):
        raise error(f"{path}: not a readable .npz archive (it starts with {magic[:4]!r}, "
                    "not with a zip signature)")
    return np.load(path, allow_pickle=False)


def read_npz_arrays(path: str | Path, *, error: type[Exception] = CheckpointError,
                    missing_hint: str = "") -> dict[str, np.ndarray]:
    """Every array of a small ``.npz`` file (reference cases, the VQ-VAE), eagerly.

    A missing or unreadable file raises ``error`` naming the path (``missing_hint`` says
    what the file should have been).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: missing{f' ({missing_hint})' if missing_hint else ''}")
    try:
        with _load_npz(path, error) as f:
            return {k: f[k] for k in f.files}
    except error:
        raise
    except Exception as e:  # zipfile, format and CRC errors come in many types
        raise error(f"{path}: not a readable .npz archive ({e})") from None


class NpzCheckpoint(ParamSource):
    """Lazy reader (a ``ParamSource``): ``shapes()`` from the member headers, ``read(key)``
    one array at a time into a fresh aligned buffer."""

    fresh = True

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such checkpoint file")
        try:
            self._npz = _load_npz(self.path, CheckpointError)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise CheckpointError(f"{self.path}: not a readable .npz archive ({e})") from None
        if not isinstance(self._npz, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{self.path}: a single .npy array, not an .npz archive of parameters")
        self._prefix = "params/" if all(k.startswith("params/") for k in self._npz.files) else ""
        self._dtypes: dict[str, np.dtype] = {}
        self._shapes = {k[len(self._prefix):]: self._header_shape(k) for k in self._npz.files}
        self._unscanned = self._find_unscanned()

    def _header_shape(self, member: str) -> tuple[int, ...]:
        try:
            with self._npz.zip.open(member + ".npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if major == 1
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
            if dtype.kind == "V" and dtype.itemsize == 2:
                dtype = np.dtype(ml_dtypes.bfloat16)
        except Exception as e:
            raise CheckpointError(f"{self.path}: member {member!r} is damaged ({e})") from None
        if dtype.kind not in _FLOAT_KINDS and dtype != ml_dtypes.bfloat16:
            raise CheckpointError(f"{self.path}: member {member!r} has dtype {dtype}; parameters are "
                                  "float32, float16 or bfloat16 (raw |V2)")
        self._dtypes[member[len(self._prefix):]] = dtype
        return tuple(shape)

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

    def dtypes(self) -> dict[str, np.dtype]:
        """Stored dtypes under the names of ``shapes()`` (bfloat16 for raw ``|V2``)."""
        out = {k: d for k, d in self._dtypes.items() if not _UNSCANNED.match(k)}
        for name, members in self._unscanned.items():
            out[name] = self._dtypes[members[0]]
        return out

    def _read_member(self, key: str, out: np.ndarray | None = None) -> np.ndarray:
        """Stream one member into ``out`` (or a fresh aligned array) in chunks; the zip
        layer checks the member's CRC when the last chunk is read."""
        try:
            with self._npz.zip.open(self._prefix + key + ".npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if major == 1
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                if dtype.kind == "V" and dtype.itemsize == 2:
                    dtype = np.dtype(ml_dtypes.bfloat16)  # big_vision's raw bfloat16
                if dtype.hasobject:
                    raise ValueError("object arrays are not parameters")
                if fortran:
                    shape = shape[::-1]
                if out is None:
                    out = aligned_empty(shape, dtype)
                elif out.shape != tuple(shape) or out.dtype != dtype:
                    raise ValueError(f"{dtype}{list(shape)} does not fit {out.dtype}{list(out.shape)}")
                buf = out.reshape(-1).view(np.uint8)
                pos = 0
                while pos < buf.size:
                    chunk = f.read(min(_CHUNK, buf.size - pos))
                    if not chunk:
                        raise EOFError(f"member ends after {pos} of {buf.size} data bytes")
                    buf[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
                    pos += len(chunk)
                f.read(1)  # reach the end of the member so that its CRC is verified
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{self.path}: member {key!r} cannot be read ({type(e).__name__}: {e}); "
                                  "the file may be truncated or corrupt") from None
        return out.T if fortran else out

    def read(self, key: str) -> np.ndarray:
        if key in self._unscanned:
            members = self._unscanned[key]
            first = self._read_member(members[0])
            out = aligned_empty((len(members), *first.shape), first.dtype)
            out[0] = first
            del first
            for i, m in enumerate(members[1:], 1):
                out[i] = self._read_member(m)
            return out
        if key not in self._shapes:
            raise CheckpointError(f"{self.path}: no member {key!r}")
        return self._read_member(key)

    def close(self) -> None:
        self._npz.close()


def write_bigvision_npz(flat: ParamSource | Mapping[str, np.ndarray], path: str | Path) -> None:
    """Write big_vision-named parameters (a dict or a lazy ``ParamSource``) as big_vision does.

    An uncompressed zip of ``.npy`` members, exactly what ``np.savez`` produces, with
    bfloat16 stored as raw ``|V2``; written member by member, so a lazy source is never
    in memory as a whole.
    """
    src = as_source(flat)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for k in src.keys():
            v = np.asarray(src.read(k))
            if v.dtype == ml_dtypes.bfloat16:
                v = v.view("V2")
            with zf.open(k + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, v, allow_pickle=False)
            del v
