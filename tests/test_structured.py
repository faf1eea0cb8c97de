"""Parsing of <loc>/<seg> outputs: big_vision's evaluator rules on token ids, and strings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgbench import structured as S
from pgbench.tokenizer import RELEASED_LOCSEG, LocSegIds, Tokenizer
from tests.conftest import REPO_ROOT

# The reference case's ids are in the released vocabulary (its case.json: 256000 + bin).
LOC, SEG = 256000, 257024
REL = RELEASED_LOCSEG
TINY_TOKENIZER = REPO_ROOT / "tests" / "fixtures" / "tiny_tokenizer" / "tokenizer.model"


@pytest.fixture(scope="module")
def case(big_vision_reference):
    d = big_vision_reference / "seg_vqvae"
    header = json.loads((d / "case.json").read_text())
    return header, dict(np.load(d / "inputs.npz")), dict(np.load(d / "outputs.npz"))


# --------------------------------------------------------------------------------------
# Token ids against the reference case (outputs of big_vision's evaluator code path).


def test_token_parsing_matches_evaluator(case):
    _, inp, out = case
    valid, bins, codes = S.parse_seg_token_batch(inp["box_tokens"], locseg=REL)
    np.testing.assert_array_equal(valid, out["box_valid_tokens"])
    np.testing.assert_array_equal(bins, inp["box_loc_bins"])
    np.testing.assert_array_equal(codes, inp["codes"][inp["box_code_index"]])
    norm = S.bins_to_normalized(bins)
    assert norm.dtype == np.float64
    np.testing.assert_array_equal(norm, out["box_norm"])  # exact: same b / 1023 in float64
    h, w = (int(v) for v in inp["image_hw"])
    pix = [S.pixel_box(b, h, w) for b in bins]
    np.testing.assert_array_equal(np.array([p for p, _ in pix]), out["box_pixels"])
    np.testing.assert_array_equal(np.array([ok for _, ok in pix]), out["box_pasted"])


def test_box_iou_matches_evaluator(case):
    _, inp, out = case
    norm = S.bins_to_normalized(inp["box_loc_bins"])
    ious = [S.box_iou_normalized(b, g) for b, g in zip(norm, inp["gt_boxes"])]
    np.testing.assert_allclose(ious, out["box_iou"], rtol=0, atol=1e-12)


def _ids(bins, codes, tail=(1,)):
    return [LOC + b for b in bins] + [SEG + c for c in codes] + list(tail)


GOOD_CODES = list(range(16))


@pytest.mark.parametrize("ids, why", [
    (_ids([1, 2, 3, 4], GOOD_CODES)[:19], "only 19 ids"),
    (_ids([1, 2, 1, 4], GOOD_CODES), "y2 == y1"),
    (_ids([1, 5, 3, 4], GOOD_CODES), "x2 < x1"),
    (_ids([1, 2, 3, 1024], GOOD_CODES), "bin 1024 is a seg id"),
    (_ids([-1, 2, 3, 4], GOOD_CODES), "id below <loc0000>"),
    (_ids([1, 2, 3, 4], GOOD_CODES[:15] + [128]), "code 128 out of range"),
    ([LOC + 1, LOC + 2, LOC + 3, LOC + 4, 235248] + [SEG + c for c in GOOD_CODES], "space between loc and seg"),
    ([], "empty"),
])
def test_invalid_token_predictions(ids, why):
    valid, bins, codes = S.parse_seg_token_ids(ids, locseg=REL)
    assert not valid, why
    assert not bins.any() and not codes.any()  # zeros, as the evaluator leaves them


def test_valid_tokens_ignore_the_tail_and_custom_bases():
    ids = _ids([0, 0, 1023, 1023], [127] * 16, tail=(5, 6, LOC + 9))
    valid, bins, codes = S.parse_seg_token_ids(ids, locseg=REL)
    assert valid and list(bins) == [0, 0, 1023, 1023] and list(codes) == [127] * 16
    shifted = np.array(ids) - LOC + 100  # a vocabulary where <loc0000> is id 100
    other = LocSegIds.contiguous(100, 100 + 1024)
    valid2, bins2, _ = S.parse_seg_token_ids(shifted[:4], locseg=other)
    assert not valid2  # fewer than 20 ids
    valid3, bins3, codes3 = S.parse_seg_token_ids(shifted, locseg=other)
    assert valid3 and list(bins3) == [0, 0, 1023, 1023] and list(codes3) == [127] * 16
    assert not S.parse_seg_token_ids(ids, locseg=other)[0]  # released ids mean nothing there


def test_token_ids_come_from_the_tokenizer():
    """The tiny tokenizer keeps <loc0000> at 4 and <seg000> at 1028, not 256000/257024:
    parsing with its ids reads the same object, the released layout's ids are invalid there."""
    tok = Tokenizer(TINY_TOKENIZER)
    locseg = tok.locseg
    assert (locseg.loc[0], locseg.seg[0]) == (4, 1028)
    bins, codes = [12, 30, 700, 1023], [5, 127, 0] + list(range(13))
    ids = locseg.object_ids([bins], [codes])[0]
    text = S.format_object(bins, "cat", codes)
    assert ids.tolist() == tok.encode(text)[:20]  # what the model would emit for that string
    valid, got_bins, got_codes = S.parse_seg_token_ids(list(ids) + [tok.eos_id], locseg=locseg)
    assert valid and got_bins.tolist() == bins and got_codes.tolist() == codes
    assert not S.parse_seg_token_ids(REL.object_ids([bins], [codes])[0], locseg=locseg)[0]
    assert not S.parse_seg_token_ids(ids, locseg=REL)[0]
    batch_valid, batch_bins, _ = S.parse_seg_token_batch(np.stack([ids, ids[::-1]]), locseg=locseg)
    assert batch_valid.tolist() == [True, False] and batch_bins[0].tolist() == bins


