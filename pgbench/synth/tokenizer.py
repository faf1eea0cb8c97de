"""The small default model's SentencePiece tokenizer, trained on the synthetic benchmark's text.

The corpus is every training example's prompt and answers, as the task adapters build them
(``answer en {question}``, ``caption en``, the referring sentence, the DocVQA question alone,
``detect a ; b``), joined by the ``"\\n"`` separator, plus every annotator variant and
caption; nothing is drawn. The pieces and trainer settings are those of
:mod:`pgbench.tokenizer_train` (the loc/seg pieces as user-defined symbols, byte fallback),
so the same seed and sizes give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from pgbench import tokenizer_train
from pgbench.errors import InputError
from pgbench.synth import generate

DEFAULT_VOCAB_SIZE = 1664  # 251 learned pieces; 2000 images per family supply at most ~290
DEFAULT_IMAGES = 2000


def _lines(family: str, record: dict) -> list[str]:
    if family in ("vqav2", "textvqa"):
        return [f"answer en {q['question']}\n{a}" for q in record["questions"] for a in dict.fromkeys(q["answers"])]
    if family == "rsvqa_lr":
        return [f"answer en {q['question']}\n{q['answer']}" for q in record["questions"]]
    if family == "docvqa":
        return [f"{q['question']}\n{a}" for q in record["questions"] for a in q["answers"]]
    if family == "cococap":
        return [f"caption en\n{c}" for c in record["captions"]]
    if family == "refcoco_seg":
        return [s for ref in record["refs"] for s in ref["sentences"]]
    if family == "detection":
        return ["detect " + " ; ".join(record["labels"]) + "\n" + generate.detection_suffix(record, record["scene"].size)]
    raise KeyError(family)


def corpus(seed: int = 0, images: int = DEFAULT_IMAGES) -> list[str]:
    """Text of ``images`` training images per family, in a fixed order."""
    lines = []
    for family in generate.FAMILIES:
        recs = generate.sample_records(family, seed, {"train": images, "val": 0, "test": 0},
                                       generate.DEFAULT_IMAGE_SIZE)["train"]
        for r in recs:
            lines += _lines(family, r)
    return lines


def build(out_dir: str | Path, seed: int = 0, images: int = DEFAULT_IMAGES,
          vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Write ``tokenizer.model`` and ``tokenizer.json`` into ``out_dir``; returns it."""
    if vocab_size <= tokenizer_train.RESERVED_PIECES:
        raise InputError(f"vocabulary size {vocab_size} leaves no learned pieces "
                         f"(the reserved pieces alone are {tokenizer_train.RESERVED_PIECES})")
    try:
        model = tokenizer_train.train_sentencepiece(corpus(seed, images), vocab_size)
    except RuntimeError as e:
        raise InputError(f"the text of {images} training images per family cannot fill a vocabulary of "
                         f"{vocab_size} pieces ({str(e).split('] ')[-1]}); use more images or a smaller "
                         "vocabulary") from None
    return tokenizer_train.write_tokenizer(out_dir, model)
