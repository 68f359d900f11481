"""Between the callers of a :class:`~eventtracking.delivery.BatchDelivery` and its thread.

Callers ask the thread to deliver everything it holds (``flush()``, ``close()``, exit)
and wait until it has; ``close()`` also asks it to stop. The thread reads what is asked
(its :class:`Orders`) at the start of each step, and reports a flush done once nothing
is left. Everything it shares with callers for that is here, behind one lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["FlushGate", "Orders"]


class Orders(NamedTuple):
    """What the callers ask of the thread, read at the start of each step."""

    #: The newest flush asked for; the thread reports it done once nothing is left.
    ticket: int
    #: A flush waits: send what is queued without waiting for batches to fill.
    urgent: bool
    #: A flush asked to retry at once, cutting the backoff short.
    retry_now: bool
    #: close() asked the thread to stop.
    stopping: bool


class FlushGate:
    """Where callers ask the delivery thread to deliver everything, and wait until it did.

    Each request takes a numbered ticket. The thread reads the newest ticket at the
    start of each step, and once nothing is left to deliver reports it done, which
    releases every caller holding that ticket or an older one.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._requested = 0
        self._done = 0
        self._retry_now = False
        self._stopping = False

    def request(self, *, retry_now: bool) -> int:
        """Ask for a flush (cutting the backoff short when ``retry_now``); its ticket."""
        with self._cond:
            self._requested += 1
            self._retry_now = self._retry_now or retry_now
            return self._requested

    def stop(self) -> None:
        """Ask the thread to stop at its next step."""
        with self._cond:
            self._stopping = True

    def orders(self) -> Orders:
        """The thread's side: what is asked now. A retry is handed out once."""
        with self._cond:
            retry_now, self._retry_now = self._retry_now, False
            ticket = self._requested
            return Orders(ticket, ticket != self._done, retry_now, self._stopping)

    def done(self, ticket: int) -> None:
        """The thread's side: everything asked for up to ``ticket`` is delivered."""
        with self._cond:
            self._done = max(self._done, ticket)
            self._cond.notify_all()

    def wait(
        self,
        ticket: int,
        deadline: float,
        *,
        alive: Callable[[], bool],
        failed: Callable[[], bool] | None = None,
    ) -> bool:
        """Wait until ``ticket`` is done; False at the monotonic ``deadline``, when the
        thread is not ``alive``, or as soon as ``failed`` says so (looked at every
        50 ms)."""
        with self._cond:
            while self._done < ticket:
                left = deadline - time.monotonic()
                if left <= 0 or not alive():
                    return False
                if failed is not None:
                    if failed():
                        return False
                    left = min(left, 0.05)
                self._cond.wait(left)
        return True
