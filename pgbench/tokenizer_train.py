"""Train a PaliGemma-style SentencePiece tokenizer on a small corpus (tests, the default model).

The layout mirrors Gemma's tokenizer where it matters to pgbench: ids 0-3 are ``<pad>``,
``<eos>``, ``<bos>``, ``<unk>``; then the 1024 ``<locNNNN>`` and 128 ``<segNNN>`` pieces and
``"\\n"`` (the prefix/suffix separator) as user-defined symbols, each a single piece; byte
fallback; digits split; no Unicode normalisation, no dummy prefix, whitespace kept as is.
Training runs single-threaded, so the same lines give the same bytes on every run.
(The real PaliGemma vocabulary puts the loc/seg pieces at 256000 and 257024; pgbench looks
the pieces up and assumes neither layout.)
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable

LOC_PIECES = [f"<loc{i:04d}>" for i in range(1024)]
SEG_PIECES = [f"<seg{i:03d}>" for i in range(128)]
USER_DEFINED = LOC_PIECES + SEG_PIECES + ["\n"]
# Pieces every model has before it learns any: 4 specials, the user-defined ones, 256 bytes.
RESERVED_PIECES = 4 + len(USER_DEFINED) + 256


def train_sentencepiece(lines: Iterable[str], vocab_size: int) -> bytes:
    """A unigram ``tokenizer.model`` (serialised proto) of exactly ``vocab_size`` pieces.

    ``vocab_size - RESERVED_PIECES`` pieces are learned from ``lines``; SentencePiece raises
    if the corpus cannot supply that many.
    """
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="unigram",
        vocab_size=vocab_size,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=USER_DEFINED,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        hard_vocab_limit=True,
        num_threads=1,
        seed_sentencepiece_size=100_000,
        minloglevel=2,
    )
    return buf.getvalue()


def hf_tokenizer_json(model_bytes: bytes) -> str:
    """The same tokenizer in Hugging Face ``tokenizers`` form (Unigram + byte fallback).

    Mirrors the layout of Gemma's own tokenizer.json: spaces become "▁" in the normaliser,
    no pre-tokeniser, every control/user-defined piece is an added special token so it is
    never split, and the decoder undoes "▁" and fuses byte pieces (byte pieces stay ordinary
    vocabulary entries, reached by byte fallback).
    """
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    proto = pb.ModelProto()
    proto.ParseFromString(model_bytes)
    normal, control, unknown, user_defined = 1, 3, 2, 4
    vocab = [(p.piece, p.score if p.type in (normal, unknown) else 0.0) for p in proto.pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    specials = [p.piece for p in proto.pieces if p.type in (control, unknown, user_defined)]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    return json.dumps(json.loads(tok.to_str()), indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def write_tokenizer(out_dir: str | Path, model_bytes: bytes) -> Path:
    """``out_dir/tokenizer.model`` and ``out_dir/tokenizer.json``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.model").write_bytes(model_bytes)
    (out_dir / "tokenizer.json").write_text(hf_tokenizer_json(model_bytes), encoding="utf-8")
    return out_dir
