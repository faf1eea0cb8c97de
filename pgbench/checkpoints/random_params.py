"""Deterministic random parameters: ``init_params`` and the benchmarks' random weights.

Each parameter is drawn from its own numpy stream seeded by (seed, crc32(name)), so any
process (pgbench's, or transformers' reading an HF directory written from the same
source) gets the very same values one tensor at a time, never holding two copies. numpy,
not ``jax.random``: eager ``jax.random`` compiles once per distinct shape (tens of seconds).
"""

from __future__ import annotations

import zlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pgbench.checkpoints.bigvision_layout import expected_shapes, from_bigvision_params
from pgbench.checkpoints.flat import ParamSource
from pgbench.config import PaliGemmaConfig
from pgbench.model.paligemma import PaliGemma


def fan_in(name: str, shape: tuple[int, ...]) -> int:
    """The number of inputs each output of big_vision parameter ``name`` sums over.

    Attention output projections ([.., H, hd, D]: ``out/kernel``, ``attn_vec_einsum``)
    contract over heads and head_dim together, so their fan-in is H * hd, not hd: with hd
    alone the attention output would start sqrt(H) times too large. The ViT's query, key
    and value kernels ([.., D, H, hd]) contract over D, not H: with H the image tower's
    attention logits started ~30x too large and its softmax saturated (one of the
    reasons the default model's image tower learned nothing about positions). Token embeddings are
    looked up, not summed; scaling them by 1/sqrt(width) gives each row a norm near 1.
    """
    if name == "img/embedding/kernel":  # [p, p, 3, C]: a p x p x 3 patch per output
        return shape[0] * shape[1] * shape[2]
    if name == "llm/embedder/input_embedding":
        return shape[-1]
    if name.endswith(("out/kernel", "attn_vec_einsum/w")):
        return shape[-3] * shape[-2]
    if name.endswith(("query/kernel", "key/kernel", "value/kernel")):  # ViT [.., D, H, hd]
        return shape[-3]
    return shape[-2] if len(shape) >= 2 else 1  # [..., in, out] kernels and [..., D, hd] einsums


def random_param(name: str, shape: tuple[int, ...], seed: Sequence[int] = (0,)) -> np.ndarray:
    """float32 normals: std 0.02 for biases, norm scales and the position embedding,
    1/sqrt(fan-in) for every weight that multiplies an input."""
    rng = np.random.default_rng([*seed, zlib.crc32(name.encode())])
    x = rng.standard_normal(shape, dtype=np.float32)
    if name.endswith(("/bias", "/scale")) or name == "img/pos_embedding":
        x *= np.float32(0.02)
    else:
        x *= np.float32(fan_in(name, shape) ** -0.5)
    return x


class RandomParams(ParamSource):
    """The parameters of a model with config ``cfg``, drawn when read (``seed``: an int or
    a sequence of ints)."""

    fresh = True

    def __init__(self, cfg: PaliGemmaConfig, seed: int | Sequence[int] = 0):
        self._shapes = expected_shapes(cfg)
        self._seed = (seed,) if isinstance(seed, (int, np.integer)) else tuple(int(s) for s in seed)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def dtypes(self) -> dict[str, np.dtype]:
        return {k: np.dtype(np.float32) for k in self._shapes}

    def read(self, key: str) -> np.ndarray:
        return random_param(key, self._shapes[key], self._seed)


def init_params(cfg: PaliGemmaConfig, key: jax.Array, *, dtype=jnp.float32,
                stacked: bool = True) -> PaliGemma:
    """A randomly initialised model for tests and benchmarks, deterministic per ``key``
    (a ``jax.random`` key; its bits seed ``RandomParams``)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    seed = [int(x) for x in np.asarray(key).ravel()]
    return from_bigvision_params(RandomParams(cfg, seed), cfg, dtype=dtype, stacked=stacked)
