"""The synthetic benchmark's tokenizer: deterministic, loc/seg pieces single, text round-trips."""

from __future__ import annotations

import pytest

from pgbench.errors import InputError
from pgbench.synth import tokenizer as synth_tokenizer
from pgbench.tokenizer import Tokenizer
from pgbench.tokenizer_train import RESERVED_PIECES


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return synth_tokenizer.build(tmp_path_factory.mktemp("tok"), seed=0, images=60, vocab_size=RESERVED_PIECES + 64)


def test_same_seed_same_bytes(tok_dir, tmp_path):
    again = synth_tokenizer.build(tmp_path, seed=0, images=60, vocab_size=RESERVED_PIECES + 64)
    for name in ("tokenizer.model", "tokenizer.json"):
        assert (again / name).read_bytes() == (tok_dir / name).read_bytes()


def test_pieces_and_round_trip(tok_dir):
    tok = Tokenizer(tok_dir / "tokenizer.model")
    text = "answer en how many circles are there?"
    assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("<loc0012><loc1023><seg127> circle")
    assert len(ids) == 3 + len(tok.encode(" circle"))
    # The corpus's common words are single pieces, not spelled out byte by byte.
    assert len(tok.encode("answer en")) <= 3


def test_corpus_holds_every_family():
    lines = synth_tokenizer.corpus(seed=0, images=3)
    assert any(l.startswith("answer en ") for l in lines) and any(l.startswith("caption en\n") for l in lines)
    assert any(l.startswith("detect ") for l in lines) and any(l.startswith("What is") for l in lines)


def test_too_small_a_corpus_is_one_error(tmp_path):
    with pytest.raises(InputError, match="cannot fill a vocabulary"):
        synth_tokenizer.build(tmp_path, seed=0, images=2, vocab_size=4000)
