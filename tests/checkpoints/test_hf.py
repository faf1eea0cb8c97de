"""Hugging Face directories: layout semantics, round trips, sharding, name variants, bad input.

No torch here: the slow test in test_hf_transformers.py checks what transformers makes of them.
"""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from pgbench.checkpoints import HFCheckpoint, read_hf_dir, write_hf_dir
from pgbench.checkpoints.infer import infer_config
from pgbench.config import PRESETS
from pgbench.errors import CheckpointError
from tests.checkpoints._cases import CASES, case_checkpoint, reference_flat

V = "vision_tower.vision_model."
T = "language_model.model."


def _write_case(case, out, **kw):
    _, ck = case_checkpoint(case)
    flat = reference_flat(case)
    cfg = infer_config({k: v.shape for k, v in flat.items()}, family=ck["llm_family"], options=ck["options"])
    write_hf_dir(flat, cfg, out, **kw)
    return flat, cfg, ck


@pytest.mark.parametrize("case", CASES)
def test_roundtrip_bit_exact(tmp_path, case):
    flat, cfg, ck = _write_case(case, tmp_path / "hf")
    back, cfg2 = read_hf_dir(tmp_path / "hf", options=ck["options"])
    assert cfg2 == cfg.replace(name=cfg2.name)
    assert set(back) == set(flat)
    for k, v in flat.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k


