"""Calling the optional delivery methods (flush, close, stats) across a backend tree."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from eventtracking.typing import SupportsClose, SupportsFlush, SupportsStats

LOG = logging.getLogger("eventtracking")


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (a :func:`time.monotonic` value), never negative."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def deadline_for(timeout: float | None) -> float | None:
    """The monotonic deadline ``timeout`` seconds from now, or None for no limit."""
    return None if timeout is None else time.monotonic() + timeout


def flush_all(components: Iterable[tuple[str, Any]], timeout: float | None) -> bool:
    """Call ``flush(timeout)`` on each component that has one, sharing one deadline.

    Returns True only when every flush reported success. A flush that raises is logged
    and counts as a failure; it never stops the others.
    """
    deadline = deadline_for(timeout)
    ok = True
    for name, component in components:
        if not isinstance(component, SupportsFlush):
            continue
        try:
            result = component.flush(remaining(deadline))
        except Exception:
            LOG.exception("Flushing backend %r failed", name)
            ok = False
        else:
            # Backends written for the bare protocol may return None: that is success.
            ok = ok and result is not False
    return ok


def close_all(components: Iterable[tuple[str, Any]], timeout: float | None) -> None:
    """Call ``close(timeout)`` on each component that has one, sharing one deadline."""
    deadline = deadline_for(timeout)
    for name, component in components:
        if not isinstance(component, SupportsClose):
            continue
        try:
            component.close(remaining(deadline))
        except Exception:
            LOG.exception("Closing backend %r failed", name)


def stats_of(components: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Collect ``stats()`` from each component that has one, by name."""
    result: dict[str, Any] = {}
    for name, component in components:
        if not isinstance(component, SupportsStats):
            continue
        try:
            result[name] = component.stats()
        except Exception:
            LOG.exception("Reading stats of backend %r failed", name)
    return result
