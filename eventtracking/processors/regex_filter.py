"""Allow or block events by matching their names against regular expressions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.typing import Event

__all__ = ["ALLOWLIST", "BLOCKLIST", "RegexFilter"]

#: Keep only the events whose name matches one of the expressions.
ALLOWLIST = "allowlist"
#: Drop the events whose name matches one of the expressions.
BLOCKLIST = "blocklist"


class RegexFilter:
    """Filter events by name with :func:`re.match` (anchored at the start of the name).

    ``filter_type`` is :data:`ALLOWLIST` or :data:`BLOCKLIST`. An unknown filter type or
    an expression that does not compile raises
    :class:`~eventtracking.exceptions.ImproperlyConfigured` naming it.
    """

    mutates_events = False

    def __init__(
        self,
        filter_type: str = ALLOWLIST,
        regular_expressions: Iterable[str] | None = None,
    ) -> None:
        if filter_type not in (ALLOWLIST, BLOCKLIST):
            msg = (
                f"RegexFilter filter_type {filter_type!r} is not valid; use "
                f"{ALLOWLIST!r} or {BLOCKLIST!r}."
            )
            raise ImproperlyConfigured(msg)
        if isinstance(regular_expressions, str):
            msg = (
                "RegexFilter regular_expressions must be a list of expressions, not a "
                f"single string: {regular_expressions!r}"
            )
            raise ImproperlyConfigured(msg)
        self.filter_type = filter_type
        self.regular_expressions = list(regular_expressions or [])
        self._compiled = [self._compile(expression) for expression in self.regular_expressions]

    @staticmethod
    def _compile(expression: Any) -> re.Pattern[str]:
        try:
            return re.compile(expression)
        except (re.error, TypeError) as exc:
            msg = f"RegexFilter expression {expression!r} does not compile: {exc}"
            raise ImproperlyConfigured(msg) from exc

    def _matches(self, name: Any) -> bool:
        if not isinstance(name, str):
            name = str(name)
        return any(pattern.match(name) for pattern in self._compiled)

    def _allowed(self, event: Event) -> bool:
        return self._matches(event["name"]) == (self.filter_type == ALLOWLIST)

    def __call__(self, event: Event | list[Event]) -> Event | list[Event]:
        """Return the event if it passes the filter; raise EventEmissionExit to drop it.

        Called with a list of events, returns the list of those that pass.
        """
        if isinstance(event, list):
            return [item for item in event if self._allowed(item)]
        if not self._allowed(event):
            raise EventEmissionExit
        return event

    def __repr__(self) -> str:
        return (
            f"RegexFilter(filter_type={self.filter_type!r}, "
            f"regular_expressions={self.regular_expressions!r})"
        )