def test_roundtrip_bfloat16_and_torch_dtype(tmp_path):
    flat = {k: v.astype(ml_dtypes.bfloat16) for k, v in reference_flat("pg2_tiny").items()}
    cfg = infer_config({k: v.shape for k, v in flat.items()})
    write_hf_dir(flat, cfg, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    back, _ = read_hf_dir(tmp_path)
    for k, v in flat.items():
        assert back[k].dtype == ml_dtypes.bfloat16
        assert np.array_equal(back[k].view(np.uint16), v.view(np.uint16)), k


def test_layout_semantics_match_big_vision_einsums(tmp_path):
    """Each HF tensor, applied as torch applies it (y = W x, conv OIHW), computes what
    big_vision's einsum computes on the same input: an independent check of every transform."""
    flat, cfg, _ = _write_case("pg2_tiny", tmp_path)
    hf = load_file(str(tmp_path / "model.safetensors"))  # the safetensors library reads our file
    rng = np.random.default_rng(0)
    i = 1
    g = cfg.llm
    x = rng.standard_normal(g.width).astype(np.float32)
    lay = "llm/layers/"
    q = np.einsum("d,hdk->hk", x, flat[lay + "attn/q_einsum/w"][i])
    np.testing.assert_allclose(hf[f"{T}layers.{i}.self_attn.q_proj.weight"] @ x, q.reshape(-1), rtol=1e-5, atol=1e-5)
    for j, name in enumerate(("k_proj", "v_proj")):
        kv = np.einsum("d,hdk->hk", x, flat[lay + "attn/kv_einsum/w"][i, j])
        np.testing.assert_allclose(hf[f"{T}layers.{i}.self_attn.{name}.weight"] @ x, kv.reshape(-1), rtol=1e-5, atol=1e-5)
    a = rng.standard_normal((g.num_heads, g.head_dim)).astype(np.float32)
    o = np.einsum("hk,hkd->d", a, flat[lay + "attn/attn_vec_einsum/w"][i])
    np.testing.assert_allclose(hf[f"{T}layers.{i}.self_attn.o_proj.weight"] @ a.reshape(-1), o, rtol=1e-5, atol=1e-5)
    gate = np.einsum("d,df->f", x, flat[lay + "mlp/gating_einsum"][i, 0])
    up = np.einsum("d,df->f", x, flat[lay + "mlp/gating_einsum"][i, 1])
    np.testing.assert_allclose(hf[f"{T}layers.{i}.mlp.gate_proj.weight"] @ x, gate, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hf[f"{T}layers.{i}.mlp.up_proj.weight"] @ x, up, rtol=1e-5, atol=1e-5)
    h = rng.standard_normal(g.mlp_dim).astype(np.float32)
    np.testing.assert_allclose(hf[f"{T}layers.{i}.mlp.down_proj.weight"] @ h, h @ flat[lay + "mlp/linear"][i], rtol=1e-5, atol=1e-5)
    for hf_norm, bv_norm in (("input_layernorm", "pre_attention_norm"), ("post_attention_layernorm", "post_attention_norm"),
                             ("pre_feedforward_layernorm", "pre_ffw_norm"), ("post_feedforward_layernorm", "post_ffw_norm")):
        assert np.array_equal(hf[f"{T}layers.{i}.{hf_norm}.weight"], flat[f"{lay}{bv_norm}/scale"][i])
    # ViT: q projection with bias, output projection, and the patch convolution.
    v = cfg.vision
    enc = "img/Transformer/encoderblock/MultiHeadDotProductAttention_0/"
    y = rng.standard_normal(v.width).astype(np.float32)
    qv = np.einsum("c,chk->hk", y, flat[enc + "query/kernel"][i]) + flat[enc + "query/bias"][i]
    got = hf[f"{V}encoder.layers.{i}.self_attn.q_proj.weight"] @ y + hf[f"{V}encoder.layers.{i}.self_attn.q_proj.bias"]
    np.testing.assert_allclose(got, qv.reshape(-1), rtol=1e-5, atol=1e-5)
    b = rng.standard_normal((v.num_heads, v.head_dim)).astype(np.float32)
    np.testing.assert_allclose(hf[f"{V}encoder.layers.{i}.self_attn.out_proj.weight"] @ b.reshape(-1),
                               np.einsum("hk,hkc->c", b, flat[enc + "out/kernel"][i]), rtol=1e-5, atol=1e-5)
    patch = rng.standard_normal((v.patch_size, v.patch_size, 3)).astype(np.float32)  # HWC
    bv_conv = np.einsum("hwi,hwio->o", patch, flat["img/embedding/kernel"])
    hf_conv = np.einsum("ihw,oihw->o", patch.transpose(2, 0, 1), hf[V + "embeddings.patch_embedding.weight"])
    np.testing.assert_allclose(hf_conv, bv_conv, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(hf[V + "embeddings.position_embedding.weight"], flat["img/pos_embedding"][0])
    z = rng.standard_normal(v.width).astype(np.float32)
    np.testing.assert_allclose(hf["multi_modal_projector.linear.weight"] @ z, z @ flat["img/head/kernel"], rtol=1e-5, atol=1e-5)
    assert "lm_head.weight" not in hf  # tied


def test_gemma1_norm_names(tmp_path):
    flat, _, _ = _write_case("pg1_tiny", tmp_path)
    hf = load_file(str(tmp_path / "model.safetensors"))
    # Gemma 1's "post_attention_layernorm" is the pre-MLP norm.
    assert np.array_equal(hf[f"{T}layers.0.post_attention_layernorm.weight"], flat["llm/layers/pre_ffw_norm/scale"][0])
    assert not any("feedforward" in k for k in hf)


def test_fused_qkv_layout_roundtrip(tmp_path):
    """A Gemma with as many KV heads as heads is stored as one qkv_einsum."""
    cfg = PRESETS["pg1-tiny"].replace_llm(num_kv_heads=4)
    rng = np.random.default_rng(1)
    from pgbench.checkpoints.infer import expected_shapes
    flat = {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_shapes(cfg).items()}
    assert "llm/layers/attn/qkv_einsum/w" in flat
    write_hf_dir(flat, cfg, tmp_path)
    hf = load_file(str(tmp_path / "model.safetensors"))
    x = rng.standard_normal(64).astype(np.float32)
    k = np.einsum("d,hdk->hk", x, flat["llm/layers/attn/qkv_einsum/w"][1, 1])
    np.testing.assert_allclose(hf[f"{T}layers.1.self_attn.k_proj.weight"] @ x, k.reshape(-1), rtol=1e-5, atol=1e-5)
    back, _ = read_hf_dir(tmp_path)
    assert all(np.array_equal(back[key], v) for key, v in flat.items())


def test_sharded_write_and_read(tmp_path):
    flat, cfg, ck = _write_case("pg1_tiny", tmp_path, max_shard_bytes=300_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and not (tmp_path / "model.safetensors").exists()
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in flat.values())
    for s in shards:
        n = sum(1 for f in index["weight_map"].values() if f == s)
        data = (tmp_path / s).stat().st_size - 20_000  # minus a generous header allowance
        assert data <= 300_000 or n == 1, (s, n)  # only a lone tensor may exceed the limit
    back, _ = read_hf_dir(tmp_path)
    assert all(np.array_equal(back[k], v) for k, v in flat.items())


def test_transformers5_names_lm_head_and_vision_head_accepted(tmp_path):
    flat, cfg, ck = _write_case("pg2_tiny", tmp_path)
    hf = load_file(str(tmp_path / "model.safetensors"))
    renamed = {}
    for k, v in hf.items():
        k = k.replace("vision_tower.vision_model.", "model.vision_tower.")
        k = k.replace("language_model.model.", "model.language_model.")
        k = k.replace("multi_modal_projector.", "model.multi_modal_projector.")
        renamed[k] = v
    renamed["lm_head.weight"] = hf[T + "embed_tokens.weight"]
    renamed["model.vision_tower.head.probe"] = np.zeros((1, 1, 32), np.float32)
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    config["vision_config"]["vision_use_head"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    back, _ = read_hf_dir(tmp_path, options=ck["options"])
    assert all(np.array_equal(back[k], v) for k, v in flat.items())
    # Without vision_use_head, the pooling head is an unexpected tensor.
    config["vision_config"]["vision_use_head"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: vision_tower\.vision_model\.head\.probe"):
        read_hf_dir(tmp_path)


def test_config_fields_and_27b_query_scale(tmp_path):
    cfg = PRESETS["pg2-tiny"].replace_llm(query_pre_attn_norm="rsqrt_emb_per_head", head_dim=8)
    from pgbench.checkpoints.infer import expected_shapes
    flat = {k: np.zeros(s, np.float32) for k, s in expected_shapes(cfg).items()}
    write_hf_dir(flat, cfg, tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    t = c["text_config"]
    assert t["query_pre_attn_scalar"] == 16 and t["model_type"] == "gemma2"  # 64 // 4
    assert (t["attn_logit_softcapping"], t["final_logit_softcapping"], t["sliding_window"]) == (50.0, 30.0, 8)
    assert c["vision_config"]["image_size"] == 28 and c["vision_config"]["vision_use_head"] is False
    got = HFCheckpoint(tmp_path).cfg
    assert got.llm.query_pre_attn_norm == "rsqrt_emb_per_head"
    assert got.replace(name=cfg.name) == cfg


# ---------------------------------------------------------------------------------------
# Bad input: one CheckpointError naming the file / tensor / shapes.


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="no such Hugging Face checkpoint directory"):
        HFCheckpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="config.json: missing"):
        HFCheckpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no model.safetensors and no model.safetensors.index.json"):
        HFCheckpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        HFCheckpoint(tmp_path)


def test_truncated_safetensors(tmp_path):
    _write_case("pg1_tiny", tmp_path)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"model.safetensors: truncated: tensor '.*' ends at byte"):
        HFCheckpoint(tmp_path)
    f.write_bytes(data[:4])
    with pytest.raises(CheckpointError, match="truncated safetensors file"):
        HFCheckpoint(tmp_path)


def test_corrupt_safetensors_header(tmp_path):
    _write_case("pg1_tiny", tmp_path)
    f = tmp_path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:12] = b"\x00\xff\x00\xff"
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: corrupt safetensors header"):
        HFCheckpoint(tmp_path)
    f.write_bytes(struct.pack("<Q", 10**12) + bytes(data[8:]))
    with pytest.raises(CheckpointError, match="corrupt or truncated safetensors file"):
        HFCheckpoint(tmp_path)


def test_missing_shard(tmp_path):
    _write_case("pg1_tiny", tmp_path, max_shard_bytes=300_000)
    shard = sorted(tmp_path.glob("model-00002-of-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=r"index.json: shard file\(s\) missing .*" + shard.name):
        HFCheckpoint(tmp_path)


def _edit_tensors(tmp_path, fn):
    hf = load_file(str(tmp_path / "model.safetensors"))
    fn(hf)
    save_file(hf, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_extra_and_misshapen_tensors_in_one_message(tmp_path):
    _write_case("pg1_tiny", tmp_path)

    def damage(hf):
        del hf[f"{T}layers.1.mlp.up_proj.weight"]
        hf[f"{T}layers.0.self_attn.rotary.inv_freq"] = np.ones(8, np.float32)
        hf[V + "encoder.layers.0.mlp.fc2.weight"] = np.ones((32, 65), np.float32)
    _edit_tensors(tmp_path, damage)
    with pytest.raises(CheckpointError) as e:
        HFCheckpoint(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg
    assert f"missing tensors: {T}layers.1.mlp.up_proj.weight" in msg
    assert f"unexpected tensors: {T}layers.0.self_attn.rotary.inv_freq" in msg
    assert f"{V}encoder.layers.0.mlp.fc2.weight (model.safetensors): expected (32, 64), found (32, 65)" in msg


def test_family_mismatch(tmp_path):
    _write_case("pg1_tiny", tmp_path)
    with pytest.raises(CheckpointError, match="family 'gemma2' requested, but config.json says.*'gemma'"):
        HFCheckpoint(tmp_path, family="gemma2")
    c = json.loads((tmp_path / "config.json").read_text())
    c["text_config"]["model_type"] = "gemma2"
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match="config.json says 'gemma2', but the weights lack post_feedforward"):
        HFCheckpoint(tmp_path)
    c["text_config"]["model_type"] = "llama"
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match="text_config.model_type is 'llama'"):
        HFCheckpoint(tmp_path)


def test_untied_embeddings_rejected(tmp_path):
    _write_case("pg1_tiny", tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    c["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match="tie_word_embeddings is false"):
        HFCheckpoint(tmp_path)


def test_image_size_disagreeing_with_weights(tmp_path):
    _write_case("pg2_tiny", tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    c["vision_config"]["image_size"] = 224
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match="image_size=224, but the position embedding has 2\\^2 patches"):
        HFCheckpoint(tmp_path)


def test_write_rejects_params_not_fitting_config(tmp_path):
    flat = reference_flat("pg1_tiny")
    with pytest.raises(CheckpointError, match="missing keys: llm/layers/post_attention_norm/scale"):
        write_hf_dir(flat, PRESETS["pg2-tiny"], tmp_path)


def _edit_config(tmp_path, edit):
    c = json.loads((tmp_path / "config.json").read_text())
    edit(c)
    (tmp_path / "config.json").write_text(json.dumps(c))


@pytest.mark.parametrize("edit, field", [
    (lambda c: c["text_config"].__setitem__("num_attention_heads", "4"), "text_config.num_attention_heads"),
    (lambda c: c["text_config"].__setitem__("head_dim", 16.5), "text_config.head_dim"),
    (lambda c: c["text_config"].__setitem__("num_key_value_heads", True), "text_config.num_key_value_heads"),
    (lambda c: c["text_config"].__setitem__("rms_norm_eps", "1e-6"), "text_config.rms_norm_eps"),
    (lambda c: c["text_config"].__setitem__("rope_parameters", "default"), "text_config.rope_parameters"),
    (lambda c: c["text_config"].__setitem__("model_type", ["gemma"]), "text_config.model_type"),
    (lambda c: c["vision_config"].__setitem__("num_attention_heads", "2"), "vision_config.num_attention_heads"),
    (lambda c: c["vision_config"].__setitem__("image_size", "28"), "vision_config.image_size"),
    (lambda c: c.__setitem__("tie_word_embeddings", "yes"), "tie_word_embeddings"),
    (lambda c: c.__setitem__("text_config", "gemma"), "text_config"),
    (lambda c: c.__setitem__("vision_config", ["siglip"]), "vision_config"),
])
def test_config_field_of_the_wrong_type_is_named(tmp_path, edit, field):
    """A wrong type in config.json is one CheckpointError naming the field, never a bare
    ValueError / AttributeError / TypeError."""
    _write_case("pg1_tiny", tmp_path)
    _edit_config(tmp_path, edit)
    with pytest.raises(CheckpointError) as e:
        HFCheckpoint(tmp_path)
    assert "config.json" in str(e.value) and field in str(e.value)


def test_gemma2_config_fields_of_the_wrong_type_are_named(tmp_path):
    _write_case("pg2_tiny", tmp_path)
    for key, value in [("query_pre_attn_scalar", "16"), ("attn_logit_softcapping", "50"),
                       ("sliding_window", 8.5), ("layer_types", "alternating")]:
        c = json.loads((tmp_path / "config.json").read_text())
        good = c["text_config"][key]
        c["text_config"][key] = value
        (tmp_path / "config.json").write_text(json.dumps(c))
        with pytest.raises(CheckpointError, match=f"config.json: text_config.{key} is "):
            HFCheckpoint(tmp_path)
        c["text_config"][key] = good
        (tmp_path / "config.json").write_text(json.dumps(c))
    HFCheckpoint(tmp_path)  # restored: reads again


def test_config_json_that_is_not_an_object(tmp_path):
    _write_case("pg1_tiny", tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="config.json: not a JSON object"):
        HFCheckpoint(tmp_path)


def test_index_weight_map_of_the_wrong_type(tmp_path):
    _write_case("pg1_tiny", tmp_path, max_shard_bytes=300_000)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["a", "b"]}))
    with pytest.raises(CheckpointError, match="index.json: 'weight_map' must map tensor names"):
        HFCheckpoint(tmp_path)


def test_layers_of_one_array_in_different_dtypes(tmp_path):
    """Per-layer HF tensors stacked into one big_vision array must agree on the dtype."""
    _write_case("pg1_tiny", tmp_path)
    _edit_tensors(tmp_path, lambda hf: hf.__setitem__(
        f"{T}layers.1.mlp.down_proj.weight", hf[f"{T}layers.1.mlp.down_proj.weight"].astype(np.float16)))
    ck = HFCheckpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"layers\.1\.mlp\.down_proj\.weight' is float16.*llm/layers/mlp/linear"):
        ck.read("llm/layers/mlp/linear")


@pytest.mark.parametrize("name", [f"{T}embed_tokens.weight", V + "embeddings.patch_embedding.weight",
                                  V + "embeddings.position_embedding.weight"])
def test_size_tensor_of_the_wrong_rank_is_named(tmp_path, name):
    """Tensors the sizes are read from, flattened to 1-D: one error naming the tensor, not an
    unpacking ValueError."""
    _write_case("pg1_tiny", tmp_path)
    _edit_tensors(tmp_path, lambda hf: hf.__setitem__(name, hf[name].reshape(-1)))
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has shape"):
        HFCheckpoint(tmp_path)
