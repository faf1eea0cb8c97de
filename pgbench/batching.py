"""Model inputs built the way PaliGemma was trained (big_vision's pre-processing).

One example, text length T (``max_len``)::

    tokens      [BOS] prefix...  SEP   suffix...  EOS   PAD ...
    input_mask    1     1  ...    1     1  ...     1     0  ...
    mask_ar       0     0  ...    0     1  ...     1     1  ...     (padding gets 1)
    mask_loss     0     0  ...    0     1  ...     1     0  ...

``prefix`` is tokenized with BOS, the separator "\\n" on its own (so it is one id however the
prefix ends), ``suffix`` with EOS. Without a suffix the example is the prefix-only batch that
decoding starts from: ``[BOS] prefix [SEP] [PAD]...`` with ``mask_ar`` 0 on the prefix and 1 on
padding, ``mask_loss`` all 0. Padding is on the right with the tokenizer's pad id.

Too-long text is never cut silently: ``truncate="error"`` (default) raises
:class:`InputError`; ``truncate="suffix"`` drops tokens from the end of the suffix (EOS first,
as big_vision's ``tolen`` cut does) and logs a warning with the count. A prefix that does not
fit with at least its separator is always an error.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping, Sequence

import numpy as np

from pgbench.errors import InputError
from pgbench.tokenizer import SEPARATOR, Tokenizer

log = logging.getLogger(__name__)

TEXT_KEYS = ("tokens", "input_mask", "mask_ar", "mask_loss")
TRUNCATE_POLICIES = ("error", "suffix")


def _pad_values(pad_id: int) -> dict[str, object]:
    return {"tokens": pad_id, "input_mask": False, "mask_ar": 1, "mask_loss": 0}


_DTYPES = {"tokens": np.int32, "input_mask": np.bool_, "mask_ar": np.int32, "mask_loss": np.int32}


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def encode_example(tok: Tokenizer, prefix: str, suffix: str | None = None, *,
                   max_len: int | None, truncate: str = "error") -> dict[str, np.ndarray]:
    """One example as ``dict(tokens i32[T], input_mask bool[T], mask_ar i32[T], mask_loss i32[T])``.

    ``T = max_len`` (right-padded); ``max_len=None`` gives the unpadded length (pad later with
    :func:`collate`). ``suffix=None`` builds the prefix-only decode input.
    """
    if truncate not in TRUNCATE_POLICIES:
        raise ValueError(f"truncate must be one of {TRUNCATE_POLICIES}, got {truncate!r}")
    if not isinstance(prefix, str) or (suffix is not None and not isinstance(suffix, str)):
        raise InputError(f"prefix and suffix must be strings, got {type(prefix).__name__} and "
                         f"{type(suffix).__name__}")
    head = tok.encode(prefix, bos=True) + tok.encode(SEPARATOR)
    tail = [] if suffix is None else tok.encode(suffix, eos=True)

    if max_len is not None:
        if max_len <= 0:
            raise InputError(f"max_len must be positive, got {max_len}")
        if len(head) > max_len:
            raise InputError(
                f"prompt {_short(prefix)} needs {len(head)} tokens ([BOS] prefix [SEP]) but the "
                f"text budget is max_len={max_len}; shorten the prompt or raise max_len"
            )
        overflow = len(head) + len(tail) - max_len
        if overflow > 0:
            if truncate == "error":
                raise InputError(
                    f"example needs {len(head) + len(tail)} tokens ({len(head)} for [BOS] prefix "
                    f"[SEP], {len(tail)} for suffix [EOS]; suffix {_short(suffix)}) but the "
                    f"text budget is max_len={max_len}; raise max_len or pass "
                    "truncate='suffix'"
                )
            log.warning("truncated %d of %d suffix tokens (incl. EOS) of %s to fit max_len=%d",
                        overflow, len(tail), _short(suffix), max_len)
            tail = tail[: len(tail) - overflow]

    n_real = len(head) + len(tail)
    length = n_real if max_len is None else max_len
    pad = _pad_values(tok.pad_id)
    out = {k: np.full(length, pad[k], dtype=_DTYPES[k]) for k in TEXT_KEYS}
    out["tokens"][:n_real] = head + tail
    out["input_mask"][:n_real] = True
    out["mask_ar"][: len(head)] = 0
    out["mask_ar"][len(head):n_real] = 1
    out["mask_loss"][len(head):n_real] = 1
    return out


def encode_prefix(tok: Tokenizer, prefix: str, *, max_len: int | None) -> dict[str, np.ndarray]:
    """The decode input ``[BOS] prefix [SEP] [PAD]...`` (= ``encode_example`` without suffix)."""
    return encode_example(tok, prefix, None, max_len=max_len)


def collate(examples: Sequence[Mapping[str, np.ndarray]], *, pad_to: int | None = None,
            pad_id: int = 0) -> dict[str, np.ndarray]:
    """Stack examples into a batch, right-padding every text array to a common length.

    The length is ``pad_to`` if given (an :class:`InputError` if an example holds more real
    tokens than that), else the longest example. Padding uses ``pad_id`` for tokens, False for
    ``input_mask``, 1 for ``mask_ar`` and 0 for ``mask_loss``. Non-text keys (e.g. ``images``)
    are stacked as they are.
    """
    if not examples:
        raise InputError("collate: no examples")
    keys = list(examples[0].keys())
    for i, ex in enumerate(examples):
        if list(ex.keys()) != keys:
            raise InputError(f"collate: example {i} has keys {sorted(ex)}, example 0 has "
                             f"{sorted(keys)}")
    lengths = [len(ex["tokens"]) for ex in examples]
    real = [int(np.asarray(ex["input_mask"]).sum()) for ex in examples]
    target = max(lengths) if pad_to is None else pad_to
    for i, n in enumerate(real):
        if n > target:
            raise InputError(f"collate: example {i} has {n} real tokens, more than "
                             f"pad_to={target}")
    pad = _pad_values(pad_id)
    out: dict[str, np.ndarray] = {}
    for k in keys:
        if k in TEXT_KEYS:
            rows = np.full((len(examples), target), pad[k], dtype=_DTYPES[k])
            for i, ex in enumerate(examples):
                a = np.asarray(ex[k])
                n = min(len(a), target)  # beyond `real`, only padding is dropped
                rows[i, :n] = a[:n]
            out[k] = rows
        else:
            out[k] = np.stack([np.asarray(ex[k]) for ex in examples])
    return out


def make_text_batch(tok: Tokenizer, prefixes: Sequence[str],
                    suffixes: Sequence[str | None] | None = None, *, max_len: int,
                    truncate: str = "error", pad_to: int | None = None) -> dict[str, np.ndarray]:
    """Text arrays ``[B, T]`` for a list of prompts (and suffixes, or None for decoding).

    ``T = pad_to or max_len``.
    """
    if suffixes is None:
        suffixes = [None] * len(prefixes)
    if len(suffixes) != len(prefixes):
        raise InputError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes")
    exs = [encode_example(tok, p, s, max_len=max_len, truncate=truncate)
           for p, s in zip(prefixes, suffixes)]
    return collate(exs, pad_to=pad_to, pad_id=tok.pad_id)


def make_batch(tok: Tokenizer, items: Iterable[tuple], *, image_size: int, max_len: int,
               method: str = "bigvision", antialias: bool = False,
               normalization: str | None = None, truncate: str = "error",
               pad_to: int | None = None) -> dict[str, np.ndarray]:
    """A full model batch from ``(image, prefix)`` or ``(image, prefix, suffix)`` items.

    ``image`` is anything :func:`pgbench.images.load_image` accepts (path, bytes, PIL image,
    uint8 array). Returns ``images f32[B, R, R, 3]`` (R = ``image_size``, in [-1, 1]) and the
    text arrays ``[B, T]`` of :func:`encode_example`.
    """
    from pgbench import images as img_lib

    examples = []
    for n, item in enumerate(items):
        if not 2 <= len(item) <= 3:
            raise InputError(f"item {n}: expected (image, prefix) or (image, prefix, suffix), "
                             f"got {len(item)} fields")
        image, prefix, suffix = (*item, None)[:3]
        ex = encode_example(tok, prefix, suffix, max_len=max_len, truncate=truncate)
        ex["images"] = img_lib.preprocess(image, image_size, method=method, antialias=antialias,
                                          normalization=normalization)
        examples.append(ex)
    batch = collate(examples, pad_to=pad_to, pad_id=tok.pad_id)
    return {"images": batch.pop("images"), **batch}
