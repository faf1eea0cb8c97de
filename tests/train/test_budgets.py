"""Budget subsets: nested within a seed, drawn by the seed, the whole split when too large."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pgbench.budgets import budget_indices, parse_budget
from pgbench.errors import InputError


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**31 - 1),
       budgets=st.lists(st.integers(1, 6000), min_size=2, max_size=5))
def test_budgets_of_one_seed_are_nested(n, seed, budgets):
    subsets = [set(budget_indices(n, b, seed)[0].tolist()) for b in sorted(budgets)]
    for small, big in zip(subsets, subsets[1:]):
        assert small <= big
    for b, s in zip(sorted(budgets), subsets):
        assert len(s) == min(b, n) and all(0 <= i < n for i in s)


def test_seed_picks_the_examples_and_is_reproducible():
    a, b = budget_indices(10_000, 256, 0)[0], budget_indices(10_000, 256, 1)[0]
    assert not np.array_equal(a, b)
    assert np.array_equal(a, budget_indices(10_000, 256, 0)[0])


def test_budget_larger_than_split_uses_all_and_says_so():
    idx, note = budget_indices(100, 256, 3)
    assert np.array_equal(idx, np.arange(100)) and "larger than the split" in note
    assert budget_indices(100, None, 3)[1] is None


def test_parse_budget():
    assert parse_budget("256") == 256 and parse_budget("1k") == 1024 and parse_budget("4K") == 4096
    assert parse_budget("full") is None and parse_budget(64) == 64
    for bad in ("zero", "-5", "0", "1.5k"):
        with pytest.raises(InputError, match="--budget"):
            parse_budget(bad)
