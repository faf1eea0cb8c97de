"""The attention entry point: grouped heads, soft-cap, masking, and the impl seams."""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp
import pytest

from pgbench.model.attention import MASK_VALUE, attention
from pgbench.model.masks import SegmentInfo, ar_cumsum


def naive(q, k, v, c, valid, softcap=None, qc=None, qvalid=None):
    """float64, K/V repeated per query head, one head at a time."""
    qc = c if qc is None else qc
    qvalid = valid if qvalid is None else qvalid
    b, nq, h, d = q.shape
    group = h // k.shape[2]
    out = np.zeros((b, nq, h, d))
    for bi in range(b):
        for n in range(h):
            s = q[bi, :, n].astype(np.float64) @ k[bi, :, n // group].astype(np.float64).T
            if softcap:
                s = softcap * np.tanh(s / softcap)
            m = (c[bi][None, :] <= qc[bi][:, None]) & valid[bi][None, :] & qvalid[bi][:, None]
            s = np.where(m, s, MASK_VALUE)
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[bi, :, n] = p @ v[bi, :, n // group].astype(np.float64)
    return out


def _inputs(seed=0, b=2, n=10, h=4, kvh=2, d=8):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, n, h, d)).astype(np.float32) * 2
    k = rng.normal(size=(b, n, kvh, d)).astype(np.float32) * 2
    v = rng.normal(size=(b, n, kvh, d)).astype(np.float32)
    ar = np.zeros((b, n), np.int32)
    ar[:, 5:] = 1
    valid = np.ones((b, n), bool)
    valid[1, 8:] = False
    return q, k, v, np.asarray(ar_cumsum(ar)), valid


def _info(c, valid):
    return SegmentInfo.from_masks(valid, np.diff(c, prepend=0, axis=1))


@pytest.mark.parametrize("kvh", [1, 2, 4])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_xla_matches_naive(kvh, softcap):
    q, k, v, c, valid = _inputs(kvh=kvh)
    got = np.asarray(attention(q, k, v, _info(c, valid), softcap=softcap))
    want = naive(q, k, v, c, valid, softcap)
    rows = valid[:, :, None, None]  # padding queries are never read
    np.testing.assert_allclose(np.where(rows, got, 0), np.where(rows, want, 0), atol=2e-5)


def test_cached_queries_match_self_attention():
    """Queries against a longer key set (a cache) with their own metadata."""
    q, k, v, c, valid = _inputs()
    last = slice(7, 10)
    info = _info(c, valid)
    q_info = SegmentInfo(*(a[:, last] for a in info))
    got = attention(q[:, last], k, v, q_info, kv_segment_info=info)
    full = attention(q, k, v, _info(c, valid))
    rows = valid[:, last, None, None]
    np.testing.assert_allclose(np.where(rows, got, 0), np.where(rows, np.asarray(full)[:, last], 0),
                               atol=1e-6)


def test_cudnn_impl_matches_xla():
    q, k, v, c, valid = _inputs()
    got = attention(q, k, v, _info(c, valid), impl="cudnn")
    want = attention(q, k, v, _info(c, valid))
    rows = valid[:, :, None, None]
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.where(rows, got, 0), np.where(rows, want, 0), atol=1e-5)


def test_pallas_seam_matches_xla():
    pytest.importorskip("pgbench.kernels")
    q, k, v, c, valid = _inputs()
    rows = valid[:, :, None, None]
    kw = dict(softcap=3.0, window=3)  # one interpret-mode compile covers both options
    got = attention(q, k, v, _info(c, valid), impl="pallas", **kw)
    want = attention(q, k, v, _info(c, valid), **kw)
    np.testing.assert_allclose(np.where(rows, got, 0), np.where(rows, want, 0), atol=1e-5)
    # and the cached-query path (prefix_lm_decode_attention)
    last = slice(7, 10)
    info = _info(c, valid)
    q_info = SegmentInfo(*(a[:, last] for a in info))
    got = attention(q[:, last], k, v, q_info, kv_segment_info=info, impl="pallas", **kw)
    want = attention(q[:, last], k, v, q_info, kv_segment_info=info, **kw)
    np.testing.assert_allclose(np.where(rows[:, last], got, 0), np.where(rows[:, last], want, 0),
                               atol=1e-5)


def test_bfloat16_inputs_keep_float32_statistics():
    q, k, v, c, valid = _inputs()
    got = attention(*(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)), _info(c, valid))
    assert got.dtype == jnp.bfloat16
    want = naive(q, k, v, c, valid)
    rows = valid[:, :, None, None]
    np.testing.assert_allclose(np.where(rows, np.asarray(got, np.float32), 0),
                               np.where(rows, want, 0), atol=0.1)


def test_unknown_impl_is_rejected():
    q, k, v, c, valid = _inputs()
    with pytest.raises(ValueError, match="flash"):
        attention(q, k, v, _info(c, valid), impl="flash")
