"""The number checks of every option: sizes, limits and counts, and seconds.

One rule each, and one wording, for the spool, the delivery, the backends, the
processors and the Django settings: a bool is never a number here, though Python counts
it as an int; the error, an ImproperlyConfigured (so a ValueError), names the option,
says what it takes and shows the value it got.
"""

from __future__ import annotations

from typing import TypeGuard

from eventtracking.exceptions import ImproperlyConfigured

__all__ = ["check_count", "check_seconds", "is_count", "is_seconds"]


def is_count(value: object, minimum: int = 1) -> TypeGuard[int]:
    """Whether ``value`` is an int of at least ``minimum``: a size, a limit, a number of
    retries. A bool is not one, though Python counts it as an int."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_seconds(value: object, *, allow_zero: bool = False) -> bool:
    """Whether ``value`` is a number of seconds above 0 (0 included with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= 0 if allow_zero else value > 0


def check_count(
    name: str, value: object, minimum: int = 1, unit: str = "", or_none: str = ""
) -> None:
    """Raise ImproperlyConfigured unless ``value`` is an int of at least ``minimum``, or
    None when ``or_none`` says what None means: "batch_size must be a positive int, got 0",
    "max_bytes must be a positive int (bytes) or None for no limit, got 0"."""
    if not (is_count(value, minimum) or (or_none and value is None)):
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        _refuse(name, value, what + (f" ({unit})" if unit else ""), or_none)


def check_seconds(name: str, value: object, allow_zero: bool = False, or_none: str = "") -> None:
    """Raise ImproperlyConfigured unless ``value`` is a number of seconds above 0 (0
    included with ``allow_zero``), or None when ``or_none`` says what None means."""
    if not (is_seconds(value, allow_zero=allow_zero) or (or_none and value is None)):
        what = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        _refuse(name, value, what, or_none)


def _refuse(name: str, value: object, what: str, or_none: str) -> None:
    msg = f"{name} must be {what}{' ' + or_none if or_none else ''}, got {value!r}"
    raise ImproperlyConfigured(msg)
