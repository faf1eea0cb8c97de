"""PaliGemma's tokenizer: SentencePiece ``tokenizer.model`` or Hugging Face ``tokenizer.json``.

PaliGemma extends Gemma's 256000-piece vocabulary with 1024 location pieces ``<loc0000>`` ..
``<loc1023>`` and 128 segmentation pieces ``<seg000>`` .. ``<seg127>`` (257152 in all; in the
released vocabulary ``<loc0000>`` is 256000 and ``<seg000>`` 257024). pgbench never assumes those
numbers: every loc/seg id is looked up in the vocabulary when the tokenizer is loaded, and each
piece must encode to exactly one id (a SentencePiece user-defined symbol), or detection and
segmentation strings could not round-trip.

Only ``sentencepiece`` and ``tokenizers`` are used; ``transformers`` is never imported.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pgbench.errors import TokenizerError

NUM_LOC = 1024
NUM_SEG = 128
log = logging.getLogger(__name__)

SEPARATOR = "\n"  # PaliGemma puts "\n" between prefix and suffix, tokenized on its own.


def loc_piece(i: int) -> str:
    return f"<loc{i:04d}>"


def seg_piece(i: int) -> str:
    return f"<seg{i:03d}>"


@dataclasses.dataclass(frozen=True)
class LocSegIds:
    """Where a vocabulary keeps its ``<locNNNN>`` and ``<segNNN>`` pieces: what
    :mod:`pgbench.structured` needs to read boxes and mask codes from token ids, and to
    write them. Get it from :attr:`Tokenizer.locseg`; :data:`RELEASED_LOCSEG` is the released
    vocabulary's layout, only for token ids that come without a tokenizer file.
    """

    loc: tuple[int, ...]  # loc[i] = id of <loc{i:04d}>, 1024 entries
    seg: tuple[int, ...]  # seg[i] = id of <seg{i:03d}>, 128 entries

    def __post_init__(self):
        if len(self.loc) != NUM_LOC or len(self.seg) != NUM_SEG:
            raise ValueError(f"LocSegIds needs {NUM_LOC} loc and {NUM_SEG} seg ids, got "
                             f"{len(self.loc)} and {len(self.seg)}")

    @classmethod
    def contiguous(cls, loc_base: int, seg_base: int) -> LocSegIds:
        """Ids ``loc_base + i`` and ``seg_base + i`` (the released vocabulary's layout)."""
        return cls(tuple(range(loc_base, loc_base + NUM_LOC)), tuple(range(seg_base, seg_base + NUM_SEG)))

    @property
    def _index(self) -> tuple[dict[int, int], dict[int, int]]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = ({t: i for i, t in enumerate(self.loc)}, {t: i for i, t in enumerate(self.seg)})
            object.__setattr__(self, "_index_cache", cached)
        return cached

    def loc_index(self, token_id: int) -> int | None:
        """0..1023 for a ``<loc>`` id, None for any other id."""
        return self._index[0].get(int(token_id))

    def seg_index(self, token_id: int) -> int | None:
        """0..127 for a ``<seg>`` id, None for any other id."""
        return self._index[1].get(int(token_id))

    def object_ids(self, bins, codes) -> np.ndarray:
        """bins i[N, 4] in [0, 1024) and codes i[N, 16] in [0, 128) -> i32[N, 20] token ids."""
        loc, seg = np.asarray(self.loc, np.int64), np.asarray(self.seg, np.int64)
        ids = np.concatenate([loc[np.asarray(bins, np.int64)], seg[np.asarray(codes, np.int64)]], axis=-1)
        return ids.astype(np.int32)


# The released PaliGemma vocabulary (<loc0000> = 256000, <seg000> = 257024). Used only for
# token ids given without a tokenizer: the big_vision reference cases state theirs in it.
RELEASED_LOCSEG = LocSegIds.contiguous(256000, 257024)


class _SentencePieceBackend:
    def __init__(self, path: Path):
        import sentencepiece as spm

        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as e:  # sentencepiece raises OSError/RuntimeError with C++ text
            raise TokenizerError(
                f"{path}: not a readable SentencePiece model ({type(e).__name__}: {e})"
            ) from None

    def size(self) -> int:
        return self.sp.get_piece_size()

    def piece_to_id(self, piece: str) -> int | None:
        i = self.sp.piece_to_id(piece)
        # Unknown pieces map to <unk>; only an exact round trip means the piece exists.
        return i if 0 <= i < self.size() and self.sp.id_to_piece(i) == piece else None

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def special(self, name: str) -> int | None:
        i = {"bos": self.sp.bos_id, "eos": self.sp.eos_id, "pad": self.sp.pad_id,
             "unk": self.sp.unk_id}[name]()
        return i if i >= 0 else None

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)


