"""What transformers makes of our HF directories, and ours of its (optional extra: torch)."""

from __future__ import annotations

import numpy as np
import pytest

from pgbench.checkpoints import hf_mapping as hm
from pgbench.checkpoints import read_hf_dir, write_hf_dir
from pgbench.checkpoints.infer import infer_config
from tests.checkpoints._cases import CASES, case_checkpoint, reference_flat
from tests.conftest import BIG_VISION_REFERENCE

pytestmark = pytest.mark.slow


def _transformers():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


def _our_hf_tensors(flat, cfg):
    return {e.hf: hm.to_hf(flat[e.bv][e.index], e.kind) for e in hm.hf_entries(cfg)}


@pytest.mark.parametrize("case", CASES)
def test_transformers_loads_our_dir_and_reproduces_big_vision(tmp_path, case):
    transformers = _transformers()
    import torch

    _, ck = case_checkpoint(case)
    flat = reference_flat(case)
    cfg = infer_config({k: v.shape for k, v in flat.items()}, family=ck["llm_family"], options=ck["options"])
    write_hf_dir(flat, cfg, tmp_path)
    model, info = transformers.PaliGemmaForConditionalGeneration.from_pretrained(
        tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ours = _our_hf_tensors(flat, cfg)
    state = {hm.canonical_name(k): v.numpy() for k, v in model.state_dict().items()}
    assert np.array_equal(state.pop(hm.LM_HEAD), flat["llm/embedder/input_embedding"])  # tied
    assert set(state) == set(ours)
    for k, v in ours.items():
        assert np.array_equal(state[k], v), k

    # The strongest check of every layout transform: transformers, running our directory,
    # reproduces big_vision's own logits (image + all text positions) within the case tolerance.
    inp = np.load(BIG_VISION_REFERENCE / case / "inputs.npz")
    ref = np.load(BIG_VISION_REFERENCE / case / "outputs.npz")
    n_img, (b, _) = cfg.num_image_tokens, inp["tokens"].shape
    ids = np.concatenate([np.full((b, n_img), model.config.image_token_index), inp["tokens"]], 1)
    valid = np.concatenate([np.ones((b, n_img), bool), inp["input_mask"]], 1)
    token_type = np.concatenate([np.zeros((b, n_img), np.int64), inp["mask_ar"]], 1)  # suffix = 1
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids), pixel_values=torch.tensor(inp["images"]).permute(0, 3, 1, 2),
                       attention_mask=torch.tensor(valid).long(), token_type_ids=torch.tensor(token_type)).logits
    logits, want = logits.numpy(), ref["logits"]
    err = np.abs(logits - want)[valid].max() / np.abs(want[valid]).max()
    assert err < 2e-5, err


@pytest.mark.parametrize("family", ["gemma", "gemma2"])
def test_we_read_a_dir_transformers_saved(tmp_path, family):
    transformers = _transformers()
    import torch

    torch.manual_seed(0)
    text = dict(model_type=family, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=512)
    if family == "gemma2":
        text.update(query_pre_attn_scalar=16, sliding_window=8)
    vision = dict(model_type="siglip_vision_model", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, patch_size=14, image_size=28, projection_dim=64)  # vision_use_head: True
    config = transformers.PaliGemmaConfig(text_config=text, vision_config=vision, projection_dim=64,
                                          vocab_size=512, image_token_index=511)
    model = transformers.PaliGemmaForConditionalGeneration(config)
    model.save_pretrained(tmp_path)
    flat, cfg = read_hf_dir(tmp_path)
    assert (cfg.llm.family, cfg.llm.num_kv_heads, cfg.llm.head_dim, cfg.vision.image_size) == (
        "gemma2" if family == "gemma2" else "gemma1", 2, 16, 28)
    if family == "gemma2":
        assert cfg.llm.sliding_window == 8 and cfg.llm.final_logits_softcap == 30.0
    state = {hm.canonical_name(k): v.numpy() for k, v in model.state_dict().items()
             if ".head." not in k and not k.endswith("lm_head.weight")}
    ours = _our_hf_tensors(flat, cfg)
    assert set(ours) == set(state)
    for k, v in ours.items():
        assert np.array_equal(state[k], v), k
