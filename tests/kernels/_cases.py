"""Random prefix-LM attention problems for the kernel tests (hypothesis strategies)."""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp
from hypothesis import strategies as st

from pgbench.kernels import BlockSizes

BLOCKS = st.sampled_from([BlockSizes(8, 8, 8, 8), BlockSizes(16, 8, 8, 16), BlockSizes(8, 16, 16, 8)])
TOL = {jnp.float32: 1e-5, jnp.bfloat16: 1e-2}  # max |kernel - reference| / max |reference|


@st.composite
def problems(draw, max_n=40, head_dims=(8, 16), dtype=jnp.float32):
    """A self-attention problem: prefix/suffix split, right padding, GQA, cap, window."""
    b = draw(st.integers(1, 2))
    n = draw(st.integers(1, max_n))
    kvh = draw(st.sampled_from([1, 2]))
    h = kvh * draw(st.sampled_from([1, 2, 3]))
    d = draw(st.sampled_from(head_dims))
    prefix = [draw(st.integers(0, n)) for _ in range(b)]
    pad = [draw(st.integers(0, n)) for _ in range(b)]
    softcap = draw(st.sampled_from([None, 2.0, 50.0]))
    window = draw(st.sampled_from([None, 1, 3, 8]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scale = 3.0 / np.sqrt(d)  # logits of order 1-10 so the soft-cap matters
    q = rng.normal(size=(b, n, h, d)) * scale
    k = rng.normal(size=(b, n, kvh, d))
    v = rng.normal(size=(b, n, kvh, d))
    ar = np.zeros((b, n), np.int32)
    valid = np.ones((b, n), bool)
    for i in range(b):
        ar[i, prefix[i]:] = 1
        valid[i, n - pad[i]:] = pad[i] == 0
    return dict(q=jnp.asarray(q, dtype), k=jnp.asarray(k, dtype), v=jnp.asarray(v, dtype),
                ar_cumsum=jnp.asarray(np.cumsum(ar, axis=1), jnp.int32), valid=jnp.asarray(valid),
                softcap=softcap, window=window)


# Fixed shapes for the fast tests: interpret mode compiles each new shape for seconds,
# so hypothesis varies only the data, masks and (traced) window within these.
FAMILIES = {
    "gqa": dict(b=2, n=21, h=4, kvh=2, d=16, blocks=BlockSizes(8, 8, 8, 8), softcap=None),
    "mqa_softcap": dict(b=1, n=30, h=3, kvh=1, d=8, blocks=BlockSizes(16, 8, 8, 16), softcap=5.0),
}
NO_WINDOW = 2**31 - 1


@st.composite
def family_problems(draw, family, dtype=jnp.float32):
    """A problem of one FAMILIES shape; ``window`` is an int (NO_WINDOW: off)."""
    f = FAMILIES[family]
    b, n, h, kvh, d = f["b"], f["n"], f["h"], f["kvh"], f["d"]
    prefix = [draw(st.integers(0, n)) for _ in range(b)]
    pad = [draw(st.integers(0, n)) for _ in range(b)]
    window = draw(st.sampled_from([1, 3, 8, NO_WINDOW]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    ar = np.zeros((b, n), np.int32)
    valid = np.ones((b, n), bool)
    for i in range(b):
        ar[i, prefix[i]:] = 1
        valid[i, n - pad[i]:] = pad[i] == 0
    return dict(q=jnp.asarray(rng.normal(size=(b, n, h, d)) * 3 / np.sqrt(d), dtype),
                k=jnp.asarray(rng.normal(size=(b, n, kvh, d)), dtype),
                v=jnp.asarray(rng.normal(size=(b, n, kvh, d)), dtype),
                ar_cumsum=jnp.asarray(np.cumsum(ar, axis=1), jnp.int32), valid=jnp.asarray(valid),
                softcap=f["softcap"], window=window, blocks=f["blocks"])


def rel_err(x, ref, rows=None):
    """max |x - ref| / max |ref| in float32 (over ``rows``, a bool[B, N] mask, if given)."""
    x, ref = np.asarray(x, np.float32), np.asarray(ref, np.float32)
    if rows is not None:
        rows = np.asarray(rows)
        x, ref = x[rows], ref[rows]
    denom = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-6)
    return float(np.max(np.abs(x - ref))) / denom if ref.size else 0.0
