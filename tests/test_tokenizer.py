"""Tokenizer: both file formats, loc/seg lookup, decode rules, bad tokenizer files."""

from __future__ import annotations

import importlib.util
import io
import json

import pytest
import sentencepiece as spm

from tests.conftest import REPO_ROOT
from pgbench.errors import TokenizerError
from pgbench.tokenizer import Tokenizer, decode_batch, loc_piece, seg_piece

FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "tiny_tokenizer"
SP_FILE = FIXTURE_DIR / "tokenizer.model"
HF_FILE = FIXTURE_DIR / "tokenizer.json"

TEXTS = [
    "caption en",
    "a cat sitting on the table.",
    "answer en how many animals are there?\nthree",
    "<loc0012><loc1023><loc0000><loc0500> cat ; <seg005><seg127>",
    "Zebra ÄÖ 日本 123  two  spaces",
    " leading and trailing ",
    "\n",
    "",
    "detect cat\n<loc0001><seg000>",
]


@pytest.fixture(scope="module", params=["sentencepiece", "hf_json"])
def tok(request) -> Tokenizer:
    return Tokenizer(SP_FILE if request.param == "sentencepiece" else HF_FILE)


@pytest.fixture(scope="module")
def sp_tok() -> Tokenizer:
    return Tokenizer(SP_FILE)


def test_special_ids_and_layout(tok):
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 1536
    # The fixture's documented layout (tests/fixtures/make_tiny_tokenizer.py).
    assert tok.loc_base == 4 and tok.seg_base == 1028
    assert [tok.loc_id(i) for i in range(1024)] == list(range(4, 1028))
    assert [tok.seg_id(i) for i in range(128)] == list(range(1028, 1156))
    assert tok.separator_ids == [1156]


def test_loc_seg_lookup_inverse(tok):
    for i in (0, 1, 511, 1023):
        t = tok.loc_id(i)
        assert tok.is_loc(t) and not tok.is_seg(t) and tok.loc_index(t) == i
        assert tok.id_to_piece(t) == loc_piece(i)
    for i in (0, 64, 127):
        t = tok.seg_id(i)
        assert tok.is_seg(t) and not tok.is_loc(t) and tok.seg_index(t) == i
        assert tok.id_to_piece(t) == seg_piece(i)
    for t in (tok.bos_id, tok.eos_id, 1156, 1500):
        assert not tok.is_loc(t) and not tok.is_seg(t)
    with pytest.raises(ValueError, match="not a <locNNNN>"):
        tok.loc_index(1500)
    with pytest.raises(ValueError):
        tok.loc_id(1024)
    with pytest.raises(ValueError):
        tok.seg_id(-1)


def test_every_loc_seg_piece_is_one_id(tok):
    for i in range(1024):
        assert tok.encode(loc_piece(i)) == [tok.loc_id(i)]
    for i in range(128):
        assert tok.encode(seg_piece(i)) == [tok.seg_id(i)]
    # Inside running text too (detection/segmentation strings).
    ids = tok.encode("<loc0010><loc0020> dog")
    assert ids[:2] == [tok.loc_id(10), tok.loc_id(20)]


def test_sentencepiece_and_json_agree(sp_tok):
    hf = Tokenizer(HF_FILE)
    for text in TEXTS:
        ids = sp_tok.encode(text)
        assert hf.encode(text) == ids, text
        assert hf.decode(ids) == sp_tok.decode(ids) == text


def test_encode_bos_eos(tok):
    plain = tok.encode("caption en")
    assert tok.encode("caption en", bos=True) == [2] + plain
    assert tok.encode("caption en", eos=True) == plain + [1]
    assert tok.encode("caption en", bos=True, eos=True) == [2] + plain + [1]
    assert 3 not in plain  # byte fallback: nothing in the test texts is <unk>
    for text in TEXTS:
        assert tok.unk_id not in tok.encode(text)


def test_decode_rules(tok):
    cap = tok.encode("a cat")
    loc = [tok.loc_id(7), tok.loc_id(1000), tok.seg_id(3)]
    assert tok.decode([2] + cap + [1] + tok.encode("junk")) == "a cat"
    assert tok.decode(loc + tok.encode(" dog") + [1, 0, 0]) == "<loc0007><loc1000><seg003> dog"
    assert tok.decode(cap + [0, 0]) == "a cat"  # padding dropped
    assert tok.decode(cap + [-1, -1]) == "a cat"  # -1 fill after EOS ends the text
    assert tok.decode([1] + cap) == ""
    assert decode_batch(tok, [cap + [1], [2] + loc[:1]]) == ["a cat", "<loc0007>"]
    with pytest.raises(TokenizerError, match="token id 5000 is outside the vocabulary"):
        tok.decode([5000], strict=True)
    assert tok.decode(cap + [5000, 1]) == tok.decode(cap + [tok.unk_id])  # model vocab > tokenizer


def test_directory_and_repr():
    t = Tokenizer(FIXTURE_DIR)
    assert t.path.name == "tokenizer.model"
    assert "vocab_size=1536" in repr(t)


