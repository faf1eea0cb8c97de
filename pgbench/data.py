"""Evaluation input pipeline (grain): prompts -> token arrays, images -> model inputs.

Two passes over a task's :class:`pgbench.task.Example` list:

1. :func:`encode_prompts` tokenises every prompt (``[BOS] prefix [SEP]``, unpadded) so the
   batches can be planned by prompt length (:func:`plan_batches`);
2. :func:`image_stream` decodes and resizes the images of the planned order in grain worker
   threads, ahead of the model (``prefetch`` examples buffered), so image work overlaps the
   decode loop that runs on the main thread.

A missing or corrupt image, or a prompt over the text budget, never stops the run: that
example comes out with ``error`` set to the reason (and no image), and the caller records it
as failed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import grain
import numpy as np

from pgbench.errors import ImageError, InputError
from pgbench.task import Example

PROMPT_BUCKET = 8  # prompt lengths are padded to a multiple of this: one compilation per bucket


def default_threads() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


@dataclasses.dataclass(frozen=True)
class Prompt:
    """An example's encoded prompt: tokens i32[n] (``[BOS] prefix [SEP]``), or the reason it
    could not be encoded."""

    tokens: np.ndarray | None
    error: str | None = None

    @property
    def length(self) -> int:
        return 0 if self.tokens is None else len(self.tokens)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """One example ready for the model: ``image`` f32[R, R, 3] in [-1, 1], or ``error``."""

    index: int
    image: np.ndarray | None
    error: str | None = None


def _read(dataset: grain.MapDataset, threads: int, prefetch: int) -> Iterator:
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                          prefetch_buffer_size=prefetch)))


def encode_prompts(tok, examples: Sequence[Example], *, max_prompt_len: int,
                   threads: int | None = None) -> list[Prompt]:
    """The unpadded prompt of every example; one over ``max_prompt_len`` tokens is an error
    of that example (never truncated)."""
    from pgbench.batching import encode_prefix

    def encode(ex: Example) -> Prompt:
        ids = encode_prefix(tok, ex.prefix, max_len=None)["tokens"]
        if len(ids) > max_prompt_len:
            return Prompt(None, f"prompt needs {len(ids)} tokens ([BOS] prompt [SEP]), over the "
                                f"text budget of {max_prompt_len}")
        return Prompt(ids)

    if not examples:
        return []
    ds = grain.MapDataset.source(list(examples)).map(encode)
    return list(_read(ds, threads or default_threads(), 64))


def bucket(n: int, limit: int) -> int:
    """Padded prompt length: ``n`` rounded up to a multiple of :data:`PROMPT_BUCKET`, at most
    ``max(limit, n)``."""
    return min(-(-n // PROMPT_BUCKET) * PROMPT_BUCKET, max(limit, n))


def plan_batches(prompts: Sequence[Prompt], todo: Sequence[int], batch_size: int, *,
                 max_prompt_len: int) -> list[tuple[int, list[int]]]:
    """Group the example indices ``todo`` into batches of prompts of one padded length.

    Returns ``[(padded_length, [index, ...]), ...]``: buckets by increasing length, indices in
    their given order inside a bucket, every batch but each bucket's last one full. Examples
    whose prompt failed to encode are left out (the caller records them as failed).
    """
    by_len: dict[int, list[int]] = {}
    for i in todo:
        if prompts[i].tokens is not None:
            by_len.setdefault(bucket(prompts[i].length, max_prompt_len), []).append(i)
    plan = []
    for length in sorted(by_len):
        idx = by_len[length]
        plan.extend((length, idx[s:s + batch_size]) for s in range(0, len(idx), batch_size))
    return plan


def resolve_image(data_dir: Path, example: Example) -> Path:
    p = Path(example.image)
    return p if p.is_absolute() else Path(data_dir) / p


def image_stream(examples: Sequence[Example], order: Sequence[int], *, data_dir: Path,
                 image_size: int, resize: str = "bigvision", threads: int | None = None,
                 prefetch: int = 32) -> Iterator[Loaded]:
    """Images of ``examples[i]`` for ``i`` in ``order``, decoded + resized in worker threads,
    yielded in that order. A missing or unreadable image yields ``Loaded(i, None, reason)``."""
    from pgbench import images

    def load(i: int) -> Loaded:
        path = resolve_image(data_dir, examples[i])
        try:
            x = images.preprocess(path, image_size, method=resize)
        except ImageError as e:
            return Loaded(i, None, str(e))
        except (OSError, ValueError) as e:  # anything PIL raises past its own checks
            return Loaded(i, None, f"{path}: {e}")
        return Loaded(i, x.astype(np.float32, copy=False))

    if not order:
        return iter(())
    ds = grain.MapDataset.source([int(i) for i in order]).map(load)
    return _read(ds, threads or default_threads(), prefetch)


def text_batch(prompts: Sequence[Prompt] | Mapping[int, Prompt], indices: Sequence[int], length: int, pad_id: int
               ) -> dict[str, np.ndarray]:
    """``tokens i32[B, T]``, ``input_mask bool[B, T]``, ``mask_ar i32[B, T]`` for the prompts of
    ``indices`` right-padded to ``length`` (as ``pgbench.batching.collate`` pads)."""
    b = len(indices)
    tokens = np.full((b, length), pad_id, np.int32)
    mask = np.zeros((b, length), bool)
    for r, i in enumerate(indices):
        ids = prompts[i].tokens
        if len(ids) > length:
            raise InputError(f"prompt of {len(ids)} tokens in a batch padded to {length}")
        tokens[r, :len(ids)] = ids
        mask[r, :len(ids)] = True
    mask_ar = (~mask).astype(np.int32)  # 0 on the prompt, 1 on padding
    return {"tokens": tokens, "input_mask": mask, "mask_ar": mask_ar}
