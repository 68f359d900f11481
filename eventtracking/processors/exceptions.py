"""Exceptions that processors and backends raise to steer the routing of one event."""

__all__ = ["EventEmissionExit", "NoBackendEnabled", "NoTransformerImplemented"]


class EventEmissionExit(Exception):
    """Raised by a processor to drop the current event: no later processor or backend sees it."""


class NoTransformerImplemented(Exception):
    """Raised by a backend that has no transformer for this kind of event.

    The router logs it at INFO and counts it as a drop for that backend only.
    """


class NoBackendEnabled(Exception):
    """Raised by a backend that is switched off. Logged at INFO and counted as a drop."""
