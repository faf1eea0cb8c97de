"""big_vision .npz reading/writing: lazy members, dtypes, params/ prefix, unscanned ViT, damage."""

from __future__ import annotations

import zipfile

import ml_dtypes
import numpy as np
import pytest

from pgbench.checkpoints.bigvision_npz import NpzCheckpoint, read_npz_arrays, write_bigvision_npz
from pgbench.errors import CheckpointError
from tests.checkpoints._cases import CASES, case_checkpoint, reference_flat


@pytest.mark.parametrize("case", CASES)
def test_reads_reference_checkpoint_exactly(case):
    path, _ = case_checkpoint(case)
    ref = reference_flat(case)
    r = NpzCheckpoint(path)
    assert len(ref) == (32 if case == "pg1_tiny" else 34)  # README section 1
    assert r.shapes() == {k: v.shape for k, v in ref.items()}
    for k, v in ref.items():
        got = r.read(k)
        assert got.dtype == np.float32 and np.array_equal(got, v), k
    r.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_write_read_roundtrip_dtypes(tmp_path, dtype):
    flat = {k: v.astype(dtype) for k, v in reference_flat("pg1_tiny").items()}
    out = tmp_path / "ck.npz"
    write_bigvision_npz(flat, out)
    with np.load(out) as z:  # big_vision's on-disk convention: bfloat16 as raw 2-byte voids
        raw = z["llm/final_norm/scale"]
        assert raw.dtype == (np.dtype("V2") if dtype is ml_dtypes.bfloat16 else np.dtype(dtype))
    r = NpzCheckpoint(out)
    for k, v in flat.items():
        got = r.read(k)
        assert got.dtype == np.dtype(dtype)
        assert np.array_equal(got.view(np.uint8), v.view(np.uint8)), k  # bit-exact


def test_params_prefix_is_unwrapped(tmp_path):
    flat = reference_flat("pg2_tiny")
    out = tmp_path / "ck.npz"
    np.savez(out, **{"params/" + k: v for k, v in flat.items()})
    r = NpzCheckpoint(out)
    assert set(r.keys()) == set(flat)
    assert np.array_equal(r.read("img/head/kernel"), flat["img/head/kernel"])


def test_unscanned_vit_is_stacked(tmp_path):
    flat = reference_flat("pg1_tiny")
    enc = "img/Transformer/encoderblock/"
    unscanned = {}
    for k, v in flat.items():
        if k.startswith(enc):
            for i in range(v.shape[0]):
                unscanned[f"img/Transformer/encoderblock_{i}/{k[len(enc):]}"] = v[i]
        else:
            unscanned[k] = v
    out = tmp_path / "ck.npz"
    np.savez(out, **unscanned)
    r = NpzCheckpoint(out)
    assert r.shapes() == {k: v.shape for k, v in flat.items()}
    for k, v in flat.items():
        assert np.array_equal(r.read(k), v), k


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file") as e:
        NpzCheckpoint(tmp_path / "nope.npz")
    assert "nope.npz" in str(e.value)


def test_truncated_file(tmp_path):
    path, _ = case_checkpoint("pg1_tiny")
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.npz"):
        NpzCheckpoint(cut)


def test_not_an_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(CheckpointError, match="bad.npz"):
        NpzCheckpoint(bad)


def test_corrupt_member_names_file_and_member(tmp_path):
    flat = {"a/b": np.arange(4096, dtype=np.float32), "c": np.ones(3, np.float32)}
    out = tmp_path / "ck.npz"
    np.savez(out, **flat)
    data = bytearray(out.read_bytes())
    with zipfile.ZipFile(out) as z:
        info = z.getinfo("a/b.npy")
    # Flip bytes in the middle of the member's data: the zip's CRC check must catch it.
    pos = info.header_offset + 30 + len(info.filename) + info.file_size // 2
    data[pos:pos + 8] = b"\xff" * 8
    out.write_bytes(bytes(data))
    r = NpzCheckpoint(out)
    with pytest.raises(CheckpointError) as e:
        r.read("a/b")
    assert "ck.npz" in str(e.value) and "'a/b'" in str(e.value)


def test_unknown_key(tmp_path):
    path, _ = case_checkpoint("pg1_tiny")
    with pytest.raises(CheckpointError, match="no member 'img/nope'"):
        NpzCheckpoint(path).read("img/nope")


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.complex64])
def test_non_float_weight_is_rejected_naming_the_key(tmp_path, dtype):
    """The HF and VQ-VAE readers reject integer weights; so does this one, before any load."""
    flat = reference_flat("pg1_tiny")
    flat["llm/final_norm/scale"] = np.zeros(flat["llm/final_norm/scale"].shape, dtype)
    out = tmp_path / "ck.npz"
    np.savez(out, **flat)
    with pytest.raises(CheckpointError, match=r"ck\.npz: member 'llm/final_norm/scale' has dtype"):
        NpzCheckpoint(out)


@pytest.mark.parametrize("data", [b"", bytes(range(256)) * 40, b"\x80\x04\x95 pickle-looking"])
def test_random_bytes_do_not_suggest_pickle(tmp_path, data):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data)
    with pytest.raises(CheckpointError) as e:
        NpzCheckpoint(bad)
    assert "bad.npz" in str(e.value) and "not a readable .npz archive" in str(e.value)
    assert "pickle" not in str(e.value).lower() and "allow_pickle" not in str(e.value)
    with pytest.raises(CheckpointError) as e:
        read_npz_arrays(bad)
    assert "pickle" not in str(e.value).lower()
