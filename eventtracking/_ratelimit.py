"""Logging that cannot flood: one line per problem per interval, with a count of the rest.

A backend that fails on every event would otherwise write one traceback per event and
turn an outage into a disk-full incident.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class RateLimitedLogger:
    """Log each distinct ``key`` at most once per ``interval`` seconds.

    The first occurrence of a key is logged at once. Later ones within the interval are
    counted, and the next line that gets through says how many were suppressed.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(
        self,
        level: int,
        key: str,
        msg: str,
        *args: Any,
        exc_info: Any = None,
    ) -> bool:
        """Log ``msg % args`` unless ``key`` was logged within the interval.

        Returns True when the line was written.
        """
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg = f"{msg} (%d similar messages suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Shorthand for :meth:`log` at WARNING."""
        return self.log(logging.WARNING, key, msg, *args, exc_info=exc_info)

    def error(self, key: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Shorthand for :meth:`log` at ERROR."""
        return self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)
