"""Exceptions that processors and backends raise to steer the routing of one event.

Two of them are raised by backends, not processors: :class:`NoTransformerImplemented`
and :class:`NoBackendEnabled`. They live here anyway because this is where 4.x put all
three, and code written for 4.x (edx-platform, event-routing backends) imports them
from this path; the router (:mod:`eventtracking.routing`) catches them here too. The
library's own errors are in :mod:`eventtracking.exceptions`.
"""

__all__ = ["EventEmissionExit", "NoBackendEnabled", "NoTransformerImplemented"]


class EventEmissionExit(Exception):
    """Raised by a processor to drop the current event: no later processor or backend sees it."""


class NoTransformerImplemented(Exception):
    """Raised by a backend that has no transformer for this kind of event.

    The router logs it at INFO and counts it as a drop for that backend only.
    """


class NoBackendEnabled(Exception):
    """Raised by a backend that is switched off. Logged at INFO and counted as a drop."""
