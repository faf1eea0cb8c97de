"""PaliGemma's segmentation VQ-VAE in JAX, and masks <-> ``<loc>``/``<seg>`` tokens.

The VQ-VAE (released as ``vae-oid.npz``, PyTorch layout) maps a 64x64 mask to a 4x4 grid of
codebook indices and back:

* decoder: codes i32[M, 16] -> codebook rows f32[M, 4, 4, 512] -> 1x1 conv + ReLU -> two
  residual blocks -> four stride-2 transposed convs (k4, PyTorch padding 1) + ReLU ->
  1x1 conv -> f32[M, 64, 64] (unclipped; "inside" means > 0);
* encoder: mask f32[M, 64, 64] in [0, 1] -> 2(m - 0.5) -> four 4x4 stride-2 'SAME' convs
  + ReLU -> two residual blocks -> 1x1 conv to 512 -> nearest codebook row (squared L2)
  -> i32[M, 16].

Masks from the model follow big_vision's segmentation evaluator (decode, PIL bilinear
resize of the float mask to the truncated pixel box, threshold > 0, paste into an
all-false canvas); training targets follow its ``refcoco_mask2str`` op (crop with
``round(H * coord)``, antialiased bilinear resize to 64x64, encode; bins ``round(c*1023)``).
See :mod:`pgbench.structured` for the coordinate conventions.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image

from pgbench import images, structured
from pgbench.errors import CheckpointError, InputError, ReferenceCaseError
from pgbench.checkpoints.bigvision_npz import read_npz_arrays
from pgbench.scoring import mask_iou

CODEBOOK_SIZE = 128
CODE_DIM = 512
MASK_SIZE = 64

# PyTorch-layout shapes of the released checkpoint: conv [out, in, kh, kw]; transposed conv
# [in, out, kh, kw]. Derived from the fixed channel plan 1-16-32-64-128 (encoder) and
# 128-128-64-32-16-1 (decoder), 2 residual blocks each.
_RES = {".net.0": (128, 128, 3, 3), ".net.2": (128, 128, 3, 3), ".net.4": (128, 128, 1, 1)}
ENCODER_SHAPES: dict[str, tuple[int, ...]] = {
    "encoder.0": (16, 1, 4, 4), "encoder.2": (32, 16, 4, 4), "encoder.4": (64, 32, 4, 4),
    "encoder.6": (128, 64, 4, 4),
    **{f"encoder.{b}{s}": shp for b in (8, 9) for s, shp in _RES.items()},
    "encoder.10": (CODE_DIM, 128, 1, 1),
}
DECODER_SHAPES: dict[str, tuple[int, ...]] = {
    "decoder.0": (128, CODE_DIM, 1, 1),
    **{f"decoder.{b}{s}": shp for b in (2, 3) for s, shp in _RES.items()},
    "decoder.4": (128, 128, 4, 4), "decoder.6": (128, 64, 4, 4), "decoder.8": (64, 32, 4, 4),
    "decoder.10": (32, 16, 4, 4), "decoder.12": (1, 16, 1, 1),
}
_TRANSPOSED = ("decoder.4", "decoder.6", "decoder.8", "decoder.10")
CODEBOOK_KEY = "_vq_vae._embedding"


def _bias_len(name: str, shape: tuple[int, ...]) -> int:
    return shape[1] if name in _TRANSPOSED else shape[0]


class VQVAE(eqx.Module):
    """Weights in JAX layout. Convs: HWIO kernels; transposed convs: the equivalent
    stride-1 correlation kernel (spatially flipped, HWIO) applied to the 2x-dilated input.
    ``encoder`` is None for a decoder-only checkpoint."""

    codebook: jax.Array  # f32[128, 512]
    decoder: dict[str, tuple[jax.Array, jax.Array]]
    encoder: dict[str, tuple[jax.Array, jax.Array]] | None


# --------------------------------------------------------------------------------------
# Loading.


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    return read_npz_arrays(path, missing_hint="VQ-VAE checkpoint not found; expected the vae-oid.npz layout")


def _fetch(flat: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if key not in flat:
        raise CheckpointError(f"{where}: missing key {key!r} (expected shape {list(shape)}; "
                              f"the vae-oid.npz layout)")
    arr = np.asarray(flat[key])
    if arr.shape != shape:
        raise CheckpointError(f"{where}: key {key!r} has shape {list(arr.shape)}, expected {list(shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise CheckpointError(f"{where}: key {key!r} has dtype {arr.dtype}, expected a float array")
    return arr.astype(np.float32)


def _conv_params(flat, name, shape, where, transposed=False):
    w = _fetch(flat, name + ".weight", shape, where)
    b = _fetch(flat, name + ".bias", (_bias_len(name, shape),), where)
    if transposed:
        # [in, out, kh, kw] -> flipped HWIO [kh, kw, in, out] for a correlation over the
        # dilated input (see _conv_transpose).
        k = np.transpose(w, (2, 3, 0, 1))[::-1, ::-1]
    else:
        k = np.transpose(w, (2, 3, 1, 0))  # [out, in, kh, kw] -> HWIO
    return jnp.asarray(np.ascontiguousarray(k)), jnp.asarray(b)


def vqvae_from_flat(flat: Mapping[str, np.ndarray], *, require_encoder: bool = True,
                    where: str = "VQ-VAE checkpoint") -> VQVAE:
    """Build a :class:`VQVAE` from a flat ``{key: array}`` dict in the vae-oid.npz layout.

    Raises CheckpointError naming the first missing or misshapen key. Keys other than
    those listed in ENCODER_SHAPES / DECODER_SHAPES / the codebook are ignored.
    """
    codebook = jnp.asarray(_fetch(flat, CODEBOOK_KEY, (CODEBOOK_SIZE, CODE_DIM), where))
    decoder = {n: _conv_params(flat, n, s, where, n in _TRANSPOSED) for n, s in DECODER_SHAPES.items()}
    encoder = None
    if require_encoder or any(k.startswith("encoder.") for k in flat):
        encoder = {n: _conv_params(flat, n, s, where) for n, s in ENCODER_SHAPES.items()}
    return VQVAE(codebook=codebook, decoder=decoder, encoder=encoder)


def load_vqvae(path: str | Path, *, require_encoder: bool = True) -> VQVAE:
    """Read a ``vae-oid.npz``-layout file. CheckpointError names any missing/misshapen key."""
    path = Path(path)
    return vqvae_from_flat(_read_npz(path), require_encoder=require_encoder, where=str(path))


# --------------------------------------------------------------------------------------
# The networks.

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, kb, stride=1, padding="SAME"):
    k, b = kb
    y = jax.lax.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=_DN,
                                     precision=jax.lax.Precision.HIGHEST)
    return y + b


def _conv_transpose(x, kb):
    """PyTorch ConvTranspose2d(k=4, stride=2, padding=1): [M, n, n, C] -> [M, 2n, 2n, C'].

    out[y] = sum_ky in[iy] W[ky] over y = 2 iy - 1 + ky. With the input dilated by 2
    (d[2 iy] = in[iy]) that is a plain correlation of d, padded by 2 on both sides, with the
    spatially flipped kernel: out[y] = sum_j d[y + j - 2] W[3 - j].
    """
    k, b = kb
    y = jax.lax.conv_general_dilated(x, k, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                     dimension_numbers=_DN, precision=jax.lax.Precision.HIGHEST)
    return y + b


def _resblock(params, prefix, x):
    y = jax.nn.relu(_conv(x, params[prefix + ".net.0"]))
    y = jax.nn.relu(_conv(y, params[prefix + ".net.2"]))
    return x + _conv(y, params[prefix + ".net.4"])  # no ReLU after the sum


def codes_to_quantized(vae: VQVAE, codes: jax.Array) -> jax.Array:
    """i32[M, 16] -> f32[M, 4, 4, 512]; code i sits at row i // 4, column i % 4."""
    m = codes.shape[0]
    return jnp.take(vae.codebook, codes.reshape(-1), axis=0).reshape(m, 4, 4, CODE_DIM)


@jax.jit
def _decode(vae: VQVAE, codes: jax.Array) -> jax.Array:
    p = vae.decoder
    x = jax.nn.relu(_conv(codes_to_quantized(vae, codes), p["decoder.0"]))
    x = _resblock(p, "decoder.2", x)
    x = _resblock(p, "decoder.3", x)
    for name in _TRANSPOSED:
        x = jax.nn.relu(_conv_transpose(x, p[name]))
    return _conv(x, p["decoder.12"])[..., 0]


def nearest_codes(codebook: jax.Array, z: jax.Array) -> jax.Array:
    """f32[..., 512] features -> i32[...] index of the nearest codebook row (squared L2,
    expanded as |z|^2 + |e|^2 - 2 z.e like the TF op; ties go to the lowest index)."""
    flat = z.reshape(-1, CODE_DIM)
    dist = (jnp.sum(flat * flat, axis=1, keepdims=True) + jnp.sum(codebook * codebook, axis=1)[None]
            - 2.0 * jnp.matmul(flat, codebook.T, precision=jax.lax.Precision.HIGHEST))
    return jnp.argmin(dist, axis=1).astype(jnp.int32).reshape(z.shape[:-1])


def _encoder_features(vae: VQVAE, masks: jax.Array) -> jax.Array:
    p = vae.encoder
    x = 2.0 * (masks[..., None] - 0.5)
    for name in ("encoder.0", "encoder.2", "encoder.4", "encoder.6"):
        x = jax.nn.relu(_conv(x, p[name], stride=2))  # 'SAME' = TF's: pad 1 before, 1 after
    x = _resblock(p, "encoder.8", x)
    x = _resblock(p, "encoder.9", x)
    return _conv(x, p["encoder.10"])  # [M, 4, 4, 512]


_encoder_features_jit = jax.jit(_encoder_features)


@jax.jit
def _encode(vae: VQVAE, masks: jax.Array) -> jax.Array:
    z = _encoder_features(vae, masks)
    return nearest_codes(vae.codebook, z).reshape(-1, 16)  # row-major over the 4x4 grid


def _check_codes(codes) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != 16 or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"VQ-VAE codes must be an integer array [M, 16], got {codes.dtype}{list(codes.shape)}")
    if codes.size and (codes.min() < 0 or codes.max() >= CODEBOOK_SIZE):
        raise InputError(f"VQ-VAE codes must lie in [0, {CODEBOOK_SIZE}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int32)


def _pad_to_bucket(x: np.ndarray) -> np.ndarray:
    """Pad the leading axis to a power of two so varying batch sizes reuse few compilations."""
    n = x.shape[0]
    size = 1 << max(n - 1, 0).bit_length()
    return np.concatenate([x, np.zeros((size - n,) + x.shape[1:], x.dtype)]) if size > n else x


def decode_codes(vae: VQVAE, codes) -> np.ndarray:
    """i32[M, 16] codes in [0, 128) -> f32[M, 64, 64] mask logits (threshold at 0)."""
    codes = _check_codes(codes)
    if codes.shape[0] == 0:
        return np.zeros((0, MASK_SIZE, MASK_SIZE), np.float32)
    return np.asarray(_decode(vae, jnp.asarray(_pad_to_bucket(codes))))[:codes.shape[0]]


def _check_masks64(vae: VQVAE, masks) -> np.ndarray:
    if vae.encoder is None:
        raise CheckpointError("this VQ-VAE was loaded without encoder.* weights; cannot encode masks")
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 3 or masks.shape[1:] != (MASK_SIZE, MASK_SIZE):
        raise InputError(f"masks to encode must be [M, 64, 64], got {list(masks.shape)}")
    return masks


def encoder_features(vae: VQVAE, masks) -> np.ndarray:
    """f32[M, 64, 64] masks in [0, 1] -> f32[M, 4, 4, 512] encoder output before quantizing."""
    masks = _check_masks64(vae, masks)
    return np.asarray(_encoder_features_jit(vae, jnp.asarray(masks)))


def encode_masks(vae: VQVAE, masks) -> np.ndarray:
    """f32[M, 64, 64] masks in [0, 1] -> i32[M, 16] nearest-codebook codes (row-major 4x4)."""
    masks = _check_masks64(vae, masks)
    if masks.shape[0] == 0:
        return np.zeros((0, 16), np.int32)
    return np.asarray(_encode(vae, jnp.asarray(_pad_to_bucket(masks))))[:masks.shape[0]]


# --------------------------------------------------------------------------------------
# Decoding direction: codes + box -> full-image mask (big_vision's segmentation evaluator).


def resize_mask_pil(mask64: np.ndarray, height: int, width: int) -> np.ndarray:
    """f32[64, 64] -> f32[height, width] with PIL's bilinear (antialiased triangle) on an 'F' image."""
    img = PIL.Image.fromarray(np.ascontiguousarray(mask64, np.float32))  # float32 -> mode 'F'
    return np.asarray(img.resize((int(width), int(height)), resample=PIL.Image.BILINEAR), np.float32)


def paste_mask(mask64: np.ndarray, bins: Sequence[int], image_hw: tuple[int, int]
               ) -> tuple[np.ndarray, bool]:
    """Resize the 64x64 logits into the (truncated) pixel box, threshold > 0, paste.

    Returns ``(bool[H, W], pasted)``; ``pasted`` is False (and the mask all-false) when the
    box is empty after int() truncation, which big_vision counts as an invalid prediction.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    canvas = np.zeros((h, w), bool)
    (y1, x1, y2, x2), ok = structured.pixel_box(bins, h, w)
    if not ok:
        return canvas, False
    canvas[y1:y2, x1:x2] = resize_mask_pil(mask64, y2 - y1, x2 - x1) > 0.0
    return canvas, True



@dataclasses.dataclass
class TokenMasks:
    """Masks from decoded token ids, one entry per example (big_vision evaluator rules).

    valid: bool[B] token validity; bins: i32[B, 4]; codes: i32[B, 16] (zeros when invalid);
    masks64: f32[B, 64, 64] decoder logits; pasted: bool[B] valid and non-empty in pixels;
    masks: list of bool[H_b, W_b] full-image masks (all-false unless pasted).
    """

    valid: np.ndarray
    bins: np.ndarray
    codes: np.ndarray
    masks64: np.ndarray
    pasted: np.ndarray
    masks: list[np.ndarray]

    @property
    def num_invalid(self) -> int:
        return int(np.sum(~self.pasted))


def _per_example_hw(image_hw, n: int) -> list[tuple[int, int]]:
    arr = np.asarray(image_hw, np.int64)
    if arr.shape == (2,):
        return [(int(arr[0]), int(arr[1]))] * n
    if arr.shape == (n, 2):
        return [(int(h), int(w)) for h, w in arr]
    raise InputError(f"image_hw must be (H, W) or one (H, W) per example ({n}), got shape {list(arr.shape)}")


def masks_from_token_ids(vae: VQVAE, ids, image_hw, *, loc_base: int = structured.LOC_BASE_ID,
                         seg_base: int = structured.SEG_BASE_ID) -> TokenMasks:
    """Decoded ids i32[B, T] -> one full-image mask per example, exactly as big_vision's
    segmentation evaluator (first 4 loc + 16 seg ids; the rest ignored).

    image_hw: (H, W) for all examples, or i32[B, 2].
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise InputError(f"token ids must be [B, T], got shape {list(ids.shape)}")
    valid, bins, codes = structured.parse_seg_token_batch(ids, loc_base=loc_base, seg_base=seg_base)
    masks64 = decode_codes(vae, codes)  # invalid rows decode code 0s, as the evaluator does
    masks, pasted = [], []
    for v, m64, b, hw in zip(valid, masks64, bins, _per_example_hw(image_hw, len(ids))):
        if v:
            m, ok = paste_mask(m64, b, hw)
        else:
            m, ok = np.zeros(hw, bool), False
        masks.append(m)
        pasted.append(ok)
    return TokenMasks(valid=valid, bins=bins, codes=codes, masks64=masks64,
                      pasted=np.array(pasted, bool), masks=masks)


def attach_masks(result: structured.ParseResult, vae: VQVAE) -> structured.ParseResult:
    """Fill ``result.masks`` (bool[N, H, W]) for parsed segmentation objects.

    Objects without codes (plain detections) or whose box is empty after pixel truncation
    get all-false masks. Needs ``result.image_hw``.
    """
    if result.image_hw is None:
        raise InputError("attach_masks needs the image size: parse with image_hw=(H, W)")
    h, w = result.image_hw
    out = np.zeros((len(result.objects), h, w), bool)
    with_codes = [i for i, o in enumerate(result.objects) if o.codes is not None]
    if with_codes:
        logits = decode_codes(vae, np.array([result.objects[i].codes for i in with_codes], np.int32))
        for i, m64 in zip(with_codes, logits):
            out[i], _ = paste_mask(m64, result.objects[i].bins, (h, w))
    result.masks = out
    return result


# --------------------------------------------------------------------------------------
# Encoding direction: full-image mask + box -> tokens (big_vision's refcoco_mask2str op).


def resize_antialiased_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """f[h, w] -> f64[height, width] like ``tf.image.resize(..., 'bilinear', antialias=True)``
    (:func:`pgbench.images.resize_antialiased` in float64)."""
    return images.resize_antialiased(img, height, width, dtype=np.float64)


def _mask_as_unit_float(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]  # the op reads channel 0 of the [H, W, 3] RefCOCO mask
    if mask.ndim != 2:
        raise InputError(f"mask must be [H, W] (or [H, W, C]), got shape {list(mask.shape)}")
    if mask.dtype == bool:
        return mask.astype(np.float64)
    if mask.dtype == np.uint8:
        return mask.astype(np.float64) / 255.0
    if np.issubdtype(mask.dtype, np.floating):
        return mask.astype(np.float64)
    raise InputError(f"mask dtype {mask.dtype} not supported (bool, uint8 0..255 or float 0..1)")


def mask_crop_64(mask: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The op's crop: rows round(H*y1):round(H*y2), cols round(W*x1):round(W*x2) (float32
    arithmetic, round-half-even as tf.round), resized to f32[64, 64] in [0, 1]."""
    m = _mask_as_unit_float(mask)
    h, w = m.shape
    b = np.asarray(box, np.float32)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise InputError(f"box must be 4 finite numbers (y1, x1, y2, x2) in [0, 1], got {box!r}")
    y1, y2 = (int(np.round(np.float32(h) * c)) for c in (b[0], b[2]))
    x1, x2 = (int(np.round(np.float32(w) * c)) for c in (b[1], b[3]))
    y1, x1 = max(y1, 0), max(x1, 0)
    crop = m[y1:y2, x1:x2]
    if crop.size == 0:
        raise InputError(f"box {tuple(float(c) for c in b)} covers no pixels of the {h}x{w} mask "
                         f"(rows {y1}:{y2}, cols {x1}:{x2})")
    return resize_antialiased_bilinear(crop, MASK_SIZE, MASK_SIZE).astype(np.float32)


def masks_to_tokens(vae: VQVAE, masks: Sequence[np.ndarray], boxes, *,
                    loc_base: int = structured.LOC_BASE_ID,
                    seg_base: int = structured.SEG_BASE_ID) -> np.ndarray:
    """Training targets for several objects: i32[N, 20] ids (4 loc, then 16 seg).

    masks: N full-resolution masks (bool, uint8 0..255 or float 0..1; [H, W] or [H, W, C]);
    boxes: f[N, 4] normalised (y1, x1, y2, x2), big_vision's ``objects/bbox`` convention.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(masks) != len(boxes):
        raise InputError(f"{len(masks)} masks but {len(boxes)} boxes")
    crops = np.stack([mask_crop_64(m, b) for m, b in zip(masks, boxes)]) if len(boxes) else \
        np.zeros((0, MASK_SIZE, MASK_SIZE), np.float32)
    codes = encode_masks(vae, crops)
    # float32 product, as the op computes bbox * 1023 on a float32 tensor.
    bins = np.clip(np.round(boxes * np.float32(structured.BIN_SCALE)), 0, structured.BIN_SCALE)
    return np.concatenate([bins.astype(np.int32) + loc_base, codes + seg_base], axis=1).astype(np.int32)


def mask_to_tokens(vae: VQVAE, mask: np.ndarray, box: Sequence[float], **bases) -> np.ndarray:
    """One object's target ids i32[20]; see :func:`masks_to_tokens`."""
    return masks_to_tokens(vae, [mask], [box], **bases)[0]


def mask_to_string(vae: VQVAE, mask: np.ndarray, box: Sequence[float]) -> str:
    """``"<locY1><locX1><locY2><locX2><segNNN>×16"`` (no separator, no label): the suffix
    ``refcoco_mask2str`` builds."""
    ids = masks_to_tokens(vae, [mask], [box])[0]
    return structured.format_object(ids[:4] - structured.LOC_BASE_ID, "", ids[4:] - structured.SEG_BASE_ID)


def coco_box_to_normalized(box_xywh: Sequence[float], height: int, width: int) -> np.ndarray:
    """COCO pixel box (x, y, w, h) -> normalised (y1, x1, y2, x2), the op's bbox convention."""
    x, y, bw, bh = (float(v) for v in box_xywh)
    return np.array([y / height, x / width, (y + bh) / height, (x + bw) / width], np.float64)


# --------------------------------------------------------------------------------------
# Parity runner for `pgbench parity` (kind = "vqvae").


def run_vqvae_case(case_dir: str | Path) -> dict[str, np.ndarray]:
    """Run the VQ-VAE (and, when the case has them, the evaluator's box path) on a FORMAT.md
    ``vqvae`` case. Returns arrays named as in its outputs.npz: always ``masks``,
    ``masks_raw`` and ``quantized``; with ``box_tokens``/``image_hw`` inputs also
    ``box_valid_tokens``, ``box_pasted``, ``box_norm``, ``box_pixels``, ``box_masks64``,
    ``pasted_float``, ``pasted_binary``; with ``gt_masks``/``gt_boxes`` also ``mask_iou``,
    ``box_iou``."""
    case_dir = Path(case_dir)
    try:
        header = json.loads((case_dir / "case.json").read_text())
        ck_path = case_dir / header["checkpoint"]["path"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ReferenceCaseError(f"{case_dir / 'case.json'}: unreadable or lacks checkpoint.path ({e})") from None
    inputs_path = case_dir / "inputs.npz"
    try:
        with np.load(inputs_path, allow_pickle=False) as f:
            inp = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ReferenceCaseError(f"{inputs_path}: not a readable .npz archive ({e})") from None
    if "codes" not in inp:
        raise ReferenceCaseError(f"{inputs_path}: missing array 'codes' (i32[M, 16])")
    vae = load_vqvae(ck_path, require_encoder=False)
    out: dict[str, np.ndarray] = {}
    codes = _check_codes(inp["codes"])
    out["masks"] = decode_codes(vae, codes)
    out["masks_raw"] = out["masks"][..., None]
    out["quantized"] = np.asarray(codes_to_quantized(vae, jnp.asarray(codes)))
    if "box_tokens" in inp and "image_hw" in inp:
        out.update(_box_outputs(vae, inp))
    return out


def _box_outputs(vae: VQVAE, inp: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    hw = tuple(int(v) for v in inp["image_hw"])
    tm = masks_from_token_ids(vae, inp["box_tokens"], hw)
    norm = structured.bins_to_normalized(tm.bins)
    pixels = np.array([structured.pixel_box(b, *hw)[0] for b in tm.bins], np.int32).reshape(-1, 4)
    pasted_float = np.full((len(tm.bins),) + hw, np.nan, np.float32)
    for i, (ok, m64, (y1, x1, y2, x2)) in enumerate(zip(tm.pasted, tm.masks64, pixels)):
        if ok:
            pasted_float[i, y1:y2, x1:x2] = resize_mask_pil(m64, y2 - y1, x2 - x1)
    out = {"box_valid_tokens": tm.valid, "box_pasted": tm.pasted, "box_norm": norm,
           "box_pixels": pixels, "box_masks64": tm.masks64, "pasted_float": pasted_float,
           "pasted_binary": np.stack(tm.masks) if tm.masks else np.zeros((0,) + hw, bool)}
    if "gt_masks" in inp:
        out["mask_iou"] = np.array([mask_iou.iou(p, g) if ok else 0.0 for p, g, ok
                                    in zip(tm.masks, inp["gt_masks"], tm.pasted)], np.float64)
    if "gt_boxes" in inp:
        out["box_iou"] = np.array([structured.box_iou_normalized(b, g) for b, g
                                   in zip(norm, np.asarray(inp["gt_boxes"]))], np.float64)
    return out
