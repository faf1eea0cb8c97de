"""The prefix-LM mask rule against a brute-force loop and big_vision's own masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgbench.model.masks import SegmentInfo, ar_cumsum, prefix_lm_mask
from tests.model._reference import CASES, load_case


def brute_force(ar, valid, pos, window):
    """One (query, key) pair at a time, straight from the rule's definition."""
    n = len(ar)
    c = np.cumsum(ar)
    out = np.zeros((n, n), bool)
    for q in range(n):
        for k in range(n):
            ok = bool(valid[q] and valid[k] and c[k] <= c[q])
            if window is not None and c[q] != 0:
                ok = ok and (pos[q] - pos[k] < window)
            out[q, k] = ok
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.one_of(st.none(), st.integers(1, 6)))))
def test_mask_matches_brute_force(case):
    ar, valid, window = (np.asarray(case[0], np.int32), np.asarray(case[1], bool), case[2])
    pos = np.arange(len(ar), dtype=np.int32)
    info = SegmentInfo(ar_cumsum(ar[None]), valid[None], pos[None])
    got = np.asarray(prefix_lm_mask(info, info, window=window))[0]
    np.testing.assert_array_equal(got, brute_force(ar, valid, pos, window))


@pytest.mark.parametrize("name", sorted(CASES))
def test_mask_matches_big_vision(name):
    _, cfg, _, inp, out, _ = load_case(name)
    n_img = cfg.num_image_tokens
    b = inp["tokens"].shape[0]
    ar = np.concatenate([np.zeros((b, n_img), np.int32), inp["mask_ar"]], axis=1)
    valid = np.concatenate([np.ones((b, n_img), bool), inp["input_mask"]], axis=1)
    info = SegmentInfo.from_masks(valid, ar)
    got = np.asarray(prefix_lm_mask(info, info))
    np.testing.assert_array_equal(got, out["attn_mask_with_input_mask"])
    everything = info._replace(valid=np.ones_like(valid))  # Model.__call__ passes no input mask
    np.testing.assert_array_equal(np.asarray(prefix_lm_mask(everything, everything)),
                                  out["attn_mask"])
