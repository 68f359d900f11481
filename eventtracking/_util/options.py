"""Checks of option values that constructors share."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["is_count"]


def is_count(value: object, minimum: int = 1) -> TypeGuard[int]:
    """Whether ``value`` is an int of at least ``minimum``: a size, a limit, a number of
    retries. A bool is not one, though Python counts it as an int."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
