"""PaliGemma's segmentation VQ-VAE in JAX: loading ``vae-oid.npz`` and the two networks.

The VQ-VAE (released as ``vae-oid.npz``, PyTorch layout) maps a 64x64 mask to a 4x4 grid of
codebook indices and back:

* decoder: codes i32[M, 16] -> codebook rows f32[M, 4, 4, 512] -> 1x1 conv + ReLU -> two
  residual blocks -> four stride-2 transposed convs (k4, PyTorch padding 1) + ReLU ->
  1x1 conv -> f32[M, 64, 64] (unclipped; "inside" means > 0);
* encoder: mask f32[M, 64, 64] in [0, 1] -> 2(m - 0.5) -> four 4x4 stride-2 'SAME' convs
  + ReLU -> two residual blocks -> 1x1 conv to 512 -> nearest codebook row (squared L2)
  -> i32[M, 16].
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pgbench.checkpoints.bigvision_npz import read_npz_arrays
from pgbench.errors import CheckpointError, InputError

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


def vqvae_to_flat(vae: VQVAE) -> dict[str, np.ndarray]:
    """The inverse of :func:`vqvae_from_flat`: float32 arrays in the vae-oid.npz (PyTorch)
    layout, encoder included when the model has one."""
    flat = {CODEBOOK_KEY: np.asarray(vae.codebook, np.float32)}
    for params in (vae.decoder, vae.encoder or {}):
        for name, (k, b) in params.items():
            k = np.asarray(k, np.float32)
            if name in _TRANSPOSED:  # flipped HWIO [kh, kw, in, out] -> [in, out, kh, kw]
                w = np.transpose(k[::-1, ::-1], (2, 3, 0, 1))
            else:  # HWIO -> [out, in, kh, kw]
                w = np.transpose(k, (3, 2, 0, 1))
            flat[name + ".weight"] = np.ascontiguousarray(w)
            flat[name + ".bias"] = np.asarray(b, np.float32)
    return flat


def save_vqvae(path: str | Path, vae: VQVAE, dtype=np.float32) -> Path:
    """Write ``vae`` as a vae-oid.npz-layout file (``dtype`` float16 halves its size;
    :func:`load_vqvae` reads it back as float32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **{k: v.astype(dtype) for k, v in vqvae_to_flat(vae).items()})
    return path


# --------------------------------------------------------------------------------------
# The networks.

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, kb, stride=1, padding="SAME"):
    k, b = kb
    y = jax.lax.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=_DN,
                                     precision=jax.lax.Precision.HIGHEST)
    return y + b


# For output row y = 2a + r of the transposed conv, the taps of the flipped kernel k (k[j] =
# W[3 - j]) that meet input rows a-1, a, a+1 (padded input rows a, a+1, a+2): r = 0 uses
# k[0], k[2] on the first two, r = 1 uses k[1], k[3] on the last two.
_PHASE_TAPS = ((0, 2, None), (None, 1, 3))


