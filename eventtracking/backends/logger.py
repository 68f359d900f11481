"""Write each event as one line of JSON to a standard :mod:`logging` logger.

Serialisation follows :ref:`json-rules`: dates, decimals, UUIDs, sets and bytes have a
defined form, and nothing an event holds can stop it from being written.

An event whose JSON is longer than ``max_event_size`` characters is not dropped. A
placeholder record takes its place in the log, keeping its ``name``, ``timestamp`` and
``context`` and replacing ``data`` with::

    {"eventtracking_oversized": {"size": 2048, "max_event_size": 1024}}

(``context`` is emptied too if the record would still be too long, and
``"context_dropped": true`` is added; then a very long name is cut, with
``"name_truncated": true``.) A WARNING naming the event and its size goes to
the ``eventtracking.backends.logger`` logger, and ``stats()['oversized']`` counts it.
When even the smallest such record is over the limit, nothing is written for the
event: the warning says so and ``stats()['dropped_oversized']`` counts it too.

The encoder is orjson when the ``[fast]`` extra is installed (``encoder="auto"``), and
the standard library's ``json`` otherwise or with ``encoder="stdlib"``, whose lines are
byte for byte what ``json.dumps`` writes. orjson's lines hold the same values in a
compact form.

A real :class:`logging.Logger` gets each line as a record built from a template made
once, with every attribute ``logging`` itself would give it, and handled at once: no
stack walk to find the caller, which is always this backend. Any other logger (an
adapter, a custom logger class, a mock in a test) is called as 4.x called it:
``logger.<level>(line)``, e.g. ``logger.info(line)``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from eventtracking._json import JSON_STATS, EventEncoder, dumps, encode_known
from eventtracking._orjson import FAST_INSTALL_HINT, HAVE_ORJSON, OrjsonEventEncoder, dumps_compact
from eventtracking._util.engines import unknown_options
from eventtracking._util.metadata_api import METADATA_EVENT_NAME
from eventtracking._util.options import check_count
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.silent import NotEnabledAlarm
from eventtracking._util.stats import Counters, FastCounter
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.typing import Event

__all__ = ["MAX_EVENT_SIZE", "DateTimeJSONEncoder", "LoggerBackend"]

LOG = logging.getLogger(__name__)

# Tests written for 4.x replace this module's ``logging`` with a mock; the fast path
# needs the real module, whatever the name ``logging`` holds later.
_logging = logging

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

#: The encoders LoggerBackend accepts: orjson when installed, or the standard library.
ENCODERS = ("auto", "orjson", "stdlib")


class DateTimeJSONEncoder(json.JSONEncoder):
    """A JSON encoder that knows datetimes, dates, decimals, UUIDs, sets and bytes.

    Datetimes are written in UTC ISO 8601, naive ones taken to be UTC. See
    :ref:`json-rules` for the form of every other type. Unknown objects still
    raise TypeError, as with the standard encoder.
    """

    def default(self, o: Any) -> Any:
        """Return a serialisable stand-in for ``o``; TypeError for unknown types."""
        return encode_known(o)


class LoggerBackend:
    """Log every event as a JSON line at ``level`` on the logger called ``name``.

    ``name`` of None means the root logger. ``max_event_size`` of None means no limit.
    ``level`` is one of debug, info, warning, error or critical. ``encoder`` is
    ``"auto"`` (orjson when the ``[fast]`` extra is installed, else the standard
    library), ``"orjson"`` or ``"stdlib"``. A bad option raises
    :class:`~eventtracking.exceptions.ImproperlyConfigured`.
    """

    mutates_events = False

    def __init__(
        self,
        name: str | None = None,
        max_event_size: int | None = MAX_EVENT_SIZE,
        level: str = "info",
        encoder: str = "auto",
        **kwargs: Any,
    ) -> None:
        if kwargs:
            valid = ["name", "max_event_size", "level", "encoder"]
            msg = (
                f"LoggerBackend has no option {unknown_options(sorted(kwargs), valid)}; its "
                f"options are {', '.join(valid)}."
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
        limit = "or None for no limit"
        check_count("LoggerBackend max_event_size", max_event_size, or_none=limit)
        self.max_event_size = max_event_size
        self.encoder = _choose_encoder(encoder)
        if self.encoder == "orjson":
            self._encode: Callable[[Any], str] = OrjsonEventEncoder().encode
            self._dumps: Callable[[Any], str] = dumps_compact
        else:
            self._encode = EventEncoder().encode
            self._dumps = dumps
        self.event_logger = logging.getLogger(name)
        level_name = _logging.getLevelName(self.level).lower()
        #: The logger's method for the level (``logger.info``), as 4.x kept it.
        self.log = getattr(self.event_logger, level_name)
        # Only a plain Logger is known to do nothing in log() but make and handle a
        # record; a subclass, an adapter or a mock gets the call.
        logger_class = type(self.event_logger)
        self._template: _RecordTemplate | None = (
            _RecordTemplate(self.event_logger.name, self.level)
            if logger_class is _logging.Logger or logger_class is _logging.RootLogger
            else None
        )
        self._not_enabled = NotEnabledAlarm(self.event_logger, self.level)
        self._sent = FastCounter()
        self._counters = Counters("oversized", "dropped_oversized")
        self._log = RateLimitedLogger(LOG)

    def send(self, event: Event) -> None:
        """Write ``event`` as one JSON line; an oversized event becomes a placeholder."""
        logger = self.event_logger
        if not logger.isEnabledFor(self.level):
            self._not_enabled.dropped()
            return
        line = self._encode(event)
        limit = self.max_event_size
        if limit is not None and len(line) > limit:
            placeholder = self._placeholder(event, len(line), limit)
            if placeholder is None:
                return
            line = placeholder
        self._write(logger, line)
        self._sent.incr()

    def _write(self, logger: Any, line: str) -> None:
        """Log ``line`` on ``logger``, which the caller found enabled for the level."""
        template = self._template
        if template is not None and _logging.getLogRecordFactory() is _logging.LogRecord:
            # logger.info() would walk the stack to find a caller, which is always this
            # backend and so tells the reader nothing.
            if logger.filters:
                logger.handle(template.make(line))
            else:
                # All handle() does for an enabled logger without filters.
                logger.callHandlers(template.make(line))
        else:
            self.log(line)

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
        line = self._dumps(
            {
                "name": METADATA_EVENT_NAME,
                "timestamp": datetime.now(timezone.utc),
                "context": {},
                "data": record,
            }
        )
        self._write(logger, line)

    def _placeholder(self, event: Event, size: int, limit: int) -> str | None:
        """The placeholder line for an oversized event; None if even that is too long."""
        name = _get(event, "name")
        summary: dict[str, Any] = {"size": size, "max_event_size": limit}
        record = {
            "name": name,
            "timestamp": _get(event, "timestamp"),
            "context": _get(event, "context"),
            "data": {OVERSIZED_KEY: summary},
        }
        line = self._dumps(record)
        if len(line) > limit:
            summary["context_dropped"] = True
            record["context"] = {}
            line = self._dumps(record)
        if len(line) > limit and isinstance(name, str) and name:
            # A very long name: keep its start. Each character cut shortens the line by
            # at least one, so this ends within a few rounds.
            summary["name_truncated"] = True
            keep = len(name)
            while keep and len(line) > limit:
                keep = max(0, keep - (len(line) - limit) - 1)
                record["name"] = name[:keep]
                line = self._dumps(record)
        self._counters.incr("oversized")
        # The limit is a promise to whatever reads the log (a syslog datagram, a
        # shipper's line limit): when even the smallest placeholder would break it,
        # nothing is logged.
        dropped = len(line) > limit
        if dropped:
            self._counters.incr("dropped_oversized")
        self._log.warning(
            f"oversized:{name}",
            "Event %r is %d characters of JSON, over max_event_size=%d%s",
            name,
            size,
            limit,
            ", which is too small even for a placeholder record: nothing was logged for it."
            if dropped
            else "; a placeholder record was logged instead of its data.",
        )
        return None if dropped else line

    def stats(self) -> dict[str, Any]:
        """``sent`` lines, ``oversized`` events (over ``max_event_size``),
        ``dropped_oversized`` ones among them that not even a placeholder could replace,
        ``dropped_not_enabled`` events not written because the logger is not enabled for
        the level, and the encoder's fallbacks across the process (``repr_fallback``,
        ``cleaned``)."""
        result = {"sent": self._sent.value, **self._counters.snapshot()}
        result["dropped_not_enabled"] = self._not_enabled.count.value
        result.update(JSON_STATS.snapshot())
        return result


def _choose_encoder(encoder: str) -> str:
    """``"orjson"`` or ``"stdlib"`` for an ``encoder`` option; ImproperlyConfigured if bad."""
    if encoder not in ENCODERS:
        msg = (
            f"LoggerBackend encoder {encoder!r} is not an encoder; use one of "
            f"{', '.join(ENCODERS)}."
        )
        raise ImproperlyConfigured(msg)
    if encoder == "orjson" and not HAVE_ORJSON:
        msg = f"LoggerBackend encoder 'orjson' needs orjson: {FAST_INSTALL_HINT}"
        raise ImproperlyConfigured(msg)
    if encoder == "auto":
        return "orjson" if HAVE_ORJSON else "stdlib"
    return encoder


_PATHNAME = "(eventtracking)"
# When logging was imported: relativeCreated counts from there.
_START_TIME = getattr(_logging, "_startTime", time.time())
_new_record = object.__new__
# Attributes LogRecord.__init__ sets from the clock, the thread, the process or the
# task, rather than from its arguments.
_PER_RECORD = frozenset(
    {
        "msg",
        "created",
        "msecs",
        "relativeCreated",
        "thread",
        "threadName",
        "process",
        "processName",
        "taskName",
    }
)


class _RecordTemplate:
    """Makes the LogRecords of one backend without running ``LogRecord.__init__``.

    The attributes that never change (logger name, level, path, function...) are taken
    from a record that ``logging`` itself made; the others are computed for each record
    the way ``LogRecord.__init__`` computes them, so a record is attribute for attribute
    what ``logger.makeRecord`` would return.
    """

    __slots__ = ("fixed", "task_name")

    def __init__(self, logger_name: str, level: int) -> None:
        model = _logging.LogRecord(logger_name, level, _PATHNAME, 0, "", (), None, "send")
        self.fixed = {k: v for k, v in vars(model).items() if k not in _PER_RECORD}
        self.task_name = "taskName" in vars(model)

    def make(self, line: str) -> logging.LogRecord:
        """A new record carrying ``line`` as its message."""
        record = _new_record(_logging.LogRecord)
        attributes = record.__dict__
        attributes.update(self.fixed)
        attributes["msg"] = line
        start = _START_TIME
        if type(start) is int:
            # Python 3.13 and later keep nanoseconds.
            now_ns = time.time_ns()
            attributes["created"] = now_ns / 1e9
            attributes["msecs"] = (now_ns % 1_000_000_000) // 1_000_000 + 0.0
            attributes["relativeCreated"] = (now_ns - start) / 1e6
        else:
            now = time.time()
            attributes["created"] = now
            attributes["msecs"] = int((now - int(now)) * 1000) + 0.0
            attributes["relativeCreated"] = (now - start) * 1000
        if _logging.logThreads:
            attributes["thread"] = threading.get_ident()
            attributes["threadName"] = threading.current_thread().name
        else:
            attributes["thread"] = attributes["threadName"] = None
        if _logging.logMultiprocessing:
            process_name = "MainProcess"
            multiprocessing = sys.modules.get("multiprocessing")
            if multiprocessing is not None:
                # logging's own rule: any failure leaves "MainProcess". Not through
                # contextlib.suppress, which costs about 0.18 us a record more.
                try:  # noqa: SIM105
                    process_name = multiprocessing.current_process().name
                except Exception:
                    pass
            attributes["processName"] = process_name
        else:
            attributes["processName"] = None
        attributes["process"] = os.getpid() if _logging.logProcesses else None
        if self.task_name:
            task_name = None
            if getattr(_logging, "logAsyncioTasks", False):
                asyncio = sys.modules.get("asyncio")
                if asyncio is not None:
                    # No running loop, or no task: logging's rule is None.
                    try:  # noqa: SIM105
                        task_name = asyncio.current_task().get_name()
                    except Exception:
                        pass
            attributes["taskName"] = task_name
        return record


def _get(event: Any, key: str) -> Any:
    try:
        return event[key]
    except Exception:
        return None
