"""Fingerprints of a run's inputs: a change anywhere a sample falls, or in size or names, shows."""

from __future__ import annotations

from pgbench import fingerprint


def test_file_and_folder_fingerprints_follow_their_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "CHUNK", 8)  # sampling (not whole-file hashing) on a small file
    big = tmp_path / "model" / "weights.bin"
    big.parent.mkdir()
    data = bytearray(range(256)) * 4  # 1024 bytes > SAMPLES * CHUNK = 128: sampled
    big.write_bytes(bytes(data))
    (tmp_path / "model" / "config.json").write_text("{}")
    f0, d0 = fingerprint.sampled_digest(big), fingerprint.sampled_digest(big.parent)
    assert len(f0) == 16 and f0 != d0
    assert fingerprint.sampled_digest(big) == f0  # deterministic
    data[0] ^= 1  # the first slice
    big.write_bytes(bytes(data))
    assert fingerprint.sampled_digest(big) != f0
    assert fingerprint.sampled_digest(big.parent) != d0
    data[0] ^= 1
    big.write_bytes(bytes(data) + b"x")  # size
    assert fingerprint.sampled_digest(big) != f0
    big.write_bytes(bytes(data))
    (tmp_path / "model" / "extra.txt").write_text("")  # a file more in the folder
    assert fingerprint.sampled_digest(big.parent) != d0
    assert fingerprint.sampled_digest(tmp_path / "missing") is None
    assert fingerprint.inputs(big, None) == {"checkpoint": f0, "tokenizer": None}
