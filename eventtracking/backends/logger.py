"""Write each event as one line of JSON to a standard :mod:`logging` logger.

Serialisation follows the rules in :mod:`eventtracking._json`: dates, decimals, UUIDs,
sets and bytes have a defined form, and nothing an event holds can stop it from being
written.

An event whose JSON is longer than ``max_event_size`` characters is not dropped. A
placeholder record takes its place in the log, keeping its ``name``, ``timestamp`` and
``context`` and replacing ``data`` with::

    {"eventtracking_oversized": {"size": 2048, "max_event_size": 1024}}

(``context`` is emptied too if the record would still be too long, and
``"context_dropped": true`` is added.) A WARNING naming the event and its size goes to
the ``eventtracking.backends.logger`` logger, and ``stats()['oversized']`` counts it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from eventtracking._json import JSON_STATS, EventEncoder, dumps, encode_known
from eventtracking._metadata_api import METADATA_EVENT_NAME
from eventtracking._ratelimit import RateLimitedLogger
from eventtracking._stats import Counters, FastCounter
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.typing import Event

__all__ = ["MAX_EVENT_SIZE", "DateTimeJSONEncoder", "LoggerBackend"]

LOG = logging.getLogger(__name__)

#: The default limit, in characters of JSON, above which an event is replaced by a
#: placeholder record.
MAX_EVENT_SIZE = 1024

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

#: The key under which a placeholder record describes the event it replaces.
OVERSIZED_KEY = "eventtracking_oversized"


class DateTimeJSONEncoder(json.JSONEncoder):
    """A JSON encoder that knows datetimes, dates, decimals, UUIDs, sets and bytes.

    Datetimes are written in UTC ISO 8601, naive ones taken to be UTC. See
    :mod:`eventtracking._json` for the form of every other type. Unknown objects still
    raise TypeError, as with the standard encoder.
    """

    def default(self, o: Any) -> Any:
        """Return a serialisable stand-in for ``o``; TypeError for unknown types."""
        return encode_known(o)


class LoggerBackend:
    """Log every event as a JSON line at ``level`` on the logger called ``name``.

    ``name`` of None means the root logger. ``max_event_size`` of None means no limit.
    ``level`` is one of debug, info, warning, error or critical; anything else raises
    :class:`~eventtracking.exceptions.ImproperlyConfigured`.
    """

    mutates_events = False

    def __init__(
        self,
        name: str | None = None,
        max_event_size: int | None = MAX_EVENT_SIZE,
        level: str = "info",
        **kwargs: Any,
    ) -> None:
        if kwargs:
            msg = (
                f"LoggerBackend got unknown options {sorted(kwargs)}; it accepts name, "
                "max_event_size and level."
            )
            raise ImproperlyConfigured(msg)
        try:
            self.level = _LEVELS[str(level).lower()]
        except KeyError:
            msg = (
                f"LoggerBackend level {level!r} is not a logging level; use one of "
                f"{', '.join(sorted(_LEVELS))}."
            )
            raise ImproperlyConfigured(msg) from None
        if max_event_size is not None and (
            isinstance(max_event_size, bool)
            or not isinstance(max_event_size, int)
            or max_event_size <= 0
        ):
            msg = (
                f"LoggerBackend max_event_size must be a positive int or None for no "
                f"limit, got {max_event_size!r}."
            )
            raise ImproperlyConfigured(msg)
        self.max_event_size = max_event_size
        self.event_logger = logging.getLogger(name)
        self._encoder = EventEncoder()
        self._sent = FastCounter()
        self._counters = Counters("oversized")
        self._log = RateLimitedLogger(LOG)

    def send(self, event: Event) -> None:
        """Write ``event`` as one JSON line; an oversized event becomes a placeholder."""
        logger = self.event_logger
        if not logger.isEnabledFor(self.level):
            return
        line = self._encoder.encode(event)
        limit = self.max_event_size
        if limit is not None and len(line) > limit:
            line = self._placeholder(event, len(line), limit)
        # Build the record directly: logger.log() would walk the stack to find a
        # caller, which is always this method and so tells the reader nothing.
        record = logger.makeRecord(
            logger.name, self.level, "(eventtracking)", 0, line, (), None, "send"
        )
        logger.handle(record)
        self._sent.incr()

    def send_metadata(self, record: dict[str, Any]) -> None:
        """Write a documentation record as one line shaped like an event.

        The line's ``name`` is ``eventtracking.metadata``, its ``context`` is empty and
        its ``data`` is the record (see :mod:`eventtracking.metadata`). It is never
        replaced by a placeholder, whatever ``max_event_size`` says: the documentation
        of the events is worth its size.
        """
        logger = self.event_logger
        if not logger.isEnabledFor(self.level):
            return
        line = dumps(
            {
                "name": METADATA_EVENT_NAME,
                "timestamp": datetime.now(timezone.utc),
                "context": {},
                "data": record,
            }
        )
        log_record = logger.makeRecord(
            logger.name, self.level, "(eventtracking)", 0, line, (), None, "send_metadata"
        )
        logger.handle(log_record)

    def _placeholder(self, event: Event, size: int, limit: int) -> str:
        name = _get(event, "name")
        self._counters.incr("oversized")
        self._log.warning(
            f"oversized:{name}",
            "Event %r is %d characters of JSON, over max_event_size=%d; a placeholder "
            "record was logged instead of its data.",
            name,
            size,
            limit,
        )
        summary: dict[str, Any] = {"size": size, "max_event_size": limit}
        record = {
            "name": name,
            "timestamp": _get(event, "timestamp"),
            "context": _get(event, "context"),
            "data": {OVERSIZED_KEY: summary},
        }
        line = dumps(record)
        if len(line) > limit:
            summary["context_dropped"] = True
            record["context"] = {}
            line = dumps(record)
        return line

    def stats(self) -> dict[str, Any]:
        """``sent`` and ``oversized`` lines, and encoder fallbacks across the process."""
        result = {"sent": self._sent.value, **self._counters.snapshot()}
        result.update(JSON_STATS.snapshot())
        return result


def _get(event: Any, key: str) -> Any:
    try:
        return event[key]
    except Exception:
        return None
