"""Let through only events whose name is on an allow list."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eventtracking.exceptions import ConfigurationTypeError
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.typing import Event

__all__ = ["NameWhitelistProcessor"]


class NameWhitelistProcessor:
    """Drop every event whose ``name`` is not in ``whitelist``.

    ``whitelist`` is any iterable of names other than a single string (a string would be
    read as a set of one-letter names); anything else raises
    :class:`~eventtracking.exceptions.ConfigurationTypeError`, a TypeError as in 4.x.
    Called with a list of events, as batching backends do, it returns the list of those
    allowed.
    """

    mutates_events = False

    def __init__(self, whitelist: Iterable[str] | None = None, **_kwargs: Any) -> None:
        if isinstance(whitelist, (str, bytes)) or whitelist is None:
            whitelist_error = True
        else:
            try:
                self.whitelist = frozenset(whitelist)
                whitelist_error = False
            except TypeError:
                whitelist_error = True
        if whitelist_error:
            # 4.x's sentence first: downstream tests match it.
            msg = (
                "The NameWhitelistProcessor must be passed a collection of allowed names "
                'using the "whitelist" parameter: a list or set of event names, not a '
                f"single string; got {whitelist!r}."
            )
            raise ConfigurationTypeError(msg)

    def __call__(self, event: Event | list[Event]) -> Event | list[Event]:
        """Return the event (or the allowed events of a list); raise EventEmissionExit to drop."""
        if isinstance(event, list):
            return [item for item in event if self._allowed(item["name"])]
        # Inlined rather than calling _allowed(): this runs on every emit.
        try:
            allowed = event["name"] in self.whitelist
        except TypeError:
            allowed = False
        if not allowed:
            raise EventEmissionExit
        return event

    def _allowed(self, name: Any) -> bool:
        try:
            return name in self.whitelist
        except TypeError:
            # An unhashable name is on no list. Raising would let the router log the
            # error and deliver the event anyway: the filter would fail open.
            return False

    def __repr__(self) -> str:
        return f"NameWhitelistProcessor(whitelist={sorted(self.whitelist)!r})"