class _HFBackend:
    _SPECIAL_NAMES = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"}

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self.tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            _check_json(path)  # a plainer message when the file is not JSON at all
            raise TokenizerError(
                f"{path}: not a readable Hugging Face tokenizer.json ({type(e).__name__}: {e})"
            ) from None
        self.path = path

    def size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def piece_to_id(self, piece: str) -> int | None:
        return self.tok.token_to_id(piece)

    def id_to_piece(self, i: int) -> str:
        return self.tok.id_to_token(i)

    def special(self, name: str) -> int | None:
        return self.tok.token_to_id(self._SPECIAL_NAMES[name])

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        # Keep "special" added tokens: loc/seg pieces are often registered as such.
        return self.tok.decode(ids, skip_special_tokens=False)


def _find_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("tokenizer.model", "tokenizer.json"):
            if (path / name).is_file():
                return path / name
        raise TokenizerError(
            f"{path}: directory has neither tokenizer.model (SentencePiece) nor tokenizer.json"
            " (Hugging Face tokenizers)"
        )
    if not path.exists():
        raise TokenizerError(f"{path}: tokenizer file not found")
    return path


def _describe_missing(kind: str, missing: list[int], total: int, piece) -> str:
    if len(missing) == total:
        return f"all {total} {kind} pieces ({piece(0)} .. {piece(total - 1)})"
    shown = ", ".join(piece(i) for i in missing[:5])
    more = f", ... ({len(missing)} of {total})" if len(missing) > 5 else ""
    return f"{kind} pieces {shown}{more}"


