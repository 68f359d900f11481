"""Logging that cannot flood: one line per problem per interval, with a count of the rest.

A backend that fails on every event would otherwise write one traceback per event and
turn an outage into a disk-full incident.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

#: Keys whose state a limiter holds at most. Keys often hold event names, which callers
#: (and so attackers) choose: without a cap, every new name would be kept forever.
MAX_KEYS = 1000

#: The slot shared by new keys while the table is full of keys still within their
#: interval.
_OVERFLOW = "eventtracking.ratelimit:overflow"


class RateLimitedLogger:
    """Log each distinct ``key`` at most once per ``interval`` seconds.

    The first occurrence of a key is logged at once. Later ones within the interval are
    counted, and the next line that gets through says how many were suppressed.

    At most ``max_keys`` keys are remembered. A key's state is dropped once its
    interval has passed and room is needed. While every remembered key is still within
    its interval, new keys share one extra slot, so the log gets at most
    ``max_keys + 1`` lines per interval whatever the number of keys.
    """

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, max_keys: int = MAX_KEYS
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._lock = threading.Lock()
        # Ordered by the time each key was last logged, oldest first: a logged key is
        # moved to the end, so expired keys are always found at the front.
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __len__(self) -> int:
        """The number of keys whose state is held."""
        return len(self._last)

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
            if last is None and len(self._last) >= self.max_keys:
                self._drop_expired(now)
                if len(self._last) >= self.max_keys:
                    key = _OVERFLOW
                    last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last.pop(key, None)
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg = f"{msg} (%d similar messages suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def _drop_expired(self, now: float) -> None:
        """Forget the keys whose interval has passed; hold the lock."""
        last = self._last
        while last:
            oldest = next(iter(last))
            if now - last[oldest] < self.interval:
                return
            del last[oldest]
            # Its suppressed count is not reported: the events are counted elsewhere.
            self._suppressed.pop(oldest, None)

    def warning(self, key: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Shorthand for :meth:`log` at WARNING."""
        return self.log(logging.WARNING, key, msg, *args, exc_info=exc_info)

    def error(self, key: str, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Shorthand for :meth:`log` at ERROR."""
        return self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)
