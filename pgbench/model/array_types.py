"""Shape/dtype annotations (jaxtyping) shared by the public entry points.

Dimension names bind across one call: ``B`` batch, ``T`` text tokens, ``N``/``Nq``/``Nk``
sequence lengths, ``H``/``KVH`` query/KV heads, ``D`` head or model width. Inputs may be
numpy or jax arrays (``In``); results are jax arrays. The annotations are checked at run
time in the tests (``jaxtyping.jaxtyped`` with beartype, tests/model/test_array_types.py),
not on every call.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Array, Bool, Float, Int, Shaped  # noqa: F401 (re-exported)

In = Array | np.ndarray  # an input array: jax or numpy
