"""Image loading (modes, EXIF, bad files), resizing and the [-1, 1] value range."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pgbench import images as I
from pgbench.errors import ImageError
from tests.conftest import BIG_VISION_REFERENCE

RNG = np.random.default_rng(1234)
PIXELS = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def _save(tmp_path, im: Image.Image, name: str, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


# --- loading: modes ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_rgb_lossless_roundtrip(tmp_path, fmt):
    kw = {"lossless": True} if fmt == "WEBP" else {}
    path = _save(tmp_path, Image.fromarray(PIXELS), f"x.{fmt.lower()}", format=fmt, **kw)
    out = I.load_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, PIXELS)
    np.testing.assert_array_equal(I.load_image(path.read_bytes()), PIXELS)
    np.testing.assert_array_equal(I.load_image(str(path)), PIXELS)


def test_grayscale_and_bilevel(tmp_path):
    gray = PIXELS[:, :, 0]
    out = I.load_image(_save(tmp_path, Image.fromarray(gray, "L"), "g.png"))
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=-1))
    bits = gray > 128
    out = I.load_image(_save(tmp_path, Image.fromarray(bits), "b.png"))
    np.testing.assert_array_equal(out, np.where(bits, 255, 0)[..., None].repeat(3, -1))


def test_rgba_and_la_composite_on_white(tmp_path):
    alpha = np.array([[0, 255, 128, 51]], dtype=np.uint8).repeat(2, axis=0)
    rgb = np.full((2, 4, 3), (200, 10, 0), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    out = I.load_image(_save(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png"))
    a = alpha[..., None].astype(np.float64) / 255
    expected = rgb * a + 255 * (1 - a)  # "over" a white background
    assert np.abs(out.astype(np.float64) - expected).max() <= 1.0
    np.testing.assert_array_equal(out[:, 0], 255)  # fully transparent -> white
    np.testing.assert_array_equal(out[:, 1], rgb[:, 1])  # opaque -> unchanged
    la = np.stack([np.full((2, 4), 40, np.uint8), alpha], axis=-1)
    out = I.load_image(_save(tmp_path, Image.fromarray(la, "LA"), "la.png"))
    assert np.abs(out[..., 0].astype(float) - (40 * a[..., 0] + 255 * (1 - a[..., 0]))).max() <= 1
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.fromarray(PIXELS).quantize(colors=16)
    expected = np.asarray(p.convert("RGB"))
    np.testing.assert_array_equal(I.load_image(_save(tmp_path, p, "p.png")), expected)
    index0 = np.asarray(p) == 0
    path = _save(tmp_path, p, "pt.png", transparency=0)
    out = I.load_image(path)
    np.testing.assert_array_equal(out[index0], 255)
    np.testing.assert_array_equal(out[~index0], expected[~index0])
    gif = _save(tmp_path, p, "p.gif")
    np.testing.assert_array_equal(I.load_image(gif), expected)


def test_cmyk(tmp_path):
    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putpixel((0, 0), (0, 0, 0, 0))  # no ink -> white
    cmyk.putpixel((1, 0), (255, 0, 0, 0))  # full cyan -> (0, 255, 255)
    cmyk.putpixel((2, 0), (0, 0, 0, 255))  # full black -> black
    out = I.load_image(_save(tmp_path, cmyk, "c.tiff"))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [0, 255, 255], [0, 0, 0]])
    jpg = I.load_image(_save(tmp_path, cmyk.resize((16, 16)), "c.jpg", quality=95))
    assert jpg.shape == (16, 16, 3)


def test_16_bit_and_32_bit_gray(tmp_path):
    values = np.array([[0, 257, 32768, 65535], [128, 255 * 257, 1000, 40000]], dtype=np.uint16)
    expected = np.floor(values / 65535 * 255 + 0.5).astype(np.uint8)
    path = _save(tmp_path, Image.fromarray(values), "g16.png")
    assert Image.open(path).mode.startswith("I")
    out = I.load_image(path)
    np.testing.assert_array_equal(out, expected[..., None].repeat(3, -1))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    path = _save(tmp_path, Image.fromarray(values.astype(np.int32)), "g32.tiff")
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(I.load_image(path)[..., 1], expected)


def test_float_image_rejected(tmp_path):
    path = _save(tmp_path, Image.fromarray(np.zeros((4, 4), np.float32)), "f.tiff")
    with pytest.raises(ImageError, match="f.tiff.*'F'"):
        I.load_image(path)


@pytest.mark.parametrize("orientation,rot", [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                             (6, lambda a: np.rot90(a, -1)),
                                             (8, lambda a: np.rot90(a, 1)),
                                             (2, lambda a: a[:, ::-1])])
def test_exif_orientation_applied(tmp_path, orientation, rot):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path, Image.fromarray(PIXELS), "o.png", exif=exif)
    np.testing.assert_array_equal(I.load_image(path), rot(PIXELS))


def test_arrays_and_pil_images():
    np.testing.assert_array_equal(I.load_image(PIXELS), PIXELS)
    np.testing.assert_array_equal(I.load_image(PIXELS[..., 0]), PIXELS[..., :1].repeat(3, -1))
    np.testing.assert_array_equal(I.load_image(Image.fromarray(PIXELS)), PIXELS)
    with pytest.raises(ImageError, match="uint8"):
        I.load_image(PIXELS.astype(np.float32))


# --- loading: bad input ----------------------------------------------------------------------


def test_missing_directory_and_non_image(tmp_path):
    with pytest.raises(ImageError, match="nope.png: image file not found"):
        I.load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        I.load_image(tmp_path)
    txt = tmp_path / "notes.jpg"
    txt.write_text("this is not an image\n")
    with pytest.raises(ImageError, match="notes.jpg: not an image"):
        I.load_image(txt)
    with pytest.raises(ImageError, match="bytes in memory.*not an image"):
        I.load_image(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_and_corrupt(tmp_path, fmt):
    big = np.asarray(Image.fromarray(PIXELS).resize((200, 150)))
    path = _save(tmp_path, Image.fromarray(big), f"full.{fmt.lower()}", format=fmt)
    data = path.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=f"cut.{fmt.lower()}: corrupt or truncated"):
        I.load_image(cut)
    bad = bytearray(data)
    bad[len(bad) // 3: len(bad) // 3 + 64] = b"\xff" * 64 if fmt == "PNG" else b"\x00" * 64
    mangled = tmp_path / f"bad.{fmt.lower()}"
    mangled.write_bytes(bytes(bad))
    if fmt == "PNG":  # PNG checksums every chunk; JPEG decoders just show garbage pixels
        with pytest.raises(ImageError, match="bad.png"):
            I.load_image(mangled)


def test_huge_images_refused(tmp_path, monkeypatch):
    path = _save(tmp_path, Image.fromarray(PIXELS), "big.png")
    with pytest.raises(ImageError, match=r"big.png: image is 30x20 = 600 pixels.*limit of 599"):
        I.load_image(path, max_pixels=599)
    assert I.load_image(path, max_pixels=600).shape == (20, 30, 3)
    # PIL's own decompression-bomb guard (2 x MAX_IMAGE_PIXELS) also becomes an ImageError.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="big.png: image too large"):
        I.load_image(path, max_pixels=None)


# --- resize ----------------------------------------------------------------------------------


def test_bigvision_resize_hand_computed():
    # One row [0, 100] -> 4 pixels; half-pixel centres sample at -0.25, 0.25, 0.75, 1.25,
    # edges clamp: 0, 25, 75, 100.
    row = np.array([[[0] * 3, [100] * 3]], dtype=np.uint8)
    np.testing.assert_allclose(I.resize_float(row, (1, 4))[0, :, 0], [0, 25, 75, 100])
    # Truncating cast: [0, 1] -> 0, 0.25, 0.75, 1 -> 0, 0, 0, 1 (rounding would give 0, 0, 1, 1).
    row = np.array([[[0] * 3, [1] * 3]], dtype=np.uint8)
    np.testing.assert_array_equal(I.resize(row, (1, 4))[0, :, 0], [0, 0, 0, 1])
    # Downsampling 4 -> 2 without antialias: samples at 0.5 and 2.5.
    row = np.array([[[v] * 3 for v in (0, 10, 20, 40)]], dtype=np.uint8)
    np.testing.assert_allclose(I.resize_float(row, (1, 2))[0, :, 0], [5, 30])
    # With antialias the triangle kernel widens to radius 2: weights 3:3:1 and 1:3:3.
    np.testing.assert_allclose(I.resize_float(row, (1, 2), antialias=True)[0, :, 0],
                               [(0 * 3 + 10 * 3 + 20 * 1) / 7, (10 + 20 * 3 + 40 * 3) / 7],
                               rtol=1e-6)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("shape,size", [((37, 53), (56, 56)), ((300, 200), (56, 56)),
                                        ((17, 9), (28, 40)), ((224, 224), (100, 37)),
                                        ((56, 56), (56, 56))])
def test_bigvision_resize_matches_jax_image_resize(shape, size, antialias):
    """jax.image.resize("linear") uses half-pixel centres like tf.image.resize."""
    img = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = I.resize_float(img, size, antialias=antialias)
    ref = np.asarray(jax.image.resize(jnp.asarray(img, jnp.float32), (*size, 3), "linear",
                                      antialias=antialias))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-3)  # of values up to 255
    u8 = I.resize(img, size, antialias=antialias)
    assert u8.dtype == np.uint8 and u8.shape == (*size, 3)
    # The cast truncates: wherever the float is not within float error of an integer,
    # the uint8 value is its floor.
    clear = np.abs(ref - np.round(ref)) > 5e-3
    np.testing.assert_array_equal(u8[clear], np.floor(np.clip(ref[clear], 0, 255)))
    if shape == size and not antialias:
        np.testing.assert_array_equal(u8, img)


def test_triangle_weights_hand_computed():
    # 4 -> 2: centres at input 1.0 and 3.0, kernel radius 2 -> taps 3:3:1:0 and 0:1:3:3 over 7.
    np.testing.assert_allclose(I.triangle_weights(4, 2), [[3 / 7, 3 / 7, 1 / 7, 0], [0, 1 / 7, 3 / 7, 3 / 7]],
                               rtol=1e-15)
    # Upsampling 2 -> 4: radius 1, centres 0.25, 0.75, 1.25, 1.75 (edge taps dropped, renormalised).
    np.testing.assert_allclose(I.triangle_weights(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    assert I.triangle_weights(5, 5).tolist() == np.eye(5).tolist()


def test_antialiased_resize_against_the_reference_resized_masks(big_vision_reference):
    """The measurement behind keeping the numpy triangle resize (see images.py): the only
    resized arrays in the big_vision reference are seg_vqvae's ``pasted_float`` (its 64x64
    masks resized into the box by PIL's bilinear, the same antialiased triangle filter).
    Measured: numpy float32 1.1e-7, float64 5e-8, jax.image.resize 4.0e-6 (x max|ref|)."""
    out = dict(np.load(big_vision_reference / "seg_vqvae" / "outputs.npz"))
    for m64, pasted, (y1, x1, y2, x2) in zip(out["box_masks64"], out["pasted_float"], out["box_pixels"]):
        ref = pasted[y1:y2, x1:x2].astype(np.float64)
        scale = np.max(np.abs(ref))
        h, w = ref.shape
        for dtype, tol in ((np.float32, 3e-7), (np.float64, 2e-7)):
            ours = I.resize_antialiased(m64, h, w, dtype=dtype)
            assert ours.dtype == dtype and ours.shape == (h, w)
            assert np.max(np.abs(ours - ref)) <= tol * scale, dtype
        jx = np.asarray(jax.image.resize(jnp.asarray(m64), (h, w), "linear", antialias=True))
        err = np.max(np.abs(jx - ref)) / scale
        assert 1e-6 < err < 1e-5, err  # close, but ~40x further than the numpy weights


def test_hf_resize_is_pil_bicubic():
    img = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(img).resize((40, 28), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(I.resize(img, (28, 40), method="hf"), ref)
    with pytest.raises(ValueError, match="unknown resize method"):
        I.resize(img, 28, method="nearest")
    with pytest.raises(ValueError, match="u8"):
        I.resize(img.astype(np.float32), 28)


# --- value range -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["pg1_tiny", "pg2_tiny"])
def test_value_range_bit_exact_vs_big_vision(case):
    d = np.load(BIG_VISION_REFERENCE / case / "inputs.npz")
    ours = I.to_model_input(d["images_uint8"])
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, d["images"])  # bit for bit
    np.testing.assert_array_equal(I.to_model_input(d["images_uint8"]), d["decode_images"])


def test_value_range_endpoints_and_hf_normalisation():
    x = np.arange(256, dtype=np.uint8)
    bv = I.to_model_input(x)
    hf = I.to_model_input(x, normalization="hf")
    assert bv[0] == -1 and bv[255] == 1 and hf[0] == -1 and hf[255] == 1
    exact = np.arange(256) / 255 * 2 - 1
    np.testing.assert_allclose(bv, exact, rtol=0, atol=2e-7)
    np.testing.assert_allclose(hf, exact, rtol=0, atol=2e-7)
    assert np.all(np.diff(bv) > 0)
    with pytest.raises(ValueError):
        I.to_model_input(x, normalization="imagenet")


def test_preprocess_end_to_end(tmp_path):
    path = _save(tmp_path, Image.fromarray(PIXELS), "x.png")
    out = I.preprocess(path, 28)
    assert out.shape == (28, 28, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, I.to_model_input(I.resize(PIXELS, 28)))
    hf = I.preprocess(path, 28, method="hf")
    np.testing.assert_array_equal(
        hf, I.to_model_input(I.resize(PIXELS, 28, method="hf"), normalization="hf"))


@pytest.mark.slow
def test_hf_path_matches_siglip_image_processor():
    """Our "hf" resize + normalisation vs the released processor's PIL backend."""
    pytest.importorskip("transformers")
    try:
        from transformers.models.siglip.image_processing_pil_siglip import (
            SiglipImageProcessorPil as Processor)
    except ImportError:  # older transformers: the slow processor is PIL/numpy already
        from transformers import SiglipImageProcessor as Processor
    for shape, size in [((37, 53), 56), ((300, 200), 224), ((224, 224), 224)]:
        img = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
        proc = Processor(size={"height": size, "width": size}, resample=3)
        ref = proc(images=img, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
        ours = I.to_model_input(I.resize(img, size, method="hf"), normalization="hf")
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_collect_image_paths(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    single = tmp_path / "notes.txt"
    found = I.collect_image_paths([tmp_path, single])
    assert [p.name for p in found] == ["a.JPG", "b.png", "c.webp", "notes.txt"]
    assert I.collect_image_paths(str(single)) == [single]
    with pytest.raises(ImageError, match="sub: folder holds no image files"):
        I.collect_image_paths(tmp_path / "sub")
    with pytest.raises(ImageError, match="gone.png: image file or folder not found"):
        I.collect_image_paths([tmp_path / "gone.png"])
