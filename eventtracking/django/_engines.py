"""The ENGINE/OPTIONS builder's former place, kept importable.

The builder needs no Django and lives in :mod:`eventtracking._util.engines`, the core
configuration, where workers without Django find it. Every name read from this module
is the same object there.
"""

from __future__ import annotations

from typing import Any

from eventtracking._util import engines as _engines


def __getattr__(name: str) -> Any:
    return getattr(_engines, name)