class Tokenizer:
    """A PaliGemma tokenizer with the loc/seg vocabulary resolved.

    ``Tokenizer(path)`` accepts a SentencePiece ``tokenizer.model``, a Hugging Face
    ``tokenizer.json``, or a directory holding either (``tokenizer.model`` preferred).
    Any file whose name does not end in ``.json`` is read as SentencePiece.

    With ``require_locseg=True`` (default) a vocabulary lacking any of the 1024 ``<locNNNN>`` or
    128 ``<segNNN>`` pieces, or holding them as ordinary pieces that text would split, raises
    :class:`TokenizerError` naming which; with ``False`` such a tokenizer loads but
    :meth:`loc_id` / :meth:`seg_id` raise.
    """

    def __init__(self, path: str | Path, *, require_locseg: bool = True):
        self.path = _find_file(Path(path))
        backend_cls = _HFBackend if self.path.suffix == ".json" else _SentencePieceBackend
        self._b = backend_cls(self.path)
        self.vocab_size: int = self._b.size()

        ids = {}
        for name in ("bos", "eos", "pad"):
            i = self._b.special(name)
            if i is None:
                raise TokenizerError(f"{self.path}: tokenizer defines no {name.upper()} token "
                                     f"(expected a <{name}> piece)")
            ids[name] = i
        self.bos_id: int = ids["bos"]
        self.eos_id: int = ids["eos"]
        self.pad_id: int = ids["pad"]
        self.unk_id: int | None = self._b.special("unk")

        self._loc = [self._b.piece_to_id(loc_piece(i)) for i in range(NUM_LOC)]
        self._seg = [self._b.piece_to_id(seg_piece(i)) for i in range(NUM_SEG)]
        self.has_locseg = self._check_locseg(require_locseg)
        self._loc_index = {t: i for i, t in enumerate(self._loc) if t is not None}
        self._seg_index = {t: i for i, t in enumerate(self._seg) if t is not None}

    def _check_locseg(self, required: bool) -> bool:
        missing_loc = [i for i, t in enumerate(self._loc) if t is None]
        missing_seg = [i for i, t in enumerate(self._seg) if t is None]
        problems = []
        if missing_loc:
            problems.append(_describe_missing("<locNNNN>", missing_loc, NUM_LOC, loc_piece))
        if missing_seg:
            problems.append(_describe_missing("<segNNN>", missing_seg, NUM_SEG, seg_piece))
        if not problems:
            split = [p for p, t in self._locseg_pieces() if self._b.encode(p) != [t]]
            if split:
                problems.append(
                    f"{len(split)} loc/seg pieces that do not encode to their own single id "
                    f"(e.g. {split[0]!r} -> {self._b.encode(split[0])}); they must be "
                    "user-defined symbols"
                )
        if problems and required:
            raise TokenizerError(
                f"{self.path}: not a PaliGemma tokenizer: it lacks " + " and ".join(problems)
                + f" (vocabulary of {self.vocab_size} pieces; PaliGemma needs 1024 <locNNNN> and "
                "128 <segNNN> pieces for detection and segmentation). Pass require_locseg=False "
                "to load it anyway."
            )
        return not problems

    def _locseg_pieces(self):
        yield from ((loc_piece(i), t) for i, t in enumerate(self._loc))
        yield from ((seg_piece(i), t) for i, t in enumerate(self._seg))

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"

    # -- text <-> ids ------------------------------------------------------------------------

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text``, optionally with BOS first / EOS last. No normalisation."""
        if not isinstance(text, str):
            raise TypeError(f"Tokenizer.encode expects str, got {type(text).__name__}")
        ids = self._b.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int], *, strict: bool = False) -> str:
        """Text of ``ids`` up to (not including) the first EOS.

        BOS and PAD are dropped, negative ids (the ``-1`` fill after EOS) end the text, and
        ``<locNNNN>`` / ``<segNNN>`` pieces are kept as their text. An id outside the
        vocabulary (a model whose embedding table is larger than the tokenizer) decodes as
        ``<unk>`` with a logged warning, or raises :class:`TokenizerError` when ``strict``.
        """
        out, bad = [], []
        for i in ids:
            i = int(i)
            if i == self.eos_id or i < 0:
                break
            if i in (self.bos_id, self.pad_id):
                continue
            if i >= self.vocab_size:
                bad.append(i)
                if strict:
                    raise TokenizerError(f"{self.path}: token id {i} is outside the vocabulary "
                                         f"(size {self.vocab_size})")
                if self.unk_id is None:
                    continue
                i = self.unk_id
            out.append(i)
        if bad:
            log.warning("%s: %d token ids outside the vocabulary (size %d), e.g. %d; decoded "
                        "as <unk>", self.path, len(bad), self.vocab_size, bad[0])
        return self._b.decode(out)

    def id_to_piece(self, i: int) -> str:
        return self._b.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int | None:
        """Id of a vocabulary piece, or None if there is no such piece."""
        return self._b.piece_to_id(piece)

    @property
    def separator_ids(self) -> list[int]:
        """Ids of the prefix/suffix separator "\\n" (one id, 108, in Gemma's vocabulary)."""
        return self.encode(SEPARATOR)

    # -- loc / seg ---------------------------------------------------------------------------

    def _need_locseg(self) -> None:
        if not self.has_locseg:
            raise TokenizerError(f"{self.path}: this tokenizer has no complete <loc>/<seg> "
                                 "vocabulary (it was loaded with require_locseg=False)")

    def loc_id(self, i: int) -> int:
        """Id of ``<loc{i:04d}>``, 0 <= i < 1024."""
        self._need_locseg()
        if not 0 <= i < NUM_LOC:
            raise ValueError(f"loc index must be in [0, {NUM_LOC}), got {i}")
        return self._loc[i]

    def seg_id(self, i: int) -> int:
        """Id of ``<seg{i:03d}>``, 0 <= i < 128."""
        self._need_locseg()
        if not 0 <= i < NUM_SEG:
            raise ValueError(f"seg index must be in [0, {NUM_SEG}), got {i}")
        return self._seg[i]

    @property
    def loc_base(self) -> int:
        """Id of ``<loc0000>``."""
        return self.loc_id(0)

    @property
    def seg_base(self) -> int:
        """Id of ``<seg000>``."""
        return self.seg_id(0)

    @property
    def loc_ids(self) -> list[int]:
        self._need_locseg()
        return list(self._loc)

    @property
    def seg_ids(self) -> list[int]:
        self._need_locseg()
        return list(self._seg)

    @property
    def locseg(self) -> LocSegIds:
        """This vocabulary's loc/seg ids, for :mod:`pgbench.structured` and segmentation."""
        self._need_locseg()
        return LocSegIds(tuple(self._loc), tuple(self._seg))

    def is_loc(self, token_id: int) -> bool:
        return int(token_id) in self._loc_index

    def is_seg(self, token_id: int) -> bool:
        return int(token_id) in self._seg_index

    def loc_index(self, token_id: int) -> int:
        """Inverse of :meth:`loc_id`: 0..1023 for a loc id, else ValueError."""
        try:
            return self._loc_index[int(token_id)]
        except KeyError:
            raise ValueError(f"token id {token_id} is not a <locNNNN> piece") from None

    def seg_index(self, token_id: int) -> int:
        """Inverse of :meth:`seg_id`: 0..127 for a seg id, else ValueError."""
        try:
            return self._seg_index[int(token_id)]
        except KeyError:
            raise ValueError(f"token id {token_id} is not a <segNNN> piece") from None


def _check_json(path: Path) -> None:
    """Reject a tokenizer.json that is not JSON with one message (tokenizers' own is cryptic)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e}); expected a Hugging Face "
                             "tokenizer.json") from None
    if not isinstance(data, dict) or "model" not in data:
        raise TokenizerError(f"{path}: JSON without a 'model' entry; expected a Hugging Face "
                             "tokenizer.json")


def load_tokenizer(path: str | Path, *, require_locseg: bool = True) -> Tokenizer:
    """Same as ``Tokenizer(path, require_locseg=...)``."""
    return Tokenizer(path, require_locseg=require_locseg)


def decode_batch(tok: Tokenizer, rows: Sequence[Sequence[int]]) -> list[str]:
    """:meth:`Tokenizer.decode` of each row (e.g. a ``greedy_tokens`` array)."""
    return [tok.decode(r) for r in rows]