def _conv_transpose(x, kb):
    """PyTorch ConvTranspose2d(k=4, stride=2, padding=1): [M, n, n, C] -> [M, 2n, 2n, C'].

    out[y] = sum_ky in[iy] W[ky] over y = 2 iy - 1 + ky, so out[2a] = in[a] W[1] + in[a-1] W[3]
    and out[2a+1] = in[a+1] W[0] + in[a] W[2]. The four output phases (row and column
    parity) are computed as one 3x3 'SAME' correlation of the undilated input with 4C'
    output channels (each phase's 2x2 taps placed in a 3x3 kernel), then interleaved: the
    same sums as correlating the 2x-dilated input with the flipped 4x4 kernel, with a quarter
    of the multiplications (and a much cheaper gradient, for training).
    """
    k, b = kb
    m, n, _, _ = x.shape
    cin, cout = k.shape[2], k.shape[3]
    rows = []
    for ty in range(3):
        cols = []
        for tx in range(3):
            phases = [k[jy, jx] if jy is not None and jx is not None else jnp.zeros((cin, cout), k.dtype)
                      for jy in (_PHASE_TAPS[0][ty], _PHASE_TAPS[1][ty])
                      for jx in (_PHASE_TAPS[0][tx], _PHASE_TAPS[1][tx])]
            cols.append(jnp.stack(phases, axis=1).reshape(cin, 4 * cout))  # [(ry, rx, out)]
        rows.append(jnp.stack(cols))
    y = jax.lax.conv_general_dilated(x, jnp.stack(rows), (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN,
                                     precision=jax.lax.Precision.HIGHEST)
    y = y.reshape(m, n, n, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5).reshape(m, 2 * n, 2 * n, cout)
    return y + b


def _resblock(params, prefix, x):
    y = jax.nn.relu(_conv(x, params[prefix + ".net.0"]))
    y = jax.nn.relu(_conv(y, params[prefix + ".net.2"]))
    return x + _conv(y, params[prefix + ".net.4"])  # no ReLU after the sum


def codes_to_quantized(vae: VQVAE, codes: jax.Array) -> jax.Array:
    """i32[M, 16] -> f32[M, 4, 4, 512]; code i sits at row i // 4, column i % 4."""
    m = codes.shape[0]
    return jnp.take(vae.codebook, codes.reshape(-1), axis=0).reshape(m, 4, 4, CODE_DIM)


def decoder_net(vae: VQVAE, quantized: jax.Array) -> jax.Array:
    """f32[M, 4, 4, 512] (codebook rows, or any features) -> f32[M, 64, 64] logits. Pure and
    differentiable (training uses it with straight-through features)."""
    p = vae.decoder
    x = jax.nn.relu(_conv(quantized, p["decoder.0"]))
    x = _resblock(p, "decoder.2", x)
    x = _resblock(p, "decoder.3", x)
    for name in _TRANSPOSED:
        x = jax.nn.relu(_conv_transpose(x, p[name]))
    return _conv(x, p["decoder.12"])[..., 0]


@jax.jit
def _decode(vae: VQVAE, codes: jax.Array) -> jax.Array:
    return decoder_net(vae, codes_to_quantized(vae, codes))


def nearest_codes(codebook: jax.Array, z: jax.Array) -> jax.Array:
    """f32[..., 512] features -> i32[...] index of the nearest codebook row (squared L2,
    expanded as |z|^2 + |e|^2 - 2 z.e like the TF op; ties go to the lowest index)."""
    flat = z.reshape(-1, CODE_DIM)
    dist = (jnp.sum(flat * flat, axis=1, keepdims=True) + jnp.sum(codebook * codebook, axis=1)[None]
            - 2.0 * jnp.matmul(flat, codebook.T, precision=jax.lax.Precision.HIGHEST))
    return jnp.argmin(dist, axis=1).astype(jnp.int32).reshape(z.shape[:-1])


def encoder_net(vae: VQVAE, masks: jax.Array) -> jax.Array:
    """f32[M, 64, 64] masks in [0, 1] -> f32[M, 4, 4, 512] features before quantizing. Pure."""
    p = vae.encoder
    x = 2.0 * (masks[..., None] - 0.5)
    for name in ("encoder.0", "encoder.2", "encoder.4", "encoder.6"):
        x = jax.nn.relu(_conv(x, p[name], stride=2))  # 'SAME' = TF's: pad 1 before, 1 after
    x = _resblock(p, "encoder.8", x)
    x = _resblock(p, "encoder.9", x)
    return _conv(x, p["encoder.10"])  # [M, 4, 4, 512]


_encoder_features_jit = jax.jit(encoder_net)


@jax.jit
def _encode(vae: VQVAE, masks: jax.Array) -> jax.Array:
    z = encoder_net(vae, masks)
    return nearest_codes(vae.codebook, z).reshape(-1, 16)  # row-major over the 4x4 grid


def check_codes(codes, where: str = "VQ-VAE codes") -> np.ndarray:
    """Validate codes i[M, 16] in [0, 128) -> i32[M, 16]; InputError prefixed by ``where``
    (e.g. the file and array the codes came from) otherwise."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != 16 or not np.issubdtype(codes.dtype, np.integer):
        raise InputError(f"{where}: must be an integer array [M, 16], got {codes.dtype}{list(codes.shape)}")
    if codes.size and (codes.min() < 0 or codes.max() >= CODEBOOK_SIZE):
        raise InputError(f"{where}: must lie in [0, {CODEBOOK_SIZE}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int32)


def _pad_to_bucket(x: np.ndarray) -> np.ndarray:
    """Pad the leading axis to a power of two so varying batch sizes reuse few compilations."""
    n = x.shape[0]
    size = 1 << max(n - 1, 0).bit_length()
    return np.concatenate([x, np.zeros((size - n,) + x.shape[1:], x.dtype)]) if size > n else x


def decode_codes(vae: VQVAE, codes, *, where: str = "VQ-VAE codes") -> np.ndarray:
    """i32[M, 16] codes in [0, 128) -> f32[M, 64, 64] mask logits (threshold at 0).

    Bad codes raise InputError prefixed by ``where``."""
    codes = check_codes(codes, where)
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
