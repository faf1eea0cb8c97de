"""Image loading and pre-processing to PaliGemma's model input.

Pipeline (big_vision's ``decode | resize(R) | value_range(-1, 1)``)::

    load_image(path)            -> u8[H, W, 3]   any PIL-readable file, normalised to RGB
    resize(img, R)              -> u8[R, R, 3]   "bigvision" (default) or "hf"
    to_model_input(img)         -> f32[R, R, 3]  in [-1, 1]

``preprocess(path, R)`` runs all three. Only numpy and PIL are used (never tensorflow,
transformers or torch).

Image modes (see docs/inputs.md): grayscale ("1", "L", "I;16", "I") is replicated to three
channels; 16/32-bit integer images are mapped 0..65535 -> 0..255; images with transparency
(RGBA, LA, PA, palette with a transparent index) are composited over **white**; palette,
CMYK and YCbCr images are converted to RGB with PIL; the EXIF orientation tag is applied;
animated files give their first frame; float ("F") images are rejected.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pgbench.errors import ImageError

log = logging.getLogger(__name__)

ImageSource = Union[str, Path, bytes, bytearray, memoryview, np.ndarray, Image.Image]

# PIL's own default decompression-bomb threshold (~89.5 megapixels, about 9459 x 9459).
# Larger images are refused with an ImageError rather than decoded (a 90 MP RGB image already
# takes 270 MB before resizing); pass max_pixels=None to lift pgbench's check (PIL's hard
# limit, twice Image.MAX_IMAGE_PIXELS, still applies unless you raise that global yourself).
DEFAULT_MAX_PIXELS = 89_478_485

RESIZE_METHODS = ("bigvision", "hf")
NORMALIZATIONS = ("bigvision", "hf")


def _describe(src) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes in memory>"
    return f"<{type(src).__name__}>"


def load_image(src: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file (path or encoded bytes) to ``u8[H, W, 3]`` RGB.

    Also accepts a PIL image or an array ``u8[H, W]`` / ``u8[H, W, 1|3|4]`` (normalised the
    same way). Missing, unreadable, corrupt, truncated or oversized inputs raise
    :class:`ImageError` naming the file.
    """
    name = _describe(src)
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, name)
    if isinstance(src, Image.Image):
        return _pil_to_rgb(src, name)
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.exists():
            raise ImageError(f"{name}: image file not found")
        if path.is_dir():
            raise ImageError(f"{name}: is a directory, not an image file")
        fp = path
    elif isinstance(src, (bytes, bytearray, memoryview)):
        fp = io.BytesIO(bytes(src))
    else:
        raise TypeError(f"load_image expects a path, bytes, PIL image or array, got {name}")

    try:
        with warnings.catch_warnings():
            # pgbench applies its own pixel limit below; PIL's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageError(
                        f"{name}: image is {w}x{h} = {w * h} pixels, more than the limit of "
                        f"{max_pixels}; downscale it first or pass max_pixels=None"
                    )
                im.load()
                return _pil_to_rgb(im, name)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: image too large for PIL's safety limit ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (PIL cannot identify the file format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # PIL reports truncated/corrupt data as OSError ("image file is truncated"),
        # SyntaxError (bad PNG chunks) or ValueError/EOFError depending on the codec.
        raise ImageError(f"{name}: corrupt or truncated image ({type(e).__name__}: {e})") from None


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _pil_to_rgb(im: Image.Image, name: str) -> np.ndarray:
    try:
        im = ImageOps.exif_transpose(im)
    except Exception as e:  # a malformed EXIF block must not make the image unusable
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", name, e)
    mode = im.mode
    if mode == "RGB":
        out = im
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in im.info):
        out = _composite_on_white(im)
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return _gray16_to_rgb(np.asarray(im), name)
    elif mode == "F":
        raise ImageError(f"{name}: floating-point image (PIL mode 'F') is not supported; "
                         "save it as 8- or 16-bit integers")
    else:  # "1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", ...
        try:
            out = im.convert("RGB")
        except (ValueError, OSError) as e:
            raise ImageError(f"{name}: cannot convert PIL mode {mode!r} to RGB ({e})") from None
    arr = np.asarray(out, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"{name}: expected RGB pixels after conversion, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _gray16_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    """16-bit (or 32-bit integer holding 16-bit) grayscale -> u8 by rounding x * 255 / 65535."""
    if arr.ndim != 2:
        raise ImageError(f"{name}: expected a 2-D 16-bit image, got shape {arr.shape}")
    x = np.clip(arr.astype(np.float64), 0, 65535)
    u8 = np.floor(x * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    return np.repeat(u8[:, :, None], 3, axis=2)


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ImageError(f"{name}: image arrays must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return np.asarray(_composite_on_white(Image.fromarray(arr, "RGBA")), dtype=np.uint8)
    raise ImageError(f"{name}: expected u8[H, W], u8[H, W, 1|3|4], got shape {arr.shape}")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm", ".pbm")


def collect_image_paths(paths) -> list[Path]:
    """Files given directly, plus the image files (by suffix, sorted) directly inside folders.

    A missing path, or a folder without any image file, raises :class:`ImageError`. Files
    named explicitly are kept whatever their suffix (load_image then judges the content).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"{p}: folder holds no image files "
                                 f"(looked for {', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise ImageError(f"{p}: image file or folder not found")
    return out


# --- resizing ---------------------------------------------------------------------------------


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"resize target must be positive, got {size}")
    return h, w


