"""`init-order`: names before `*` go first, names after it go last, the rest keep their place.

Init containers run one at a time in spec order, so their relative order is user semantics:
only the named ones move, and every element is copied verbatim.
"""

from __future__ import annotations

from collections.abc import Sequence


def reorder(current: Sequence[str], order: Sequence[str]) -> list[str]:
    """The new order of `current` names; names in `order` that are not in `current` are ignored."""
    if "*" not in order:
        order = [*order, "*"]
    star = list(order).index("*")
    present = set(current)
    first = [name for name in order[:star] if name in present]
    last = [name for name in order[star + 1 :] if name in present]
    moved = set(first) | set(last)
    middle = [name for name in current if name not in moved]
    return first + middle + last
