"""``pgbench predict`` end to end on a tiny random checkpoint and the tiny tokenizer fixture.

The decoded text is checked against an independent path: the image pre-processed with
``images.preprocess``, the prompt encoded unpadded with ``batching.encode_prefix``, one
example at a time through ``decode.greedy_decode`` and ``Tokenizer.decode``.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from pgbench import batching, decode, images, predict, structured
from pgbench.checkpoints import load_checkpoint, to_bigvision_params, write_bigvision_npz
from pgbench.checkpoints.random_params import init_params
from pgbench.cli import main as cli_main
from pgbench.config import get_preset
from pgbench.tokenizer import Tokenizer
from tests.conftest import BIG_VISION_REFERENCE, REPO_ROOT

TOKENIZER = REPO_ROOT / "tests" / "fixtures" / "tiny_tokenizer" / "tokenizer.model"
MAX_NEW = 6


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(TOKENIZER)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tok):
    """A tiny pg1 checkpoint whose vocabulary is exactly the tokenizer's, and images."""
    root = tmp_path_factory.mktemp("predict")
    cfg = get_preset("pg1-tiny").replace_llm(vocab_size=tok.vocab_size)
    # key 6: random tiny models mostly repeat one token whatever the image; with this key the
    # images change the greedy text, which test_text_matches_direct_greedy_decode needs.
    model = init_params(cfg, jax.random.key(6))
    ckpt = root / "tiny.npz"
    write_bigvision_npz(to_bigvision_params(model), ckpt)

    imgs = root / "images"
    imgs.mkdir()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), np.uint8)).save(imgs / "a_rgb.png")
    Image.fromarray(rng.integers(0, 256, (70, 50), np.uint8), "L").save(imgs / "b_gray.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).convert("CMYK").save(
        imgs / "c_cmyk.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (30, 90, 4), np.uint8), "RGBA").save(imgs / "d_rgba.png")
    (imgs / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    Image.fromarray(rng.integers(0, 65536, (33, 45), np.uint16)).save(imgs / "f_gray16.png")
    # 5 readable images: with --batch-size 3 the second batch is padded
    valid = [imgs / n for n in ("a_rgb.png", "b_gray.png", "c_cmyk.jpg", "d_rgba.png",
                                "f_gray16.png")]
    return dict(root=root, ckpt=ckpt, imgs=imgs, valid=valid,
                corrupt=imgs / "e_corrupt.jpg")


def _run(setup, out, *extra, images_arg=None, prompt="caption en"):
    """The CLI with --batch-size 3 unless overridden (all runs with prompts of <= 8 tokens
    then share one compiled decode loop)."""
    if "--batch-size" not in extra:
        extra = ("--batch-size", "3", *extra)
    argv = ["predict", "--checkpoint", str(setup["ckpt"]), "--tokenizer", str(TOKENIZER),
            "--image", *(images_arg or [str(setup["imgs"])]), "--prompt", prompt,
            "--max-new-tokens", str(MAX_NEW), "--out", str(out), *extra]
    return cli_main(argv)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _direct_text(model, cfg, tok, path, prompt):
    """Independent path: one image through images.preprocess, the prompt through
    batching.encode_prefix (padded to 8 tokens, the shape the CLI's batch-1 run compiled,
    to save a compilation), greedy_decode, tokenizer decode."""
    x = images.preprocess(path, cfg.image_size)[None]
    ex = batching.encode_prefix(tok, prompt, max_len=8)
    ids = decode.greedy_decode(model, x, ex["tokens"][None], ex["input_mask"][None],
                               ex["mask_ar"][None], max_new_tokens=MAX_NEW, eos_id=tok.eos_id)
    return tok.decode(np.asarray(ids)[0])


@pytest.fixture(scope="module")
def folder_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_bs3")
    return _run(setup, out), out


def test_folder_run_writes_one_line_per_valid_image(folder_run, setup, capsys):
    code, out = folder_run
    assert code == 1  # one file skipped
    rows = _rows(out)
    assert [Path(r["image"]).name for r in rows] == [p.name for p in setup["valid"]]
    assert all(r["prompt"] == "caption en" and isinstance(r["text"], str) for r in rows)
    assert all("boxes" not in r for r in rows)  # captions carry no boxes
    assert not list(out.glob("*.png"))


def test_text_matches_direct_greedy_decode(folder_run, setup, tok):
    # the weights as the CLI read them (same config object, so jit reuses its compilation)
    model, cfg = load_checkpoint(setup["ckpt"])
    rows = {Path(r["image"]).name: r["text"] for r in _rows(folder_run[1])}
    for path in setup["valid"]:
        assert rows[path.name] == _direct_text(model, cfg, tok, path, "caption en"), path.name
    # the texts are not all the same (the images matter), or the comparison proves little
    assert len(set(rows.values())) > 1


def test_batch_size_one_gives_the_same_outputs(folder_run, setup, tmp_path):
    code = _run(setup, tmp_path, "--batch-size", "1",
                images_arg=[str(p) for p in setup["valid"]])
    assert code == 0
    assert _rows(tmp_path) == _rows(folder_run[1])


def test_int8_weights_predict_every_image(folder_run, setup, tmp_path):
    code = _run(setup, tmp_path, "--weights", "int8", images_arg=[str(p) for p in setup["valid"]])
    assert code == 0
    assert [r["image"] for r in _rows(tmp_path)] == [r["image"] for r in _rows(folder_run[1])]


def test_corrupt_file_is_reported_by_name(setup, tmp_path, capsys):
    code = _run(setup, tmp_path, images_arg=[str(setup["valid"][0]), str(setup["corrupt"])])
    err = capsys.readouterr().err
    assert code == 1
    assert f"skipped {setup['corrupt']}" in err
    assert "skipped 1 of 2" in err
    assert "Traceback" not in err
    assert len(_rows(tmp_path)) == 1


def test_only_corrupt_files_is_an_error(setup, tmp_path, capsys):
    code = _run(setup, tmp_path, images_arg=[str(setup["corrupt"])])
    assert code == 2
    assert "none of the 1 input file(s)" in capsys.readouterr().err


def test_detect_prompt_writes_overlays(setup, tmp_path, capsys):
    code = _run(setup, tmp_path, images_arg=[str(p) for p in setup["valid"]],
                prompt="detect cat")
    assert code == 0
    rows = _rows(tmp_path)
    assert len(rows) == len(setup["valid"])
    for r, path in zip(rows, setup["valid"]):
        assert {"boxes", "labels", "num_malformed", "overlay"} <= set(r)
        png = tmp_path / r["overlay"]
        assert png.is_file()
        with Image.open(png) as im, Image.open(path) as src:
            assert im.size == src.size  # drawn over the original, not the model input


def test_detect_boxes_are_printed_and_drawn(setup, tmp_path, capsys, monkeypatch):
    """The whole CLI path after decoding, with the (random) model's text replaced by a known
    detection answer: printed boxes, JSONL boxes in original pixels, a drawn PNG."""
    from pgbench.tokenizer import Tokenizer as Tok

    answer = (structured.format_object((0, 0, 511, 1023), "cat") + " ; <loc0001> broken ; "
              + structured.format_object((512, 256, 1023, 767), "dog"))
    monkeypatch.setattr(Tok, "decode", lambda self, ids, strict=False: answer)
    gray = setup["valid"][1]  # 50 wide, 70 high
    code = _run(setup, tmp_path, images_arg=[str(gray), str(gray)], prompt="detect a")
    out = capsys.readouterr().out
    assert code == 0
    assert "cat: x1=0.0 y1=0.0 x2=50.0 y2=35.0" in out  # 511/1023*70 = 34.97
    assert "dog: x1=12.5 y1=35.0 x2=37.5 y2=70.0" in out
    assert "1 malformed object(s) skipped" in out
    rows = _rows(tmp_path)
    assert rows[0]["labels"] == ["cat", "dog"] and rows[0]["num_malformed"] == 1
    np.testing.assert_allclose(rows[0]["boxes"][1], [12.51, 35.03, 37.49, 70.0], atol=0.01)
    assert [r["overlay"] for r in rows] == ["b_gray_overlay.png", "b_gray_overlay-2.png"]
    drawn = np.asarray(Image.open(tmp_path / rows[0]["overlay"]))
    plain = np.repeat(np.asarray(Image.open(gray))[:, :, None], 3, axis=2)
    assert drawn.shape == plain.shape and np.any(drawn != plain)


def test_overlay_draws_parsed_boxes(tmp_path):
    """Given a known detection string, the PNG shows the box at the right pixels."""
    original = np.full((100, 200, 3), 128, np.uint8)
    text = structured.format_object((102, 205, 511, 818), "cat")  # y1 x1 y2 x2 bins
    parsed = structured.parse_detections(text, image_hw=(100, 200))
    pred = predict.Prediction(image=Path("x.png"), prompt="detect cat", text=text,
                              tokens=np.zeros(1, np.int32), image_hw=(100, 200), parsed=parsed,
                              original=original)
    dest = predict._write_overlay(pred, tmp_path, set())
    drawn = np.asarray(Image.open(dest))
    x1, y1, x2, y2 = parsed.boxes[0]
    row = int(round((y1 + y2) / 2))
    assert np.any(drawn[row, int(x1)] != 128)  # left edge coloured
    assert np.all(drawn[row, int(x1) + 5: int(x2) - 5] == 128)  # inside untouched
    assert pred.to_json()["boxes"] == [[round(float(v), 2) for v in parsed.boxes[0]]]
    assert pred.to_json()["labels"] == ["cat"]


def test_segment_without_vae_says_boxes_only(setup, tmp_path, capsys):
    code = _run(setup, tmp_path, images_arg=[str(setup["valid"][0])], prompt="segment a")
    assert code == 0
    assert "no --vae" in capsys.readouterr().err
    assert "boxes" in _rows(tmp_path)[0]


VAE = BIG_VISION_REFERENCE / "seg_vqvae" / "vae_checkpoint.npz"  # released vae-oid layout


def test_segment_with_vae_loads_it(setup, tmp_path, capsys):
    code = _run(setup, tmp_path, "--vae", str(VAE), images_arg=[str(setup["valid"][0])],
                prompt="segment a")
    assert code == 0
    assert "no --vae" not in capsys.readouterr().err
    row = _rows(tmp_path)[0]
    assert "mask_pixels" in row and len(row["mask_pixels"]) == len(row["boxes"])


def test_segment_overlay_blends_the_pasted_mask(tmp_path):
    """A segmentation string through parse_output + the VAE: the PNG is tinted exactly on
    the pasted mask (recomputed with segmentation.paste_mask) and nowhere else."""
    from pgbench import segmentation

    vae = segmentation.load_vqvae(VAE, require_encoder=False)
    hw = (48, 64)
    bins, codes = (100, 150, 900, 800), [5, 17, 99, 3] * 4
    text = structured.format_object(bins, "blob", codes)
    parsed = predict.parse_output(text, "segment", hw, vae)
    assert parsed.num_malformed == 0 and parsed.masks.shape == (1, *hw)
    expected, ok = segmentation.paste_mask(segmentation.decode_codes(vae, [codes])[0], bins, hw)
    assert ok
    np.testing.assert_array_equal(parsed.masks[0], expected)

    pred = predict.Prediction(image=Path("s.png"), prompt="segment blob", text=text,
                              tokens=np.zeros(1, np.int32), image_hw=hw, parsed=parsed,
                              original=np.zeros((*hw, 3), np.uint8))
    drawn = np.asarray(Image.open(predict._write_overlay(pred, tmp_path, set())))
    (py1, px1, py2, px2), _ = structured.pixel_box(bins, *hw)
    inner = np.zeros(hw, bool)
    inner[py1 + 2:py2 - 2, px1 + 2:px2 - 2] = True  # away from the box outline and label
    inner[:py1 + 14] = False
    tinted = drawn.any(axis=2)
    np.testing.assert_array_equal(tinted[inner], expected[inner])
    assert expected[inner].any() and (~expected[inner]).any()  # both cases exercised


def test_missing_checkpoint_exits_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    code = cli_main(["predict", "--checkpoint", str(missing), "--tokenizer", str(TOKENIZER),
                     "--image", str(tmp_path), "--prompt", "caption en"])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def test_npz_without_tokenizer_is_a_clear_error(setup, tmp_path, capsys):
    code = cli_main(["predict", "--checkpoint", str(setup["ckpt"]), "--image",
                     str(setup["valid"][0]), "--prompt", "caption en", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--tokenizer" in err and str(setup["ckpt"]) in err


def test_prompt_over_budget_is_an_error(setup, tmp_path, capsys):
    code = _run(setup, tmp_path, "--max-prompt-len", "8", images_arg=[str(setup["valid"][0])],
                prompt="caption en with a rather long prompt")
    err = capsys.readouterr().err
    assert code == 2 and "--max-prompt-len 8" in err and "Traceback" not in err


@pytest.mark.slow  # its own compilation (~10 s); decode-level determinism is in test_decode
def test_sampling_is_deterministic_per_seed(setup, tmp_path):
    args = ("--sampler", "sample", "--temperature", "1.5", "--seed", "3")
    one = [str(p) for p in setup["valid"][:2]]
    assert _run(setup, tmp_path / "s1", *args, images_arg=one) == 0
    assert _run(setup, tmp_path / "s2", *args, images_arg=one) == 0
    assert _rows(tmp_path / "s1") == _rows(tmp_path / "s2")


def test_prompt_bucket_and_task():
    assert predict._bucket(3, 256) == 8 and predict._bucket(8, 256) == 8
    assert predict._bucket(9, 256) == 16 and predict._bucket(9, 10) == 10
    assert predict.task_of("detect cat ; dog") == "detect"
    assert predict.task_of("  Segment the car") == "segment"
    assert predict.task_of("caption en") is None and predict.task_of("detection") is None


def test_default_tokenizer_is_the_one_inside_an_hf_directory(tmp_path):
    from pgbench.errors import TokenizerError

    (tmp_path / "tokenizer.json").write_text("{}")
    assert predict.resolve_tokenizer_path(tmp_path, None) == tmp_path / "tokenizer.json"
    (tmp_path / "tokenizer.model").write_bytes(b"")
    assert predict.resolve_tokenizer_path(tmp_path, None) == tmp_path / "tokenizer.model"
    assert predict.resolve_tokenizer_path(tmp_path, "x.model") == Path("x.model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TokenizerError, match="--tokenizer"):
        predict.resolve_tokenizer_path(empty, None)


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "--batch-size must be >= 1"),
    ("--max-new-tokens", "0", "--max-new-tokens must be >= 1"),
])
def test_bad_numbers_exit_2(setup, tmp_path, capsys, flag, value, message):
    assert _run(setup, tmp_path, flag, value, images_arg=[str(setup["valid"][0])]) == 2
    assert message in capsys.readouterr().err


def test_tokenizer_of_another_model_is_an_error(tmp_path, capsys):
    """A model whose vocabulary (1100) is smaller than the prompt's ids (the separator is 1156)."""
    cfg = get_preset("pg1-tiny").replace_llm(vocab_size=1100)
    ckpt = tmp_path / "small_vocab.npz"
    write_bigvision_npz(to_bigvision_params(init_params(cfg, jax.random.key(1))), ckpt)
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    code = cli_main(["predict", "--checkpoint", str(ckpt), "--tokenizer", str(TOKENIZER),
                     "--image", str(img), "--prompt", "caption en", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "outside the model's vocabulary (1100 ids)" in err
