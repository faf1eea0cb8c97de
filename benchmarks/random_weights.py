"""Deterministic random weights for benchmarks, identical in every process.

Each parameter is drawn from its own numpy stream seeded by (seed, crc32(name)), so the
pgbench process and the transformers process build the very same model without ever
holding two copies (or writing a 12 GB checkpoint to disk).
"""

from __future__ import annotations

import zlib
from typing import Iterator

import numpy as np

from pgbench.config import PaliGemmaConfig
from pgbench.model.params import expected_shapes


def random_param(name: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name.endswith(("/bias", "/scale")):
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    fan_in = int(np.prod(shape[-2:-1])) if len(shape) > 1 else 1
    if name == "img/embedding/kernel":
        fan_in = int(np.prod(shape[:3]))
    arr = rng.standard_normal(shape, dtype=np.float32)
    arr *= np.float32(max(fan_in, 1) ** -0.5)
    return arr


def random_flat(cfg: PaliGemmaConfig, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """(big_vision name, array) pairs, one at a time, in a fixed order."""
    for name, shape in sorted(expected_shapes(cfg).items()):
        yield name, random_param(name, shape, seed)


class LazyRandomFlat(dict):
    """A flat-dict stand-in for ``from_bigvision_params(consume=True)``: arrays drawn on pop."""

    def __init__(self, cfg: PaliGemmaConfig, seed: int = 0):
        self._shapes = expected_shapes(cfg)
        super().__init__({k: None for k in self._shapes})
        self._seed = seed

    def shapes(self):
        return dict(self._shapes)

    def pop(self, key, *default):
        super().pop(key, *default)
        return random_param(key, self._shapes[key], self._seed)

    def __getitem__(self, key):
        return random_param(key, self._shapes[key], self._seed)
