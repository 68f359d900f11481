"""Telling a user why a configured LoggerBackend writes nothing, and how to fix it.

A ``LoggerBackend`` hands its lines to a standard :mod:`logging` logger. Python's
defaults make that logger drop INFO records (the root logger is at WARNING), and a
logger without handlers sends INFO records nowhere. Either way nothing is written and
nothing fails. This module finds those cases, for the Django system check
``eventtracking.W002`` and for the backend's one-time warning, and writes the
``LOGGING`` snippet that fixes them.
"""

from __future__ import annotations

import logging
import threading

from eventtracking._util.stats import FastCounter

__all__ = ["NotEnabledAlarm", "logger_label", "logging_snippet", "why_nothing_is_written"]

LOG = logging.getLogger("eventtracking.backends.logger")


def logger_label(logger: logging.Logger) -> str:
    """The logger's name as ``LOGGING`` spells it: ``'root'`` for the root logger."""
    return "root" if logger is logging.getLogger() else logger.name


def why_nothing_is_written(logger: logging.Logger, level: int) -> str | None:
    """Why records at ``level`` on ``logger`` reach no output, or None when some do.

    Covers a disabled logger, a level below the logger's effective level (or under
    :func:`logging.disable`), and no handler on the way up that takes the level (the
    last-resort handler prints only WARNING and above, to standard error).
    """
    label = logger_label(logger)
    level_name = logging.getLevelName(level)
    if logger.disabled:
        return (
            f"logger {label!r} is disabled (LOGGING with 'disable_existing_loggers': True "
            "disables every logger created before it is applied)"
        )
    if not logger.isEnabledFor(level):
        effective = logging.getLevelName(logger.getEffectiveLevel())
        if logger.manager.disable >= level:
            return f"logging.disable() turned off {level_name} records"
        return (
            f"logger {label!r} is not enabled for {level_name}: its effective level is {effective}"
        )
    current: logging.Logger | None = logger
    while current is not None:
        if any(level >= handler.level for handler in current.handlers):
            return None
        if not current.propagate:
            break
        current = current.parent
    last_resort = logging.lastResort
    if last_resort is not None and level >= last_resort.level:
        return None
    return (
        f"logger {label!r} has no handler for {level_name} records, on it or above it, so "
        "Python discards them"
    )


def logging_snippet(logger: logging.Logger, level: int) -> str:
    """The Django ``LOGGING`` setting that makes ``logger`` write ``level`` records."""
    label = logger_label(logger)
    level_name = logging.getLevelName(level)
    return (
        "LOGGING = {\n"
        "    'version': 1,\n"
        "    'disable_existing_loggers': False,\n"
        "    'handlers': {\n"
        "        'tracking': {'class': 'logging.FileHandler', 'filename': 'tracking.log'},\n"
        "    },\n"
        "    'loggers': {\n"
        f"        {label!r}: {{'handlers': ['tracking'], 'level': {level_name!r}, "
        "'propagate': False},\n"
        "    },\n"
        "}"
    )


#: (logger name, level) pairs whose fix a system check (eventtracking.W002) has shown in
#: this process: the first dropped event then refers to it instead of repeating it.
_HINT_SHOWN: set[tuple[str, int]] = set()


def hint_shown(logger: logging.Logger, level: int) -> None:
    """Record that the ``LOGGING`` fix for ``logger`` at ``level`` was shown."""
    _HINT_SHOWN.add((logger.name, level))


class NotEnabledAlarm:
    """Counts the events a LoggerBackend could not write because its logger is not
    enabled for its level, and warns the first time."""

    __slots__ = ("_lock", "_warned", "count", "level", "logger")

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self.logger = logger
        self.level = level
        self.count = FastCounter()
        self._warned = False
        self._lock = threading.Lock()

    def dropped(self) -> None:
        """Count one event not written; log a WARNING the first time."""
        self.count.incr()
        if self._warned:
            return
        with self._lock:
            if self._warned:
                return
            self._warned = True
        reason = why_nothing_is_written(self.logger, self.level) or "its logger is not enabled"
        if (self.logger.name, self.level) in _HINT_SHOWN:
            LOG.warning(
                "LoggerBackend writes nothing: %s; the system check eventtracking.W002 "
                "showed the LOGGING that fixes it. Further events it cannot write are "
                "counted in its stats()['dropped_not_enabled'].",
                reason,
            )
            return
        LOG.warning(
            "LoggerBackend writes nothing: %s. Configure the logger, for example in "
            "Django:\n%s\nFurther events it cannot write are counted in its "
            "stats()['dropped_not_enabled'].",
            reason,
            logging_snippet(self.logger, self.level),
        )