def test_locseg_ids_contract():
    other = LocSegIds.contiguous(10, 2000)
    assert (other.loc_index(10), other.loc_index(1033), other.loc_index(1034)) == (0, 1023, None)
    assert (other.seg_index(2127), other.seg_index(9)) == (127, None)
    np.testing.assert_array_equal(other.object_ids([[0, 1, 2, 3]], [[127] * 16]),
                                  [[10, 11, 12, 13] + [2127] * 16])
    with pytest.raises(ValueError, match="1024 loc and 128 seg"):
        LocSegIds(tuple(range(5)), tuple(range(128)))


def test_pixel_box_truncates_and_can_become_empty():
    # bins 10 and 11 on a 50 px side: int(10/1023*50) = int(11/1023*50) = 0 -> empty.
    (y1, x1, y2, x2), ok = S.pixel_box([10, 10, 11, 11], 50, 50)
    assert (y1, y2) == (0, 0) and not ok
    # First case box from the README: rows 26..171, columns 99..217 at 224x224.
    assert S.pixel_box([123, 456, 789, 1000], 224, 224) == ((26, 99, 172, 218), True)


def test_normalized_to_bins_rounds_half_even_and_clips():
    coords = np.array([0.0, 1.0, 1.5, -0.2, 0.5 / 1023, 1.5 / 1023])
    # 0.5 -> 0 and 1.5 -> 2 (half to even, like tf.round); out-of-range coords clip.
    np.testing.assert_array_equal(S.normalized_to_bins(coords), [0, 1023, 1023, 0, 0, 2])


# --------------------------------------------------------------------------------------
# Strings.


def test_case_strings_parse_to_the_case_tokens(case):
    header, inp, _ = case
    for s, bins, ci in zip(header["box_strings"], inp["box_loc_bins"], inp["box_code_index"]):
        r = S.parse_segmentations(s, image_hw=(224, 224))
        assert r.num_malformed == 0 and len(r.objects) == 1
        assert r.objects[0].bins == tuple(bins)
        assert r.objects[0].codes == tuple(inp["codes"][ci])
    r = S.parse_segmentations(header["box_strings"][0])
    assert r.labels == ["cat"]
    assert S.parse_segmentations(header["box_strings"][1]).labels == [""]


def test_detection_string_to_pixel_boxes():
    text = "<loc0000><loc0000><loc1023><loc1023> dog ; <loc0102><loc0511><loc0307><loc1023> red car"
    r = S.parse_detections(text, image_hw=(480, 640))
    assert r.num_malformed == 0 and r.labels == ["dog", "red car"]
    expected = np.array([[0, 0, 640, 480],
                         [511 / 1023 * 640, 102 / 1023 * 480, 640, 307 / 1023 * 480]], np.float32)
    np.testing.assert_allclose(r.boxes, expected, rtol=1e-6)  # x1, y1, x2, y2 in pixels
    assert r.boxes.dtype == np.float32 and r.codes.shape == (0, 16)


