"""Allow or block events by matching their names against regular expressions.

**The cost of an expression.** Python's regular expression engine backtracks: an
expression with nested or overlapping repetition, such as ``(a+)+$`` or ``(a|aa)*b``,
can take time exponential in the length of the name it fails to match, and it holds the
GIL meanwhile, so every thread of the process stops. Event names often come from
outside (URL paths, names sent by browsers), so:

* keep expressions simple: literal prefixes (``^edx\\.video\\.``) and character
  classes, no repetition of a group that can itself repeat;
* names longer than ``max_name_length`` characters (:data:`MAX_NAME_LENGTH`, 1,024, by
  default) are never matched: the event is dropped, in both modes, counted as
  ``dropped['filtered']`` and logged (at most once a minute). A linear expression
  costs microseconds on such a name; the limit keeps a badly written one from
  costing minutes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from eventtracking._util.options import check_count
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.typing import Event

__all__ = ["ALLOWLIST", "BLOCKLIST", "MAX_NAME_LENGTH", "RegexFilter"]

LOG = logging.getLogger("eventtracking.processors.regex_filter")
_RATE_LIMITED = RateLimitedLogger(LOG)

#: Names longer than this many characters are dropped without being matched.
MAX_NAME_LENGTH = 1024

#: Keep only the events whose name matches one of the expressions.
ALLOWLIST = "allowlist"
#: Drop the events whose name matches one of the expressions.
BLOCKLIST = "blocklist"


class RegexFilter:
    """Filter events by name with :func:`re.match` (anchored at the start of the name).

    ``filter_type`` is :data:`ALLOWLIST` or :data:`BLOCKLIST`. An unknown filter type or
    an expression that does not compile raises
    :class:`~eventtracking.exceptions.ImproperlyConfigured` naming it.

    An event whose name is longer than ``max_name_length`` is dropped without being
    matched, whatever the filter type (see the module documentation for why); None
    matches names of any length.
    """

    mutates_events = False

    def __init__(
        self,
        filter_type: str = ALLOWLIST,
        regular_expressions: Iterable[str] | None = None,
        max_name_length: int | None = MAX_NAME_LENGTH,
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
        limit = "or None for no limit"
        check_count("RegexFilter max_name_length", max_name_length, or_none=limit)
        self.filter_type = filter_type
        self.max_name_length = max_name_length
        self.regular_expressions = list(regular_expressions or [])
        self._compiled = [self._compile(expression) for expression in self.regular_expressions]

    @staticmethod
    def _compile(expression: Any) -> re.Pattern[str]:
        try:
            return re.compile(expression)
        except (re.error, TypeError) as exc:
            msg = f"RegexFilter expression {expression!r} does not compile: {exc}"
            raise ImproperlyConfigured(msg) from exc

    def _matches(self, name: str) -> bool:
        return any(pattern.match(name) for pattern in self._compiled)

    def _allowed(self, event: Event) -> bool:
        name = event["name"]
        if not isinstance(name, str):
            name = str(name)
        limit = self.max_name_length
        if limit is not None and len(name) > limit:
            _RATE_LIMITED.warning(
                "long-name",
                "An event name of %d characters, over RegexFilter's max_name_length=%d, "
                "was dropped without being matched (it starts %r).",
                len(name),
                limit,
                name[:80],
            )
            return False
        return self._matches(name) == (self.filter_type == ALLOWLIST)

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
