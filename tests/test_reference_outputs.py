"""The transformers-produced reference cases in reference_outputs/ follow FORMAT.md.

The fast tests read only json/npz/safetensors headers (no torch). The slow test re-runs
reference_outputs/make_reference_outputs.py (needs the optional torch + transformers extra)
and checks the regenerated files against the committed ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REFERENCE_OUTPUTS

CASES = ["hf_pg1_tiny", "hf_pg2_tiny"]
EOS = 1
CHECKPOINT_FILES = ["config.json", "model.safetensors", "tokenizer.model", "tokenizer.json",
                    "tokenizer_config.json"]


def _load(case: str, name: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE_OUTPUTS / case / name, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _header(case: str) -> dict:
    return json.loads((REFERENCE_OUTPUTS / case / "case.json").read_text())


def _safetensors_shapes(path: Path) -> dict[str, tuple[str, list[int]]]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(n))
    return {k: (v["dtype"], v["shape"]) for k, v in meta.items() if k != "__metadata__"}


@pytest.mark.parametrize("case", CASES)
def test_case_header(case):
    h = _header(case)
    assert h["format_version"] == 1 and h["kind"] == "paligemma"
    assert h["producer"]["name"] == "transformers" and h["producer"]["version_or_commit"]
    assert h["checkpoint"]["format"] == "hf" and h["checkpoint"]["path"] == "checkpoint"
    assert h["compare"] == ["zimg", "logits", "greedy_tokens"]
    assert 1e-5 <= h["tolerance"]["relative_to_max_abs"] <= 2e-5
    opts = h["checkpoint"]["options"]
    # Only options pgbench's loader accepts (pgbench.checkpoints.infer.apply_options).
    assert set(opts) <= {"query_pre_attn_norm", "attn_logits_softcap", "final_logits_softcap",
                         "sliding_window", "apply_sliding_window"}
    if h["checkpoint"]["llm_family"] == "gemma2":
        assert opts["apply_sliding_window"] is True and opts["sliding_window"] == 8
        assert h["hf_semantics"]["sliding_window_layers"] == [0]
    else:
        assert opts["apply_sliding_window"] is False
    # The per-array table in case.json matches the files.
    for fname in ("inputs.npz", "outputs.npz"):
        arrays = _load(case, fname)
        assert set(h["arrays"][fname]) == set(arrays)
        for k, v in arrays.items():
            assert h["arrays"][fname][k] == {"dtype": str(v.dtype), "shape": list(v.shape)}, k


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_directory(case):
    ckpt = REFERENCE_OUTPUTS / case / "checkpoint"
    for f in CHECKPOINT_FILES:
        assert (ckpt / f).is_file(), f
    cfg = json.loads((ckpt / "config.json").read_text())
    h = _header(case)
    assert cfg["model_type"] == "paligemma"
    assert cfg["text_config"]["model_type"] == {"gemma1": "gemma", "gemma2": "gemma2"}[
        h["checkpoint"]["llm_family"]]
    shapes = _safetensors_shapes(ckpt / "model.safetensors")
    assert all(dt == "F32" for dt, _ in shapes.values())
    emb = shapes["language_model.model.embed_tokens.weight"][1]
    assert emb == [cfg["text_config"]["vocab_size"], cfg["text_config"]["hidden_size"]]
    assert "lm_head.weight" not in shapes  # tied to the embedding
    assert cfg["image_token_index"] < emb[0]
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert added["<image>"] == cfg["image_token_index"]
    assert added["<loc0000>"] == 4 and added["<loc1023>"] == 1027 and added["<seg127>"] == 1155


@pytest.mark.parametrize("case", CASES)
def test_arrays_follow_format(case):
    h = _header(case)
    inp, out = _load(case, "inputs.npz"), _load(case, "outputs.npz")
    cfg = json.loads((REFERENCE_OUTPUTS / case / "checkpoint" / "config.json").read_text())
    V, D = cfg["text_config"]["vocab_size"], cfg["text_config"]["hidden_size"]
    S, P = cfg["vision_config"]["image_size"], cfg["vision_config"]["patch_size"]
    n_img = (S // P) ** 2

    B, T = inp["tokens"].shape
    assert inp["images"].dtype == np.float32 and inp["images"].shape == (B, S, S, 3)
    assert np.abs(inp["images"]).max() <= 1.0
    assert inp["tokens"].dtype == np.int32 and inp["input_mask"].dtype == bool
    assert inp["mask_ar"].dtype == np.int32 and inp["mask_ar"].shape == (B, T)
    for prefix in ("", "decode_"):
        tok, mask = inp[prefix + "tokens"], inp[prefix + "input_mask"]
        n = mask.sum(1)
        # Right padding: real tokens first, then padding (id 0).
        assert np.array_equal(mask, np.arange(tok.shape[1])[None] < n[:, None])
        assert np.all(tok[~mask] == 0)
        assert np.all((tok >= 0) & (tok < V)) and np.all(tok[mask] != cfg["image_token_index"])
        assert np.all(tok[:, 0] == 2)  # BOS
    # Padding exists in both batches, so padding handling is exercised.
    assert (~inp["input_mask"]).any() and (~inp["decode_input_mask"]).any()
    # mask_ar: 0 on the prefix, 1 on suffix + EOS, 1 on padding; the decode batch is prefix only.
    assert np.all(inp["mask_ar"][~inp["input_mask"]] == 1)
    assert np.array_equal(inp["decode_mask_ar"], (~inp["decode_input_mask"]).astype(np.int32))
    assert np.array_equal(inp["mask_loss"], ((inp["mask_ar"] == 1) & inp["input_mask"]).astype(np.int32))

    Bd = inp["decode_tokens"].shape[0]
    assert out["zimg"].dtype == np.float32 and out["zimg"].shape == (B, n_img, D)
    assert out["logits"].dtype == np.float32 and out["logits"].shape == (B, n_img + T, V)
    assert np.all(np.isfinite(out["logits"])) and np.all(np.isfinite(out["zimg"]))
    assert out["loss"].shape == (B,) and np.all(out["loss"] > 0)
    g = out["greedy_tokens"]
    assert g.dtype == np.int32 and g.shape[0] == Bd
    assert out["decode_logits"].shape == (Bd, g.shape[1], V)
    assert np.all((g >= -1) & (g < V))
    for row in g:  # -1 exactly after the first EOS, EOS itself kept
        hit = np.flatnonzero(row == EOS)
        stop = hit[0] + 1 if hit.size else len(row)
        assert np.all(row[:stop] >= 0) and np.all(row[stop:] == -1)
    # Greedy tokens are the argmax of the recorded per-step logits.
    live = g >= 0
    assert np.array_equal(out["decode_logits"].argmax(-1)[live], g[live])
    if h["checkpoint"]["llm_family"] == "gemma2":
        soft = h["checkpoint"]["options"]["final_logits_softcap"]
        assert np.abs(out["logits"]).max() < soft


def test_loss_is_mean_suffix_nll_of_the_stored_logits():
    """Independent float64 recomputation pins what ``loss`` means."""
    for case in CASES:
        inp, out = _load(case, "inputs.npz"), _load(case, "outputs.npz")
        n_img = out["zimg"].shape[1]
        lg = out["logits"][:, n_img:-1].astype(np.float64)
        lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
        tgt = np.take_along_axis(lg, inp["tokens"][:, 1:, None].astype(np.int64), -1)[..., 0]
        w = inp["mask_loss"][:, 1:]
        np.testing.assert_allclose(((lse - tgt) * w).sum(1) / w.sum(1), out["loss"], rtol=1e-5)


def test_sliding_window_matters_only_after_the_window():
    """pg2: logits_no_window equals logits exactly where no query reaches past the window."""
    inp, out = _load("hf_pg2_tiny", "inputs.npz"), _load("hf_pg2_tiny", "outputs.npz")
    W = _header("hf_pg2_tiny")["checkpoint"]["options"]["sliding_window"]
    n_img = out["zimg"].shape[1]
    diff = np.abs(out["logits"] - out["logits_no_window"]).max(-1)
    n_prefix = (inp["mask_ar"] == 0).sum(1) + n_img
    for b in range(diff.shape[0]):
        n_valid = n_img + inp["input_mask"][b].sum()
        # Prefix queries are never limited (OR with the prefix block); a suffix query at index q
        # loses keys k <= q - W, and here every prefix is at least W long.
        assert np.all(diff[b, :n_prefix[b]] == 0)
        assert np.all(diff[b, n_prefix[b]:n_valid] > 0)
        assert diff[b, n_prefix[b]:n_valid].max() > 1e-2
        assert n_prefix[b] >= W


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _committed_transformers_version(case: str) -> str:
    return json.loads((REFERENCE_OUTPUTS / case / "checkpoint" / "config.json").read_text())[
        "transformers_version"]


@pytest.mark.slow
def test_script_regenerates_committed_cases(tmp_path):
    """Byte for byte under the transformers version that wrote the committed cases; under
    another version (the reference extra does not pin it) the same files, the same tokens
    and the same numbers to 1e-4 (5.23 -> 5.25 moved decode logits by ~2e-5)."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("needs the optional reference extra (torch + transformers)")
    from importlib.metadata import version
    script = REFERENCE_OUTPUTS / "make_reference_outputs.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    mismatched = []
    for case in CASES:
        committed = sorted(p.relative_to(REFERENCE_OUTPUTS / case)
                           for p in (REFERENCE_OUTPUTS / case).rglob("*") if p.is_file())
        fresh = sorted(p.relative_to(tmp_path / case) for p in (tmp_path / case).rglob("*")
                       if p.is_file())
        assert committed == fresh, case
        if version("transformers") != _committed_transformers_version(case):
            want, got = np.load(REFERENCE_OUTPUTS / case / "outputs.npz"), np.load(tmp_path / case / "outputs.npz")
            assert sorted(want.files) == sorted(got.files), case
            for name in want.files:
                if want[name].dtype.kind in "iu":
                    np.testing.assert_array_equal(got[name], want[name], err_msg=f"{case}/{name}")
                else:
                    np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=0,
                                               equal_nan=True, err_msg=f"{case}/{name}")
            continue
        for rel in committed:
            if _sha(REFERENCE_OUTPUTS / case / rel) != _sha(tmp_path / case / rel):
                mismatched.append(f"{case}/{rel}")
    assert not mismatched, (
        f"regenerated files differ from the committed ones: {mismatched} (another CPU or "
        "library version may round differently; regenerate and review the diff)")
