"""``ParamSource``: big_vision-named parameters handed out one array at a time.

Checkpoint readers, random initialisation and plain in-memory dicts all offer the model
builder and the writers the same five things, so that a multi-GB checkpoint is never
held twice: every name and shape up front (validation needs no array), and each array
only when asked for.
"""

from __future__ import annotations

import abc
from typing import Mapping, MutableMapping

import numpy as np


class ParamSource(abc.ABC):
    """Parameters under big_vision names (``img/...``, ``llm/...``, layers stacked)."""

    #: Whether ``read`` returns a buffer nobody else holds: the caller may keep it (the
    #: model then shares its memory) or reorder it in place.
    fresh: bool = True

    @abc.abstractmethod
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every name and its shape, without reading an array."""

    @abc.abstractmethod
    def dtypes(self) -> dict[str, np.dtype]:
        """Every name and its stored dtype, without reading an array."""

    @abc.abstractmethod
    def read(self, key: str) -> np.ndarray:
        """One array (each key is read once by the builder and the writers)."""

    def keys(self) -> list[str]:
        return sorted(self.shapes())

    def close(self) -> None:
        """Release open files (nothing by default)."""


class ArrayDict(ParamSource):
    """An in-memory ``{name: array}`` as a ParamSource.

    ``give=True`` hands the arrays over: ``read`` pops each one from the dict (which
    empties as the model is built) and the builder may reorder it in place. Otherwise the
    dict is left as it is and its arrays are copied, never changed.
    """

    def __init__(self, flat: Mapping[str, np.ndarray] | MutableMapping[str, np.ndarray], *,
                 give: bool = False):
        self._flat, self.fresh = flat, give
        self._shapes = {k: tuple(np.shape(v)) for k, v in flat.items()}
        self._dtypes = {k: np.dtype(v.dtype) for k, v in flat.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def dtypes(self) -> dict[str, np.dtype]:
        return dict(self._dtypes)

    def read(self, key: str):
        return self._flat.pop(key) if self.fresh else self._flat[key]


def as_source(flat: ParamSource | Mapping[str, np.ndarray], *, give: bool = False) -> ParamSource:
    """``flat`` itself if it is a ParamSource, else an ``ArrayDict`` over it."""
    return flat if isinstance(flat, ParamSource) else ArrayDict(flat, give=give)
