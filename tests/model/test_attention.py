"""The attention entry point: grouped heads, soft-cap, masking, and the impl seams."""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from pgbench.model import attention as attention_module
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


def _one_query_against_a_cache(kvh, *, b=3, s=13, h=6, d=8, seed=0):
    """One query per row (the last valid slot's token) against a cache with unwritten
    slots: row 1 has 9 written slots, row 2 none visible to its padding query."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, 1, h, d)).astype(np.float32) * 2
    k = rng.normal(size=(b, s, kvh, d)).astype(np.float32) * 2
    v = rng.normal(size=(b, s, kvh, d)).astype(np.float32)
    ar = np.zeros((b, s), np.int32)
    ar[:, 6:] = 1
    valid = np.ones((b, s), bool)
    valid[1:2, 9:] = False
    k_info = _info(np.asarray(ar_cumsum(ar)), valid)
    q_info = SegmentInfo(k_info.ar_cumsum[:, -1:], jnp.asarray([[True], [True], [False]][:b]),
                         jnp.asarray([[s - 1], [8], [s - 1]][:b], jnp.int32))
    return q, k, v, q_info, k_info


@pytest.mark.parametrize("kvh", [1, 2, 3])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_cpu_decode_form_matches_naive(kvh, softcap):
    """The CPU's one-query form (every query head against every KV head, other heads
    masked) equals the float64 reference on the rows that are read, and the grouped form
    everywhere, the padding row included (the average of its own KV head's values)."""
    q, k, v, q_info, k_info = _one_query_against_a_cache(kvh)
    got = np.asarray(attention_module._cpu_one_query(q, k, v, q_info, k_info, softcap, None))
    want = naive(q, k, v, np.asarray(k_info.ar_cumsum), np.asarray(k_info.valid), softcap,
                 qc=np.asarray(q_info.ar_cumsum), qvalid=np.asarray(q_info.valid))
    np.testing.assert_allclose(got[:2], want[:2], atol=2e-5)
    grouped = np.asarray(attention_module._xla(q, k, v, q_info, k_info, softcap, None))
    np.testing.assert_allclose(got, grouped, atol=2e-6)
    own_head_mean = v[2].mean(0)[np.arange(6) // (6 // kvh)]
    np.testing.assert_allclose(got[2, 0], own_head_mean, atol=2e-6)


@pytest.mark.parametrize("window", [3, jnp.int32(4)])
def test_cpu_decode_form_keeps_the_window(window):
    q, k, v, q_info, k_info = _one_query_against_a_cache(2)
    got = attention_module._cpu_one_query(q, k, v, q_info, k_info, 3.0, window)
    want = attention_module._xla(q, k, v, q_info, k_info, 3.0, window)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)
    wide_open = attention_module._xla(q, k, v, q_info, k_info, 3.0, None)
    assert not np.allclose(np.asarray(got)[:2], np.asarray(wide_open)[:2], atol=1e-3)  # the control


def test_cpu_decode_form_in_bfloat16_matches_the_grouped_form():
    q, k, v, q_info, k_info = (jnp.asarray(a, jnp.bfloat16) if isinstance(a, np.ndarray) else a
                               for a in _one_query_against_a_cache(3))
    got = attention_module._cpu_one_query(q, k, v, q_info, k_info, 3.0, None)
    assert got.dtype == jnp.bfloat16
    want = attention_module._xla(q, k, v, q_info, k_info, 3.0, None)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=2e-2)


def _lowered_decode_step(platform: str, n_queries: int = 1, rows: int = 3) -> str:
    from jax import export
    q, k, v, q_info, k_info = _one_query_against_a_cache(3, b=rows)  # 13 slots x 3 KV heads
    q = np.repeat(q, n_queries, axis=1)
    q_info = SegmentInfo(*(np.repeat(np.asarray(a), n_queries, axis=1) for a in q_info))

    def step(q, k, v):
        return attention(q, k, v, q_info, kv_segment_info=k_info, softcap=3.0)
    return export.export(jax.jit(step), platforms=[platform])(q, k, v).mlir_module()


def test_cpu_decode_form_only_in_programs_for_one_cpu_device():
    """A decode step's attention reads the cache as one [B, S * KVH, hd] matrix (39 rows
    here) in a program for the CPU, never in one for a GPU or TPU, and only for one query
    per row."""
    assert "3x39x8" in _lowered_decode_step("cpu")
    assert "3x39x8" not in _lowered_decode_step("cuda")
    assert "3x39x8" not in _lowered_decode_step("tpu")
    assert "3x39x8" not in _lowered_decode_step("cpu", n_queries=2)


def test_one_row_with_many_kv_heads_keeps_the_grouped_form(monkeypatch):
    assert "1x39x8" in _lowered_decode_step("cpu", rows=1)  # 3 KV heads: the one-query form
    monkeypatch.setattr(attention_module, "ONE_QUERY_MAX_KV_HEADS_AT_ONE_ROW", 2)
    assert "1x39x8" not in _lowered_decode_step("cpu", rows=1)
    assert "3x39x8" in _lowered_decode_step("cpu")  # several rows take it at any head count


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
