"""The segmentation VQ-VAE and mask pasting against big_vision's reference (seg_vqvae case),
the encoder against an independent float64 numpy model of the TF pre-processing op."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from pgbench import images, overlay, parity, segmentation as seg, structured
from pgbench.errors import CheckpointError, InputError
from pgbench.scoring import mask_iou
from pgbench.tokenizer import RELEASED_LOCSEG as REL


@pytest.fixture(scope="module")
def case_dir(big_vision_reference):
    return big_vision_reference / "seg_vqvae"


@pytest.fixture(scope="module")
def case(case_dir):
    header = json.loads((case_dir / "case.json").read_text())
    return header, dict(np.load(case_dir / "inputs.npz")), dict(np.load(case_dir / "outputs.npz"))


@pytest.fixture(scope="module")
def flat(case_dir):
    return dict(np.load(case_dir / "vae_checkpoint.npz"))


@pytest.fixture(scope="module")
def vae(case_dir):
    return seg.load_vqvae(case_dir / "vae_checkpoint.npz")


@pytest.fixture(scope="module")
def ours(case_dir):
    case = parity.load_case(case_dir)
    return parity.RUNNERS["vqvae"](case, case.inputs(), case.outputs(), "xla")[0]


# --------------------------------------------------------------------------------------
# Parity with big_vision (decoder, evaluator box path).


def test_masks_match_big_vision(case, ours):
    header, _, ref = case
    tol = header["tolerance"]["relative_to_max_abs"]
    for name in ("masks", "masks_raw", "box_masks64"):
        err = np.max(np.abs(ours[name] - ref[name])) / np.max(np.abs(ref[name]))
        assert ours[name].shape == ref[name].shape and ours[name].dtype == np.float32
        assert err <= tol, (name, err)


def test_quantized_is_exact(case, ours):
    np.testing.assert_array_equal(ours["quantized"], case[2]["quantized"])


@pytest.mark.parametrize("name", ["box_valid_tokens", "box_pasted", "box_norm", "box_pixels",
                                  "pasted_binary"])
def test_evaluator_box_path_is_exact(case, ours, name):
    ref = case[2][name]
    assert ours[name].dtype == ref.dtype
    np.testing.assert_array_equal(ours[name], ref)


def test_pasted_float_matches_pil_reference(case, ours):
    # Same PIL resize on our (1e-6-close) 64x64 logits; NaN outside the box in both.
    ref = case[2]["pasted_float"]
    np.testing.assert_array_equal(np.isnan(ours["pasted_float"]), np.isnan(ref))
    inside = ~np.isnan(ref)
    assert np.max(np.abs(ours["pasted_float"][inside] - ref[inside])) <= 1e-5 * np.max(np.abs(ref[inside]))


def test_mask_iou_as_the_evaluator(case, ours):
    _, inp, ref = case
    np.testing.assert_allclose(ours["mask_iou"], ref["mask_iou"], rtol=0, atol=1e-12)
    # Independently: IoU from the reference's own pasted masks.
    direct = [mask_iou.iou(p, g) for p, g in zip(ref["pasted_binary"], inp["gt_masks"])]
    np.testing.assert_allclose(direct, ref["mask_iou"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["box_iou"], ref["box_iou"], rtol=0, atol=1e-12)


def test_parity_command_runner_passes(case_dir):
    report = parity.check_case(case_dir)
    assert report.passed, "\n".join(report.lines())


def test_string_path_gives_the_same_masks(case, vae):
    header, _, ref = case
    r = structured.parse_segmentations(" ; ".join(header["box_strings"]), image_hw=(224, 224))
    seg.attach_masks(r, vae)
    assert r.masks.shape == (2, 224, 224) and r.masks.dtype == bool
    np.testing.assert_array_equal(r.masks, ref["pasted_binary"])


def test_invalid_and_truncated_predictions_give_empty_masks(vae):
    L, S = REL.loc[0], REL.seg[0]
    good = [L + 100, L + 100, L + 900, L + 900] + [S + i for i in range(16)]
    tiny = [L + 10, L + 10, L + 11, L + 11] + [S + i for i in range(16)]  # empty after int() at 50 px
    bad = [L + 900, L + 100, L + 100, L + 900] + [S + i for i in range(16)]  # y2 < y1
    tm = seg.masks_from_token_ids(vae, np.array([good, tiny, bad]), (50, 50), locseg=REL)
    np.testing.assert_array_equal(tm.valid, [True, True, False])
    np.testing.assert_array_equal(tm.pasted, [True, False, False])
    assert tm.num_invalid == 2
    assert not tm.masks[1].any() and not tm.masks[2].any()
    (y1, x1, y2, x2), _ = structured.pixel_box([100, 100, 900, 900], 50, 50)
    outside = np.ones((50, 50), bool)
    outside[y1:y2, x1:x2] = False
    assert not tm.masks[0][outside].any() and tm.masks[0].any()


# --------------------------------------------------------------------------------------
# Shapes, dtypes, bad input.


def test_batch_padding_does_not_change_rows(vae, case, ours):
    # 3 rows are padded to a bucket of 4 internally; rows must match the unpadded run up to
    # float32 reassociation (XLA picks conv algorithms per batch size; seen 1.2e-6 x max),
    # so the case tolerance 1e-5 x max|mask| applies; a leak from padding rows would be O(1).
    codes = case[1]["codes"]
    atol = 1e-5 * np.max(np.abs(ours["masks"]))
    np.testing.assert_allclose(seg.decode_codes(vae, codes[:3]), ours["masks"][:3], rtol=0, atol=atol)
    np.testing.assert_allclose(seg.decode_codes(vae, codes[2:3]), ours["masks"][2:3], rtol=0, atol=atol)


def test_shape_dtype_contract(vae):
    codes = np.arange(48, dtype=np.int32).reshape(3, 16) % 128
    m = seg.decode_codes(vae, codes)
    assert m.shape == (3, 64, 64) and m.dtype == np.float32
    assert seg.decode_codes(vae, np.zeros((0, 16), np.int32)).shape == (0, 64, 64)
    c = seg.encode_masks(vae, (m > 0).astype(np.float32))
    assert c.shape == (3, 16) and c.dtype == np.int32 and c.min() >= 0 and c.max() < 128
    assert seg.encode_masks(vae, np.zeros((0, 64, 64))).shape == (0, 16)
    with pytest.raises(InputError, match=r"\[0, 128\)"):
        seg.decode_codes(vae, np.full((1, 16), 128))
    with pytest.raises(InputError, match=r"^codes.npz: array 'c': must lie in \[0, 128\)"):
        seg.decode_codes(vae, np.full((1, 16), -1), where="codes.npz: array 'c'")
    with pytest.raises(InputError, match=r"\[M, 16\]"):
        seg.decode_codes(vae, np.zeros((1, 15), np.int32))
    with pytest.raises(InputError, match=r"\[M, 64, 64\]"):
        seg.encode_masks(vae, np.zeros((1, 32, 32)))


@pytest.mark.parametrize("key, change, message", [
    ("decoder.6.weight", "drop", "missing key 'decoder.6.weight'"),
    ("_vq_vae._embedding", "drop", "missing key '_vq_vae._embedding'"),
    ("encoder.8.net.2.bias", "drop", "missing key 'encoder.8.net.2.bias'"),
    ("decoder.4.weight", "reshape", r"key 'decoder.4.weight' has shape \[128, 128, 2, 8\], expected \[128, 128, 4, 4\]"),
    ("decoder.6.bias", "reshape", r"key 'decoder.6.bias' has shape \[128\], expected \[64\]"),
])
def test_bad_checkpoint_names_the_key(flat, tmp_path, key, change, message):
    bad = dict(flat)
    if change == "drop":
        del bad[key]
    elif key.endswith("bias"):
        bad[key] = np.zeros(128, np.float32)
    else:
        bad[key] = bad[key].reshape(128, 128, 2, 8)
    path = tmp_path / "vae.npz"
    np.savez(path, **bad)
    with pytest.raises(CheckpointError, match=message) as e:
        seg.load_vqvae(path)
    assert str(path) in str(e.value)


def test_unreadable_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        seg.load_vqvae(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        seg.load_vqvae(junk)


def test_decoder_only_checkpoint(flat):
    dec_only = {k: v for k, v in flat.items() if not k.startswith("encoder.")}
    v = seg.vqvae_from_flat(dec_only, require_encoder=False)
    assert v.encoder is None
    with pytest.raises(CheckpointError, match="encoder"):
        seg.encode_masks(v, np.zeros((1, 64, 64)))
    with pytest.raises(CheckpointError, match="missing key 'encoder.0.weight'"):
        seg.vqvae_from_flat(dec_only)


# --------------------------------------------------------------------------------------
# Encoder: an independent float64 numpy model of the TF op (tf.nn.conv2d 'SAME' padding
# arithmetic written out by hand, PyTorch-layout weights used directly).


def _np_conv_same(x, w, b, stride):
    """x f64[M, n, n, I]; w [O, I, k, k] (PyTorch); TF 'SAME': out = ceil(n / s)."""
    n, k = x.shape[1], w.shape[2]
    out = -(-n // stride)
    pad = max((out - 1) * stride + k - n, 0)
    xp = np.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2), (0, 0)))
    y = np.zeros(x.shape[:1] + (out, out, w.shape[0]))
    for i in range(k):
        for j in range(k):
            y += xp[:, i:i + stride * out:stride, j:j + stride * out:stride, :] @ w[:, :, i, j].T
    return y + b


def _np_encoder(flat, masks):
    f = {k: v.astype(np.float64) for k, v in flat.items()}
    x = 2.0 * (masks[..., None].astype(np.float64) - 0.5)
    for n in range(4):
        x = np.maximum(_np_conv_same(x, f[f"encoder.{2 * n}.weight"], f[f"encoder.{2 * n}.bias"], 2), 0)
    for blk in (8, 9):
        p = f"encoder.{blk}.net"
        y = np.maximum(_np_conv_same(x, f[p + ".0.weight"], f[p + ".0.bias"], 1), 0)
        y = np.maximum(_np_conv_same(y, f[p + ".2.weight"], f[p + ".2.bias"], 1), 0)
        x = x + _np_conv_same(y, f[p + ".4.weight"], f[p + ".4.bias"], 1)
    z = _np_conv_same(x, f["encoder.10.weight"], f["encoder.10.bias"], 1).reshape(len(masks), 16, 512)
    d = ((z[:, :, None, :] - f["_vq_vae._embedding"][None, None]) ** 2).sum(-1)  # [M, 16, 128]
    return z.reshape(len(masks), 4, 4, 512), d


@pytest.fixture(scope="module")
def test_masks(vae):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64] / 63.0
    blob = ((yy - 0.4) ** 2 + (xx - 0.6) ** 2 < 0.1).astype(np.float32)
    soft = np.clip(1.5 - 3 * np.hypot(yy - 0.5, xx - 0.3), 0, 1).astype(np.float32)
    from_decoder = (seg.decode_codes(vae, rng.integers(0, 128, (3, 16))) > 0).astype(np.float32)
    return np.concatenate([blob[None], soft[None], from_decoder, rng.uniform(size=(1, 64, 64))])


def test_encoder_matches_numpy_reference(flat, vae, test_masks):
    z_ref, dist = _np_encoder(flat, test_masks)
    z = seg.encoder_features(vae, test_masks)
    assert z.shape == (6, 4, 4, 512) and z.dtype == np.float32
    assert np.max(np.abs(z - z_ref)) <= 1e-5 * np.max(np.abs(z_ref))
    codes = seg.encode_masks(vae, test_masks)
    ref_codes = dist.argmin(-1)
    # Identical wherever the reference's nearest code wins by a margin float32 can resolve.
    sorted_d = np.sort(dist, axis=-1)
    clear = (sorted_d[..., 1] - sorted_d[..., 0]) > 1e-4 * sorted_d[..., 0]
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(codes[clear], ref_codes[clear])


def test_quantizer_recovers_codes_of_a_well_separated_codebook(vae):
    # Property: features within a small perturbation of codebook rows quantize back to
    # those rows (random N(0,1) rows in 512-d are ~32 apart; the noise norm is ~0.2).
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 128, (5, 4, 4))
    z = np.asarray(vae.codebook)[codes] + 0.01 * rng.standard_normal((5, 4, 4, 512))
    np.testing.assert_array_equal(seg.nearest_codes(vae.codebook, jnp.asarray(z, jnp.float32)), codes)


def test_encoder_emitting_a_codebook_row(flat):
    # An encoder whose last layer emits codebook row 37 everywhere (zero weights, bias =
    # row 37) must give code 37 at all 16 cells: loading + quantizer wired end to end.
    f = dict(flat)
    f["encoder.10.weight"] = np.zeros_like(f["encoder.10.weight"])
    f["encoder.10.bias"] = f["_vq_vae._embedding"][37].copy()
    v = seg.vqvae_from_flat(f)
    np.testing.assert_array_equal(seg.encode_masks(v, np.zeros((2, 64, 64))), np.full((2, 16), 37))


# --------------------------------------------------------------------------------------
# Encoding direction: full-resolution mask + box -> tokens (refcoco_mask2str rules).


def test_mask_to_tokens_follows_the_op(vae):
    h, w = 120, 90
    mask = np.zeros((h, w), np.uint8)
    mask[30:80, 20:70] = 255
    box = np.array([0.25, 0.2, 0.66, 0.78], np.float32)  # y1, x1, y2, x2
    ids = seg.mask_to_tokens(vae, mask, box, locseg=REL)
    assert ids.shape == (20,) and ids.dtype == np.int32
    bins = ids[:4] - REL.loc[0]
    np.testing.assert_array_equal(bins, np.round(box.astype(np.float64) * 1023).astype(int))
    # Crop rows round(120*.25)=30 : round(120*.66)=79, cols round(90*.2)=18 : round(90*.78)=70.
    crop = seg.mask_crop_64(mask, box)
    expected_crop = images.resize_antialiased(mask[30:79, 18:70] / 255.0, 64, 64, dtype=np.float64)
    np.testing.assert_allclose(crop, expected_crop, atol=1e-6)
    np.testing.assert_array_equal(ids[4:] - REL.seg[0], seg.encode_masks(vae, crop[None])[0])
    # bool and float masks mean the same as uint8 0/255.
    np.testing.assert_array_equal(seg.mask_to_tokens(vae, mask > 0, box, locseg=REL), ids)
    np.testing.assert_array_equal(seg.mask_to_tokens(vae, np.stack([mask / 255.0] * 3, -1), box, locseg=REL), ids)
    # The string is the op's suffix, and it parses back to the same tokens.
    s = seg.mask_to_string(vae, mask, box)
    assert s.startswith("<loc0256><loc0205><loc0675><loc0798><seg") and " " not in s
    r = structured.parse_segmentations(s)
    assert r.num_malformed == 0 and r.objects[0].bins == tuple(bins)
    assert r.objects[0].codes == tuple(ids[4:] - REL.seg[0])


def test_box_round_trip_decode_then_encode(vae, case):
    # tokens -> normalised box b/1023 -> refcoco_mask2str binning gives the same bins back.
    _, inp, ref = case
    for bins, pasted in zip(inp["box_loc_bins"], ref["pasted_binary"]):
        ids = seg.mask_to_tokens(vae, pasted, structured.bins_to_normalized(bins), locseg=REL)
        np.testing.assert_array_equal(ids[:4] - REL.loc[0], bins)


def test_mask_to_tokens_bad_input(vae):
    with pytest.raises(InputError, match="covers no pixels"):
        seg.mask_to_tokens(vae, np.ones((10, 10), bool), [0.5, 0.5, 0.52, 0.9], locseg=REL)
    with pytest.raises(InputError, match="2 masks but 1 boxes"):
        seg.masks_to_tokens(vae, [np.ones((4, 4), bool)] * 2, [[0, 0, 1, 1]], locseg=REL)
    with pytest.raises(InputError, match=r"f\[N, 4\].*got shape \[1, 3\]"):
        seg.masks_to_tokens(vae, [np.ones((4, 4), bool)], [[0, 0, 1]], locseg=REL)
    with pytest.raises(InputError, match="could not read"):
        seg.masks_to_tokens(vae, [np.ones((4, 4), bool)] * 2, [[0, 0, 1, 1], [0, 1]], locseg=REL)
    with pytest.raises(InputError, match="dtype"):
        seg.mask_to_tokens(vae, np.ones((4, 4), np.int64), [0, 0, 1, 1], locseg=REL)


def test_coco_box_conversion():
    np.testing.assert_allclose(seg.coco_box_to_normalized([10, 20, 30, 40], 100, 200),
                               [0.2, 0.05, 0.6, 0.2])


# --------------------------------------------------------------------------------------
# Overlay drawing.


def test_draw_overlay(case):
    _, _, ref = case
    img = PIL.Image.new("L", (224, 224), 128)  # grayscale input comes back RGB
    out = overlay.draw_overlay(img, [[99, 26, 218, 172], [2, 8, 135, 87]], ["cat", ""],
                               ref["pasted_binary"])
    assert out.mode == "RGB" and out.size == (224, 224)
    a = np.asarray(out).astype(int)
    inside = ref["pasted_binary"][0] & ~ref["pasted_binary"][1]
    inside[:35] = False  # keep away from label text and outlines
    inside[:, :105] = False
    inside[165:] = False
    inside[:, 212:] = False
    assert inside.any() and (np.abs(a[inside] - 128).sum(-1) > 20).all()
    untouched = np.ones((224, 224), bool)
    untouched[:180, :] = False
    assert (a[untouched] == 128).all()
    with pytest.raises(InputError, match="masks must be"):
        overlay.draw_overlay(img, [[0, 0, 5, 5]], ["x"], np.zeros((1, 10, 10), bool))
