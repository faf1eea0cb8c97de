"""Input checks shared by every scorer: one readable `InputError` per kind of mistake."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgbench.errors import InputError


def _kind(x: Any) -> str:
    return type(x).__name__


def as_list(name: str, value: Any) -> list:
    """`value` as a non-empty list; strings and non-sequences are rejected."""
    if value is None:
        raise InputError(f"{name}: expected a list, found None")
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Sequence) and not hasattr(value, "__len__"):
        raise InputError(f"{name}: expected a list, found {_kind(value)}")
    out = list(value)
    if not out:
        raise InputError(f"{name}: expected at least one example, found an empty list")
    return out


def check_strings(name: str, values: Any) -> list[str]:
    """A non-empty list of str."""
    out = as_list(name, values)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise InputError(f"{name}[{i}]: expected a str, found {_kind(v)} {v!r:.60}")
    return out


def check_string_lists(name: str, values: Any, *, allow_empty_inner: bool = False) -> list[list[str]]:
    """A non-empty list whose items are lists of str (one list of ground truths per example)."""
    out = as_list(name, values)
    lists = []
    for i, refs in enumerate(out):
        if isinstance(refs, str) or not isinstance(refs, (list, tuple)):
            raise InputError(
                f"{name}[{i}]: expected a list of str (the ground truths of example {i}), "
                f"found {_kind(refs)} {refs!r:.60}")
        if not refs and not allow_empty_inner:
            raise InputError(f"{name}[{i}]: expected at least one ground truth, found an empty list")
        for j, r in enumerate(refs):
            if not isinstance(r, str):
                raise InputError(f"{name}[{i}][{j}]: expected a str, found {_kind(r)} {r!r:.60}")
        lists.append(list(refs))
    return lists


def check_same_length(**named: list) -> int:
    """All given lists have one length; returns it."""
    lengths = {k: len(v) for k, v in named.items() if v is not None}
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise InputError(f"inputs must have one entry per example, found different lengths: {found}")
    return next(iter(lengths.values()))


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{name}: expected one of {', '.join(map(repr, choices))}, found {value!r}")
    return value


def check_number(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InputError(f"{name}: expected a number in [{lo}, {hi}], found {value!r}")
    return float(value)
