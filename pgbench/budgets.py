"""Example budgets for few-shot transfer: which training examples a (budget, seed) uses.

One permutation of the split per seed; a budget takes its prefix. So subsets of one seed
are nested (the 64 examples are among the 256, which are among the 1024, ...), and the seed
picks the examples as well as the batch order (the paper's protocol, App. K.9; nesting is
pgbench's choice, the paper does not say).
"""

from __future__ import annotations

import re

import numpy as np

from pgbench.errors import InputError

PAPER_BUDGETS = (64, 256, 1024, 4096)
FULL = "full"
# Keeps budget draws apart from every other use of the seed (batch order, dropout, targets).
_SALT = 0xB0D6E7


def parse_budget(text: str | int | None) -> int | None:
    """``"256"``, ``"1k"``, ``"4K"``, ``256`` -> 256; ``"full"`` / None -> None (all)."""
    if text is None or (isinstance(text, str) and text.strip().lower() == FULL):
        return None
    if isinstance(text, int):
        n = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([kK]?)\s*", str(text))
        if not m:
            raise InputError(f"--budget {text!r}: expected a number of examples (64, 256, 1k, "
                             f"4096, ...) or 'full'")
        n = int(m.group(1)) * (1024 if m.group(2) else 1)
    if n <= 0:
        raise InputError(f"--budget {text!r}: must be positive")
    return n


def budget_indices(n_examples: int, budget: int | None, seed: int) -> tuple[np.ndarray, str | None]:
    """Indices (ascending) of the examples a run uses, and a note when the budget is larger
    than the split (then every example is used) or None."""
    if budget is None or budget >= n_examples:
        note = None
        if budget is not None and budget > n_examples:
            note = f"budget {budget} is larger than the split ({n_examples} examples): using all of them"
        return np.arange(n_examples), note
    order = np.random.default_rng([_SALT, seed]).permutation(n_examples)
    return np.sort(order[:budget]), None
