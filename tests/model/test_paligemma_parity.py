"""Forward, image embedding and loss against big_vision's own outputs (float32).

Tolerance: each case.json's ``relative_to_max_abs`` (max|ours - ref| <= tol * max|ref|).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from pgbench.model import paligemma as pg
from tests.model._reference import CASES, load_case, rel_err, tolerance


@jax.jit
def _outputs(model, images, tokens, input_mask, mask_ar, mask_loss):
    """Every output the tests compare, in one compiled program (compiles dominate here)."""
    args = (model, images, tokens, input_mask, mask_ar)
    logits, zimg = pg.forward(*args, final_softcap=True)
    text_logits, _ = pg.forward(*args, final_softcap=False)
    bf16_logits, _ = pg.forward(*args, compute_dtype="bfloat16")
    return dict(logits=logits, zimg=zimg, text_logits=text_logits[:, zimg.shape[1]:],
                bf16_logits=bf16_logits, loss=pg.suffix_loss(*args, mask_loss),
                smooth=pg.suffix_loss(*args, mask_loss, label_smoothing=0.3))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    model, cfg, header, inp, out, _ = load_case(request.param)
    ours = _outputs(model, inp["images"], inp["tokens"], inp["input_mask"], inp["mask_ar"],
                    inp["mask_loss"])
    return dict(model=model, cfg=cfg, header=header, inp=inp, out=out,
                **{k: np.asarray(v) for k, v in ours.items()})


def test_preset_matches_case_config(case):
    llm, vit = case["cfg"].llm, case["cfg"].vision
    mc = case["header"]["model_config"]
    res = mc["llm_resolved"]
    for f in ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim", "vocab_size",
              "post_norms", "query_pre_attn_norm"):
        assert getattr(llm, f) == res[f], f
    assert (llm.attn_logits_softcap or 0.0) == res.get("attn_logits_softcap", 0.0)
    assert (llm.final_logits_softcap or 0.0) == res.get("final_logits_softcap", 0.0)
    assert llm.family == case["header"]["checkpoint"]["llm_family"]
    assert not llm.apply_sliding_window  # big_vision never windows
    img = mc["img"]
    for f in ("width", "depth", "mlp_dim", "num_heads", "image_size"):
        assert getattr(vit, f) == img[f], f
    assert [vit.patch_size] * 2 == img["patch_size"]
    assert vit.num_patches == img["num_image_tokens"]


def test_zimg(case):
    assert rel_err(case["zimg"], case["out"]["zimg"]) <= tolerance(case["header"])


def test_logits_with_final_softcap(case):
    n_img = case["zimg"].shape[1]
    inp = case["inp"]
    valid = np.concatenate([np.ones((inp["tokens"].shape[0], n_img), bool), inp["input_mask"]], 1)
    err = rel_err(case["logits"], case["out"]["logits"], valid[:, :, None])
    assert err <= tolerance(case["header"]), err


def test_text_logits_without_final_softcap(case):
    where = case["inp"]["input_mask"][:, :, None]
    err = rel_err(case["text_logits"], case["out"]["text_logits"], where)
    assert err <= tolerance(case["header"]), err
    if case["cfg"].llm.final_logits_softcap:  # the switch really changes something
        assert rel_err(case["logits"][:, case["zimg"].shape[1]:], case["out"]["text_logits"],
                       where) > 1e-3


def test_suffix_loss(case):
    np.testing.assert_allclose(case["loss"], case["out"]["loss_avg"], rtol=1e-5)


def test_label_smoothing_changes_loss_as_defined(case):
    """Smoothing eps as big_vision: target 1 - eps on the label, eps / (V - 1) elsewhere."""
    inp = case["inp"]
    # big_vision's reference text logits over tokens[:, :-1]: the last token (EOS or padding,
    # flag 1) is invisible to every earlier position, so they equal the loss forward's.
    logits = case["out"]["text_logits"][:, :-1].astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    label = np.take_along_axis(logp, inp["tokens"][:, 1:, None], -1)[..., 0]
    others = (logp.sum(-1) - label) / (logp.shape[-1] - 1)
    w = inp["mask_loss"][:, 1:].astype(np.float64)
    smooth = ((-0.7 * label - 0.3 * others) * w).sum(-1) / w.sum(-1)
    np.testing.assert_allclose(case["smooth"], smooth, rtol=1e-5)


def test_bfloat16_compute_is_close(case):
    """compute_dtype=bfloat16 keeps logits float32 and stays near the float32 result."""
    inp = case["inp"]
    logits = case["bf16_logits"]
    assert logits.dtype == np.float32
    n_img = case["zimg"].shape[1]
    where = inp["input_mask"][:, :, None]
    assert rel_err(np.asarray(logits)[:, n_img:], case["logits"][:, n_img:], where) < 0.1


def test_wrong_image_size_is_rejected(case):
    from pgbench.errors import InputError
    inp = case["inp"]
    with pytest.raises(InputError, match="expects"):
        pg.embed_image(case["model"], inp["images"][:, :-1])


def test_cfg_is_static(case):
    # the config rides along as static data, so jit never sees it as an array
    leaves = jax.tree_util.tree_leaves(case["model"])
    assert all(hasattr(x, "shape") for x in leaves)
    assert dataclasses.is_dataclass(case["model"].cfg)
