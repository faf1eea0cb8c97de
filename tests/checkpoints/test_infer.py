"""Config inference from shapes, and validation of every key/shape against a config."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pgbench.checkpoints.bigvision_npz import NpzCheckpoint
from pgbench.checkpoints.infer import expected_shapes, infer_config, validate
from pgbench.config import PRESETS
from pgbench.errors import CheckpointError
from tests.checkpoints._cases import CASES, case_checkpoint
from tests.conftest import BIG_VISION_REFERENCE


def _sizes(cfg):
    """Everything but the name and the switches that shapes cannot reveal."""
    llm = dataclasses.replace(cfg.llm, sliding_window=None, apply_sliding_window=False)
    return cfg.vision, llm


@pytest.mark.parametrize("case", CASES)
def test_infers_reference_case_config(case):
    path, ck = case_checkpoint(case)
    cfg = infer_config(NpzCheckpoint(path).shapes(), family=ck["llm_family"], options=ck["options"])
    preset = PRESETS[case.replace("_", "-")]
    assert _sizes(cfg) == _sizes(preset)
    # ... and the model_config big_vision itself recorded in case.json.
    mc = json.loads((BIG_VISION_REFERENCE / case / "case.json").read_text())["model_config"]
    img, llm = mc["img"], mc["llm_resolved"]
    v, g = cfg.vision, cfg.llm
    assert (v.width, v.depth, v.mlp_dim, v.num_heads, v.image_size) == (
        img["width"], img["depth"], img["mlp_dim"], img["num_heads"], img["image_size"])
    assert [v.patch_size] * 2 == img["patch_size"] and v.num_patches == img["num_image_tokens"]
    assert (g.width, g.depth, g.mlp_dim, g.num_heads, g.num_kv_heads, g.head_dim, g.vocab_size) == (
        llm["width"], llm["depth"], llm["mlp_dim"], llm["num_heads"], llm["num_kv_heads"],
        llm["head_dim"], llm["vocab_size"])
    assert g.query_pre_attn_norm == llm["query_pre_attn_norm"]
    assert g.post_norms == llm["post_norms"]
    assert (g.attn_logits_softcap or 0.0) == llm["attn_logits_softcap"]
    assert (g.final_logits_softcap or 0.0) == llm["final_logits_softcap"]
    assert g.sliding_window is None and not g.apply_sliding_window  # case options


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if "tiny" not in n))
def test_infers_every_full_size_preset(name):
    preset = PRESETS[name]
    opts = {"query_pre_attn_norm": preset.llm.query_pre_attn_norm}  # invisible in shapes (27B)
    cfg = infer_config(expected_shapes(preset), family=preset.llm.family, options=opts, name=name)
    assert cfg == preset


def test_expected_shapes_match_readme_figures():
    # big_vision/README.md section 1 gives the real PaliGemma-3B @224 shapes.
    s = expected_shapes(PRESETS["pg1-3b-224"])
    enc = "img/Transformer/encoderblock/"
    assert s["img/embedding/kernel"] == (14, 14, 3, 1152)
    assert s["img/pos_embedding"] == (1, 256, 1152)
    assert s[enc + "MultiHeadDotProductAttention_0/query/kernel"] == (27, 1152, 16, 72)
    assert s[enc + "MlpBlock_0/Dense_0/kernel"] == (27, 1152, 4304)
    assert s["img/head/kernel"] == (1152, 2048)
    assert s["llm/embedder/input_embedding"] == (257152, 2048)
    assert s["llm/layers/attn/q_einsum/w"] == (18, 8, 2048, 256)
    assert s["llm/layers/attn/kv_einsum/w"] == (18, 2, 1, 2048, 256)
    assert s["llm/layers/mlp/gating_einsum"] == (18, 2, 2048, 16384)
    assert len(s) == 32


def test_family_defaults_from_weights_and_mismatch_is_an_error():
    pg1 = expected_shapes(PRESETS["pg1-tiny"])
    pg2 = expected_shapes(PRESETS["pg2-tiny"])
    assert infer_config(pg1).llm.family == "gemma1"
    g2 = infer_config(pg2).llm
    assert (g2.family, g2.attn_logits_softcap, g2.final_logits_softcap, g2.post_norms) == (
        "gemma2", 50.0, 30.0, True)
    with pytest.raises(CheckpointError, match="family 'gemma2' does not match.*no post-attention"):
        infer_config(pg1, family="gemma2", source="x.npz")
    with pytest.raises(CheckpointError, match="x.npz: family 'gemma1' does not match.*found post"):
        infer_config(pg2, family="gemma1", source="x.npz")


def test_options():
    pg2 = expected_shapes(PRESETS["pg2-tiny"])
    g = infer_config(pg2, options={"final_logits_softcap": 0.0, "sliding_window": 8,
                                   "apply_sliding_window": True}).llm
    assert g.final_logits_softcap is None and g.sliding_window == 8 and g.apply_sliding_window
    with pytest.raises(CheckpointError, match=r"unknown checkpoint option\(s\) \['windw'\]"):
        infer_config(pg2, options={"windw": 3})
    with pytest.raises(CheckpointError, match="query_pre_attn_norm"):
        infer_config(pg2, options={"query_pre_attn_norm": "bogus"})


def test_validate_reports_missing_extra_and_misshapen_together():
    cfg = PRESETS["pg2-tiny"]
    shapes = expected_shapes(cfg)
    del shapes["img/head/bias"]
    shapes["llm/extra/thing"] = (3,)
    shapes["llm/layers/mlp/linear"] = (2, 99, 64)
    with pytest.raises(CheckpointError) as e:
        validate(shapes, cfg, source="ck.npz")
    msg = str(e.value)
    assert msg.startswith("ck.npz")
    assert "missing keys: img/head/bias" in msg
    assert "unexpected keys: llm/extra/thing" in msg
    assert "llm/layers/mlp/linear: expected (2, 128, 64), found (2, 99, 64)" in msg


def test_inconsistent_shapes_are_reported_by_key():
    shapes = expected_shapes(PRESETS["pg1-tiny"])
    shapes["llm/layers/attn/attn_vec_einsum/w"] = (2, 4, 16, 65)  # width disagrees with embedding
    with pytest.raises(CheckpointError, match="attn_vec_einsum/w: expected \\(2, 4, 16, 64\\), found"):
        infer_config(shapes, source="ck.npz")
    shapes = expected_shapes(PRESETS["pg1-tiny"])
    del shapes["llm/embedder/input_embedding"]
    with pytest.raises(CheckpointError, match="ck.npz: missing key 'llm/embedder/input_embedding'"):
        infer_config(shapes, source="ck.npz")
    shapes = expected_shapes(PRESETS["pg1-tiny"])
    shapes["img/pos_embedding"] = (1, 15, 32)
    with pytest.raises(CheckpointError, match="15 rows, not a square grid"):
        infer_config(shapes, source="ck.npz")


@pytest.mark.parametrize("options, words", [
    ({"sliding_window": "8"}, "option sliding_window='8'; expected a positive integer or null"),
    ({"sliding_window": 0}, "option sliding_window=0"),
    ({"attn_logits_softcap": "50"}, "option attn_logits_softcap='50'; expected a number or null"),
    ({"apply_sliding_window": 1}, "option apply_sliding_window=1; expected true or false"),
    ({"query_pre_attn_norm": None}, "option query_pre_attn_norm=None; expected a string"),
    (["sliding_window"], "checkpoint options are ['sliding_window']; expected a JSON object"),
])
def test_options_of_the_wrong_type_are_named(options, words):
    with pytest.raises(CheckpointError) as e:
        infer_config(expected_shapes(PRESETS["pg2-tiny"]), options=options, source="case.json")
    assert str(e.value).startswith("case.json: ") and words in str(e.value)