def test_fixture_is_reproducible():
    """The committed fixture is exactly what the generator script produces."""
    spec = importlib.util.spec_from_file_location(
        "make_tiny_tokenizer", REPO_ROOT / "tests" / "fixtures" / "make_tiny_tokenizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.train_model()
    assert model == SP_FILE.read_bytes()
    assert mod.hf_tokenizer_json(model) == HF_FILE.read_text(encoding="utf-8")


# --- bad tokenizer files -------------------------------------------------------------------


def _train(tmp_path, user_defined):
    buf = io.BytesIO()
    lines = [f"line {i} of a small corpus about cats and dogs" for i in range(200)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=60 + len(user_defined),
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, user_defined_symbols=user_defined,
        hard_vocab_limit=False, num_threads=1, minloglevel=2)
    path = tmp_path / "tokenizer.model"
    path.write_bytes(buf.getvalue())
    return path


def test_plain_gemma_like_tokenizer_rejected(tmp_path):
    path = _train(tmp_path, [])
    with pytest.raises(TokenizerError) as e:
        Tokenizer(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "all 1024 <locNNNN> pieces" in msg and "all 128 <segNNN> pieces" in msg
    t = Tokenizer(path, require_locseg=False)
    assert not t.has_locseg and t.encode("cats", bos=True)[0] == 2
    with pytest.raises(TokenizerError, match="require_locseg=False"):
        t.loc_id(0)


def test_partial_loc_vocabulary_names_missing(tmp_path):
    path = _train(tmp_path, [loc_piece(i) for i in range(1000)]
                  + [seg_piece(i) for i in range(128)])
    with pytest.raises(TokenizerError) as e:
        Tokenizer(path)
    msg = str(e.value)
    assert "<loc1000>" in msg and "(24 of 1024)" in msg and "<seg000>" not in msg


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer(tmp_path / "nope.model")
    with pytest.raises(TokenizerError, match="neither tokenizer.model"):
        Tokenizer(tmp_path)
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x00\x01 definitely not a protobuf" * 10)
    with pytest.raises(TokenizerError, match="not a readable SentencePiece model"):
        Tokenizer(bad)
    truncated = tmp_path / "cut.model"
    truncated.write_bytes(SP_FILE.read_bytes()[:5000])
    with pytest.raises(TokenizerError, match="cut.model"):
        Tokenizer(truncated)
    js = tmp_path / "tokenizer.json"
    js.write_text("{ not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        Tokenizer(js)
    js.write_text('{"version": "1.0"}', encoding="utf-8")
    with pytest.raises(TokenizerError, match="'model'"):
        Tokenizer(js)
    cut_json = tmp_path / "cut.json"
    cut_json.write_text(HF_FILE.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    with pytest.raises(TokenizerError, match="cut.json"):
        Tokenizer(cut_json)


@pytest.mark.slow
def test_transformers_converted_tokenizer_json_agrees(tmp_path):
    """A tokenizer.json written by transformers' own SentencePiece converter reads the same."""
    pytest.importorskip("transformers")
    from transformers.convert_slow_tokenizer import GemmaConverter

    class _Slow:  # the attributes GemmaConverter reads from a slow tokenizer
        vocab_file = str(SP_FILE)
        add_bos_token, add_eos_token, legacy = True, False, False
        pad_token, eos_token, bos_token, unk_token = "<pad>", "<eos>", "<bos>", "<unk>"

    # No skip on an API change: a converter this test can no longer drive must be noticed
    # (fix _Slow to the attributes the new release reads).
    converted = GemmaConverter(_Slow()).converted()
    converted.save(str(tmp_path / "tokenizer.json"))
    hf, sp = Tokenizer(tmp_path / "tokenizer.json"), Tokenizer(SP_FILE)
    assert (hf.bos_id, hf.eos_id, hf.pad_id) == (sp.bos_id, sp.eos_id, sp.pad_id)
    assert hf.loc_ids == sp.loc_ids and hf.seg_ids == sp.seg_ids
    for text in TEXTS:
        ids = sp.encode(text)
        assert hf.encode(text) == ids, text
        assert hf.decode(ids) == text


def test_loc_pieces_that_text_would_split_are_rejected(tmp_path):
    """Pieces present in the vocabulary but not registered as whole tokens are not enough."""
    data = json.loads(HF_FILE.read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if not t["content"].startswith("<")
                            or t["content"] in ("<pad>", "<eos>", "<bos>", "<unk>")]
    # Digits split before the vocabulary is consulted (as split_digits does), so text can
    # never reach the whole "<loc0001>" piece.
    data["pre_tokenizer"] = {"type": "Digits", "individual_digits": True}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenizerError, match="1152 loc/seg pieces that do not encode to their own"):
        Tokenizer(path)
    assert not Tokenizer(path, require_locseg=False).has_locseg


def test_released_id_layout(tmp_path):
    """A vocabulary laid out like the released one (257152 pieces, loc/seg at the end)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    src = pb.ModelProto()
    src.ParseFromString(SP_FILE.read_bytes())
    out = pb.ModelProto()
    out.CopyFrom(src)
    del out.pieces[:]
    out.pieces.extend(p for p in src.pieces if not p.piece.startswith(("<loc", "<seg")))
    for i in range(256000 - len(out.pieces)):  # stand-ins for Gemma's text pieces
        out.pieces.add(piece=f"\u2581filler{i}", score=-100.0 - i * 1e-3)
    user_defined = pb.ModelProto.SentencePiece.USER_DEFINED
    for p in [loc_piece(i) for i in range(1024)] + [seg_piece(i) for i in range(128)]:
        out.pieces.add(piece=p, type=user_defined)
    path = tmp_path / "tokenizer.model"
    path.write_bytes(out.SerializeToString())

    t = Tokenizer(path)
    assert t.vocab_size == 257152
    assert (t.loc_base, t.seg_base) == (256000, 257024)
    assert t.loc_id(1023) == 257023 and t.seg_id(127) == 257151
    assert t.is_loc(256500) and t.is_seg(257100) and not t.is_loc(255999)
    ids = t.encode("detect cat\n<loc0003><loc1023><seg127>", bos=True)
    assert ids[0] == 2 and ids[-3:] == [256003, 257023, 257151]
    assert t.decode(ids + [1, 5]) == "detect cat\n<loc0003><loc1023><seg127>"