def _half_pixel_taps(in_size: int, out_size: int):
    """TF ResizeBilinear (half_pixel_centers=True) source indices and weights, in float32.

    For output index o: x = (o + 0.5) * (in/out) - 0.5; lower = max(floor(x), 0),
    upper = min(ceil(x), in - 1), lerp = x - floor(x). Edge samples therefore clamp.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    x = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    fl = np.floor(x)
    lower = np.maximum(fl.astype(np.int64), 0)
    upper = np.minimum(np.ceil(x).astype(np.int64), in_size - 1)
    return lower, upper, (x - fl).astype(np.float32)


def _bilinear_half_pixel(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """``tf.image.resize(img, (h, w), "bilinear", antialias=False)``: f32[h, w, C]."""
    x = img.astype(np.float32)
    y0, y1, ly = _half_pixel_taps(x.shape[0], h)
    x0, x1, lx = _half_pixel_taps(x.shape[1], w)
    lx = lx[None, :, None]
    # Same operation order as TF's kernel: lerp along x on both rows, then along y.
    top = x[y0][:, x0] + (x[y0][:, x1] - x[y0][:, x0]) * lx
    bottom = x[y1][:, x0] + (x[y1][:, x1] - x[y1][:, x0]) * lx
    return top + (bottom - top) * ly[:, None, None]


# One implementation of TF's antialiased bilinear resize (``tf.image.resize(...,
# antialias=True)``, i.e. ``scale_and_translate`` with a triangle kernel), shared by image
# pre-processing and the segmentation targets (pgbench.segmentation.encode). Kept in numpy
# rather than ``jax.image.resize(..., antialias=True)``, which implements the same kernel, on
# a measurement against the only resized arrays the big_vision reference holds (seg_vqvae's
# ``pasted_float``: its 64x64 masks resized to the box by PIL's bilinear, the same triangle
# filter): these weights reproduce them to 1.1e-7 x max (float32) / 5e-8 x max (float64),
# jax.image.resize to 4.0e-6 x max, because jax places the samples in float32 coordinates
# (on a 1000x750 -> 448 image the two differ by up to 6.6e-3 of 255, flipping 250 of 602112
# truncated uint8 values). numpy also keeps this module free of jax, so data-loader worker
# processes can run it. tests/test_images.py asserts both figures.


def triangle_weights(in_size: int, out_size: int) -> np.ndarray:
    """f64[out, in] resampling matrix of the antialiased linear (triangle) kernel.

    Output sample o sits at input coordinate s = (o + 0.5) * in/out (pixel-edge units);
    input pixel i contributes tri(|i + 0.5 - s| / k), the kernel widened to k = max(in/out, 1)
    when shrinking so every input pixel contributes; each row is normalised to sum to 1
    (taps beyond the border are dropped).
    """
    k = max(in_size / out_size, 1.0)
    centers = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size)
    src = np.arange(in_size, dtype=np.float64) + 0.5
    w = np.maximum(0.0, 1.0 - np.abs(src[None, :] - centers[:, None]) / k)
    total = w.sum(axis=1, keepdims=True)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)


def resize_antialiased(img: np.ndarray, height: int, width: int, *, dtype=np.float32
                       ) -> np.ndarray:
    """``tf.image.resize(img, (height, width), "bilinear", antialias=True)`` of ``f[H, W, ...]``.

    Separable: rows first, then columns, with :func:`triangle_weights` cast to ``dtype`` and
    the arithmetic in ``dtype`` (float32 as TF for images; float64 for the mask targets).
    Returns ``dtype[height, width, ...]``.
    """
    x = np.asarray(img, dtype)
    h_in, w_in = x.shape[:2]
    rest = x.shape[2:]
    wy = triangle_weights(h_in, height).astype(dtype)
    wx = triangle_weights(w_in, width).astype(dtype)
    rows = (wy @ x.reshape(h_in, -1)).reshape(height, w_in, -1)   # [height, W, C]
    out = np.tensordot(wx, rows, axes=([1], [1]))                  # [width, height, C]
    return np.ascontiguousarray(out.transpose(1, 0, 2)).reshape(height, width, *rest)


def _bilinear_antialias(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """``tf.image.resize(img, (h, w), "bilinear", antialias=True)``: f32[h, w, C]."""
    return resize_antialiased(img, h, w, dtype=np.float32)


def resize_float(img: np.ndarray, size, *, antialias: bool = False) -> np.ndarray:
    """big_vision's resize before the cast back to uint8: f32[h, w, 3] (not clipped)."""
    h, w = _size_hw(size)
    return (_bilinear_antialias if antialias else _bilinear_half_pixel)(img, h, w)


