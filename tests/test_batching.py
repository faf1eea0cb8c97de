"""Model inputs: the big_vision token layout, masks, padding, truncation policy, batches."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pgbench import batching as B
from pgbench import images as I
from pgbench.errors import InputError
from pgbench.tokenizer import Tokenizer
from tests.conftest import BIG_VISION_REFERENCE, REPO_ROOT

FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "tiny_tokenizer"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(FIXTURE_DIR / "tokenizer.model")


def test_training_example_layout(tok):
    prefix, suffix = tok.encode("caption en"), tok.encode("a cat")
    ex = B.encode_example(tok, "caption en", "a cat", max_len=16)
    n_head = 1 + len(prefix) + 1
    n_real = n_head + len(suffix) + 1
    expected = [tok.bos_id, *prefix, 1156, *suffix, tok.eos_id] + [0] * (16 - n_real)
    assert ex["tokens"].tolist() == expected
    assert ex["tokens"].dtype == np.int32 and ex["mask_ar"].dtype == np.int32
    assert ex["mask_loss"].dtype == np.int32 and ex["input_mask"].dtype == np.bool_
    assert ex["input_mask"].tolist() == [True] * n_real + [False] * (16 - n_real)
    assert ex["mask_ar"].tolist() == [0] * n_head + [1] * (16 - n_head)
    assert ex["mask_loss"].tolist() == [0] * n_head + [1] * (n_real - n_head) + [0] * (16 - n_real)


def test_separator_is_tokenized_separately(tok):
    # However the prefix ends, the separator stays its own single id.
    for prefix in ("caption en", "answer en what?", "ends with space ", "ends with newline\n"):
        ex = B.encode_example(tok, prefix, "x", max_len=40)
        n = len(tok.encode(prefix)) + 1
        assert ex["tokens"][n] == 1156 and ex["mask_ar"][n] == 0 and ex["mask_ar"][n + 1] == 1


def test_prefix_only_decode_layout(tok):
    ex = B.encode_prefix(tok, "caption en", max_len=12)
    n = 1 + len(tok.encode("caption en")) + 1
    assert ex["tokens"].tolist() == [2, *tok.encode("caption en"), 1156] + [0] * (12 - n)
    assert ex["input_mask"].tolist() == [True] * n + [False] * (12 - n)
    assert ex["mask_ar"].tolist() == [0] * n + [1] * (12 - n)
    assert not ex["mask_loss"].any()
    assert tok.eos_id not in ex["tokens"].tolist()
    unpadded = B.encode_example(tok, "caption en", None, max_len=None)
    assert len(unpadded["tokens"]) == n


def test_empty_suffix_is_just_eos(tok):
    ex = B.encode_example(tok, "ocr", "", max_len=None)
    assert ex["tokens"].tolist()[-2:] == [1156, tok.eos_id]
    assert ex["mask_loss"].tolist()[-1] == 1 and ex["mask_loss"].sum() == 1


# --- against big_vision's own pre-processed inputs -----------------------------------------


class _ReplayTokenizer:
    """Stands in for the (unshipped) reference tokenizer: texts are keys into known id lists."""

    bos_id, eos_id, pad_id = 2, 1, 0

    def __init__(self, table):
        self.table = table

    def encode(self, text, *, bos=False, eos=False):
        return [self.bos_id] * bos + list(self.table[text]) + [self.eos_id] * eos


def _split_reference_row(tokens, input_mask):
    """Reference row -> (prefix ids, suffix ids or None), checking its structure."""
    real = tokens[input_mask].tolist()
    assert real[0] == 2 and real.count(108) >= 1
    sep = real.index(108)
    assert not input_mask[len(real):].any() and (tokens[len(real):] == 0).all()
    if real[-1] == 1:
        return real[1:sep], real[sep + 1:-1]
    assert sep == len(real) - 1  # decode batch: ends at the separator
    return real[1:sep], None


@pytest.mark.parametrize("case", ["pg1_tiny", "pg2_tiny"])
def test_layout_matches_big_vision_reference(case):
    d = np.load(BIG_VISION_REFERENCE / case / "inputs.npz")
    for prefix_key, train_keys in (("", B.TEXT_KEYS), ("decode_", B.TEXT_KEYS[:3])):
        tokens = d[prefix_key + "tokens"]
        rows, table = [], {"\n": [108]}
        for b in range(tokens.shape[0]):
            p, s = _split_reference_row(tokens[b], d[prefix_key + "input_mask"][b])
            table[f"p{b}"] = p
            if s is not None:
                table[f"s{b}"] = s
            rows.append((f"p{b}", None if s is None else f"s{b}"))
        assert (prefix_key == "decode_") == all(s is None for _, s in rows)
        tok = _ReplayTokenizer(table)
        batch = B.make_text_batch(tok, [p for p, _ in rows], [s for _, s in rows],
                                  max_len=tokens.shape[1])
        for key in train_keys:
            ref = d[prefix_key + key]
            assert batch[key].dtype == ref.dtype, key
            np.testing.assert_array_equal(batch[key], ref, err_msg=f"{case} {prefix_key}{key}")


# --- budgets and truncation ------------------------------------------------------------------


def test_too_long_is_an_error_by_default(tok):
    n = len(B.encode_example(tok, "caption en", "a cat", max_len=None)["tokens"])
    assert B.encode_example(tok, "caption en", "a cat", max_len=n)["input_mask"].all()
    with pytest.raises(InputError, match=rf"needs {n} tokens.*max_len={n - 1}.*truncate='suffix'"):
        B.encode_example(tok, "caption en", "a cat", max_len=n - 1)


def test_prefix_over_budget_always_errors(tok):
    head = len(B.encode_prefix(tok, "answer en how many animals are there?", max_len=None)
               ["tokens"])
    for trunc in B.TRUNCATE_POLICIES:
        with pytest.raises(InputError, match=rf"prompt 'answer en how.*needs {head} tokens"):
            B.encode_example(tok, "answer en how many animals are there?", "two",
                             max_len=head - 1, truncate=trunc)
    with pytest.raises(InputError, match="text budget"):
        B.encode_prefix(tok, "answer en how many animals are there?", max_len=head - 1)


def test_suffix_truncation_when_asked(tok, caplog):
    full = B.encode_example(tok, "caption en", "a cat sitting on the table", max_len=None)
    n = len(full["tokens"])
    with caplog.at_level(logging.WARNING, logger="pgbench.batching"):
        cut = B.encode_example(tok, "caption en", "a cat sitting on the table", max_len=n - 3,
                               truncate="suffix")
    assert "truncated 3 of" in caplog.text
    for k in B.TEXT_KEYS:
        np.testing.assert_array_equal(cut[k], full[k][: n - 3])
    assert cut["tokens"][-1] != tok.eos_id  # EOS is the first thing to go
    with pytest.raises(ValueError, match="truncate"):
        B.encode_example(tok, "a", "b", max_len=8, truncate="prefix")


# --- collate and full batches ---------------------------------------------------------------


def test_collate_pads_to_longest_or_pad_to(tok):
    exs = [B.encode_example(tok, "caption en", "a dog", max_len=None),
           B.encode_example(tok, "ocr", None, max_len=None)]
    lens = [len(e["tokens"]) for e in exs]
    batch = B.collate(exs)
    assert batch["tokens"].shape == (2, max(lens))
    short = int(np.argmin(lens))
    assert (batch["tokens"][short, lens[short]:] == 0).all()
    assert (batch["mask_ar"][short, lens[short]:] == 1).all()
    assert not batch["input_mask"][short, lens[short]:].any()
    assert not batch["mask_loss"][short, lens[short]:].any()
    wide = B.collate(exs, pad_to=32)
    assert wide["tokens"].shape == (2, 32)
    np.testing.assert_array_equal(wide["tokens"][:, : max(lens)], batch["tokens"])
    # Re-padding an already padded example to a shorter width drops only padding.
    padded = [B.encode_example(tok, "ocr", None, max_len=30)]
    assert B.collate(padded, pad_to=lens[1])["tokens"][0].tolist() == exs[1]["tokens"].tolist()
    with pytest.raises(InputError, match="example 0 has .* real tokens, more than pad_to=3"):
        B.collate(exs, pad_to=3)
    with pytest.raises(InputError, match="no examples"):
        B.collate([])


def test_make_batch_from_files(tok, tmp_path):
    rng = np.random.default_rng(5)
    paths = []
    for i, shape in enumerate([(40, 60), (30, 30)]):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    items = [(paths[0], "caption en", "a cat"), (paths[1], "detect dog")]
    batch = B.make_batch(tok, items, image_size=28, max_len=20)
    assert list(batch) == ["images", "tokens", "input_mask", "mask_ar", "mask_loss"]
    assert batch["images"].shape == (2, 28, 28, 3) and batch["images"].dtype == np.float32
    np.testing.assert_array_equal(batch["images"][1], I.preprocess(paths[1], 28))
    np.testing.assert_array_equal(
        batch["tokens"][1], B.encode_prefix(tok, "detect dog", max_len=20)["tokens"])
    assert batch["mask_loss"][0].sum() == len(tok.encode("a cat")) + 1
    hf = B.make_batch(tok, items[:1], image_size=28, max_len=20, method="hf")
    np.testing.assert_array_equal(hf["images"][0], I.preprocess(paths[0], 28, method="hf"))
    with pytest.raises(InputError, match="item 0"):
        B.make_batch(tok, [(paths[0],)], image_size=28, max_len=20)


_TEXT = st.text(alphabet=st.sampled_from(list("abc xyz?\n;<>0123456789é")), max_size=30)


@settings(max_examples=60, deadline=None)
@given(prefix=_TEXT, suffix=st.one_of(st.none(), _TEXT), max_len=st.integers(1, 48))
def test_layout_invariants(prefix, suffix, max_len):
    tok = Tokenizer(FIXTURE_DIR / "tokenizer.model")
    head = len(tok.encode(prefix)) + 2
    tail = 0 if suffix is None else len(tok.encode(suffix)) + 1
    if head + tail > max_len:
        with pytest.raises(InputError):
            B.encode_example(tok, prefix, suffix, max_len=max_len)
        return
    ex = B.encode_example(tok, prefix, suffix, max_len=max_len)
    n = head + tail
    assert all(len(v) == max_len for v in ex.values())
    assert ex["tokens"][0] == tok.bos_id and ex["tokens"][head - 1] == 1156
    assert ex["input_mask"].sum() == n and ex["input_mask"][:n].all()
    assert (ex["mask_ar"] == (np.arange(max_len) >= head)).all()
    assert (ex["mask_loss"] == ((np.arange(max_len) >= head) & (np.arange(max_len) < n))).all()
    assert (ex["tokens"][n:] == tok.pad_id).all()
    assert tok.decode(ex["tokens"][1: head - 1]) == prefix
    if suffix is not None:
        assert ex["tokens"][n - 1] == tok.eos_id
        assert tok.decode(ex["tokens"][head:]) == suffix


@pytest.mark.parametrize("case", ["pg1_tiny", "pg2_tiny"])
def test_make_batch_reproduces_reference_images(case, tok, tmp_path):
    """PNG files of the reference pixels -> make_batch -> big_vision's `images`, bit for bit."""
    d = np.load(BIG_VISION_REFERENCE / case / "inputs.npz")
    items = []
    for i, pixels in enumerate(d["images_uint8"]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(pixels).save(path)
        items.append((path, "caption en"))
    batch = B.make_batch(tok, items, image_size=d["images"].shape[1], max_len=8)
    np.testing.assert_array_equal(batch["images"], d["images"])