def test_malformed_chunks_are_counted_not_raised():
    good = "<loc0001><loc0002><loc0300><loc0400> cat"
    text = " ; ".join([
        good,
        "<loc0001><loc0002><loc0300> three locs",
        "<loc0300><loc0002><loc0001><loc0400> y2 < y1",
        "no tokens at all",
        "<loc0001><loc0002><loc0300><loc0400><seg001><seg002> partial segs",
        "<loc0001><loc0002><loc0300><loc0400> label <loc0005>",
        "<loc0001><loc0002><loc0300><loc0400> <seg001><seg002><seg003><seg004><seg005><seg006><seg007>"
        "<seg008><seg009><seg010><seg011><seg012><seg013><seg014><seg015><seg016> spaced",
        "",  # empty chunk: not an object, not malformed
        good,
    ])
    r = S.parse_detections(text, image_hw=(10, 10))
    assert r.labels == ["cat", "cat"] and r.num_malformed == 6
    # Segmentation needs the 16 codes: the two plain boxes are malformed there too.
    r = S.parse_segmentations(text)
    assert r.objects == [] and r.num_malformed == 8


def test_boxes_need_the_image_size():
    r = S.parse_detections("<loc0001><loc0002><loc0300><loc0400> x")
    with pytest.raises(ValueError, match="image_hw"):
        _ = r.boxes
    np.testing.assert_allclose(r.boxes_normalized, [[1 / 1023, 2 / 1023, 300 / 1023, 400 / 1023]])


# Garbage built from the pieces a model emits, plus arbitrary text.
_PIECES = st.sampled_from(["<loc0001>", "<loc1023>", "<loc9999>", "<loc12>", "<seg000>", "<seg127>",
                           "<seg999>", "<seg", "<loc", " ; ", ";", " ", "cat", "\n", "<eos>", ">", "<"])
_GARBAGE = st.one_of(st.text(max_size=200), st.lists(_PIECES, max_size=60).map("".join))


@settings(max_examples=300, deadline=None)
@given(_GARBAGE)
def test_garbage_never_raises(text):
    for parse in (S.parse_detections, S.parse_segmentations):
        r = parse(text, image_hw=(7, 9))
        assert r.num_malformed >= 0
        assert r.boxes.shape == (len(r.objects), 4)
        n_chunks = sum(bool(c.strip()) for c in text.split(";"))
        assert len(r.objects) + r.num_malformed == n_chunks


@st.composite
def _objects(draw, with_codes: bool):
    y1 = draw(st.integers(0, 1022))
    x1 = draw(st.integers(0, 1022))
    bins = (y1, x1, draw(st.integers(y1 + 1, 1023)), draw(st.integers(x1 + 1, 1023)))
    label = draw(st.text(st.characters(blacklist_characters=";<", blacklist_categories=("Cs",)),
                         max_size=20)).strip()
    codes = tuple(draw(st.lists(st.integers(0, 127), min_size=16, max_size=16))) if with_codes else None
    return S.DetectedObject(bins=bins, label=label, codes=codes, image_hw=(100, 200))


@settings(max_examples=200, deadline=None)
@given(st.booleans().flatmap(lambda seg: st.lists(_objects(seg), max_size=6).map(lambda o: (seg, o))))
def test_valid_strings_round_trip(seg_and_objects):
    seg, objects = seg_and_objects
    text = S.format_objects(objects)
    r = (S.parse_segmentations if seg else S.parse_detections)(text, image_hw=(100, 200))
    assert r.num_malformed == 0
    assert r.objects == objects


def test_segmentation_and_detection_results_agree_on_boxes(case):
    header, _, _ = case
    text = " ; ".join(header["box_strings"])
    det = S.parse_detections(text, image_hw=(224, 224))
    seg = S.parse_segmentations(text, image_hw=(224, 224))
    np.testing.assert_array_equal(det.boxes, seg.boxes)
    assert det.codes.shape == (2, 16)