def resize(img: np.ndarray, size, *, method: str = "bigvision", antialias: bool = False
           ) -> np.ndarray:
    """Resize ``u8[H, W, 3]`` to ``u8[h, w, 3]`` (``size`` = R or (h, w)).

    ``"bigvision"`` (default): ``tf.image.resize`` bilinear with half-pixel centres
    (``antialias=False`` unless asked), then clip to [0, 255] and a *truncating* cast to
    uint8, as big_vision's ``resize`` pre-processing op does.
    ``"hf"``: PIL bicubic (``resample=3``), what the released ``SiglipImageProcessor`` uses;
    ``antialias`` does not apply (PIL's bicubic filter always widens on downsampling).
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"resize expects u8[H, W, 3], got {img.dtype}{list(img.shape)}")
    h, w = _size_hw(size)
    if method == "bigvision":
        f = resize_float(img, (h, w), antialias=antialias)
        return np.clip(f, 0.0, 255.0).astype(np.uint8)  # astype truncates toward zero
    if method == "hf":
        if antialias:
            raise ValueError("antialias applies only to method='bigvision'")
        out = Image.fromarray(img, "RGB").resize((w, h), resample=Image.Resampling.BICUBIC)
        return np.asarray(out, dtype=np.uint8)
    raise ValueError(f"unknown resize method {method!r}; expected one of {RESIZE_METHODS}")


# --- value range --------------------------------------------------------------------------------


def to_model_input(img: np.ndarray, *, normalization: str = "bigvision") -> np.ndarray:
    """uint8 pixels -> f32 in [-1, 1], any leading shape ``[..., 3]``.

    ``"bigvision"``: ``float32(-1) + (float32(x) / 255) * 2`` evaluated in float32 in that
    order, bit-identical to big_vision's ``value_range(-1, 1)``.
    ``"hf"``: ``(x * (1/255) - 0.5) / 0.5`` as the SigLIP processor computes it (rescale in
    float64, cast to float32, then normalise in float32). The two can differ by 1 ulp.
    """
    x = np.asarray(img)
    if x.dtype != np.uint8:
        raise ValueError(f"to_model_input expects uint8 pixels, got {x.dtype}")
    if normalization == "bigvision":
        f = x.astype(np.float32) / np.float32(255.0)
        return np.float32(-1.0) + f * np.float32(2.0)
    if normalization == "hf":
        f = (x.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
        return (f - np.float32(0.5)) / np.float32(0.5)
    raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")


def preprocess(src: ImageSource, size, *, method: str = "bigvision", antialias: bool = False,
               normalization: str | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """load -> resize -> [-1, 1]: f32[h, w, 3]. ``normalization`` defaults to ``method``."""
    img = load_image(src, max_pixels=max_pixels)
    img = resize(img, size, method=method, antialias=antialias)
    return to_model_input(img, normalization=normalization or method)
