"""The training input pipeline (grain): a task's examples -> batches, deterministic by seed.

Global example position g (step · batch + row) maps to epoch g // N and to the example
``permutation(seed, epoch)[g % N]`` of the N examples, so every epoch is a fresh shuffle
fixed by the seed. Its training target is drawn from ``Example.train_targets`` by an RNG
seeded with (seed, g): big_vision's "one answer sampled per step". Images are decoded and
resized in grain worker threads ahead of the model; the iterator's state (the next batch) is
a small JSON dict saved with every checkpoint, so a resumed run reads exactly the batches
an uninterrupted one would.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Iterator, Sequence

import grain
import numpy as np

from pgbench.batching import collate, encode_example
from pgbench.errors import ImageError, PgbenchError
from pgbench.task import Example

_ORDER_SALT, _TARGET_SALT = 0x0DE4, 0x7A46


class TrainDataError(PgbenchError):
    """A training example cannot be used (no target, unreadable image)."""


def example_text_len(tok, example: Example) -> int:
    """Tokens the longest (prefix, target) pair of ``example`` needs: [BOS] prefix [SEP] target [EOS]."""
    head = len(tok.encode(example.prefix, bos=True)) + 1
    return head + max(len(tok.encode(t, eos=True)) for t in example.train_targets)


def fit_text_len(tok, examples: Sequence[Example]) -> int:
    """The text length that fits every (prefix, target) pair of ``examples``."""
    return max(example_text_len(tok, ex) for ex in examples)


class TrainData:
    """Batches of ``batch_size`` examples: images f32[B, R, R, 3] and the text arrays [B, T]."""

    def __init__(self, examples: Sequence[Example], *, tok, data_dir: str | Path, image_size: int,
                 text_len: int, batch_size: int, seed: int, truncate: str = "error",
                 threads: int | None = None):
        for ex in examples:
            if not ex.train_targets:
                raise TrainDataError(f"example {ex.id!r} has no training target (no targets and "
                                     "no references): the split is not labelled")
        self.examples, self.tok = list(examples), tok
        self.data_dir, self.image_size, self.text_len = Path(data_dir), image_size, text_len
        self.batch_size, self.seed, self.truncate = batch_size, seed, truncate
        self.threads = threads or max(1, min(8, os.cpu_count() or 1))

    @functools.lru_cache(maxsize=4)
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([_ORDER_SALT, self.seed, epoch]).permutation(len(self.examples))

    def example_at(self, position: int) -> tuple[Example, str]:
        """The example and drawn target at global position ``position``."""
        epoch, i = divmod(position, len(self.examples))
        ex = self.examples[int(self._order(epoch)[i])]
        rng = np.random.default_rng([_TARGET_SALT, self.seed, position])
        targets = ex.train_targets
        return ex, targets[int(rng.integers(len(targets)))]

    def _load(self, position: int) -> dict[str, np.ndarray]:
        from pgbench import images

        ex, target = self.example_at(int(position))
        out = encode_example(self.tok, ex.prefix, target, max_len=self.text_len, truncate=self.truncate)
        path = Path(ex.image) if Path(ex.image).is_absolute() else self.data_dir / ex.image
        try:
            out["images"] = images.preprocess(path, self.image_size)
        except (ImageError, OSError) as e:
            raise TrainDataError(f"example {ex.id!r}: image {path}: {e}") from None
        return out

    def dataset(self, num_steps: int) -> grain.MapDataset:
        b = self.batch_size
        return (grain.MapDataset.range(num_steps * b).map(self._load)
                .batch(b, batch_fn=lambda rows: collate(rows, pad_to=self.text_len, pad_id=self.tok.pad_id)))

    def iterator(self, num_steps: int, state: dict | None = None) -> Iterator[dict]:
        """Batches for steps 0..num_steps-1, from ``state`` (``get_state()`` of an earlier
        iterator) when given."""
        it = iter(self.dataset(num_steps).to_iter_dataset(
            grain.ReadOptions(num_threads=self.threads, prefetch_buffer_size=2 * self.batch_size)))
        if state is not None:
            it.set_state(state)
        return it
