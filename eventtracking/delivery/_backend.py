"""The base of the backends that deliver in the background through a spool.

MongoBackend, AsyncRoutingBackend and EventBusRoutingBackend deliver through a
:class:`~eventtracking.delivery.BatchDelivery`, built from their
:class:`~eventtracking.delivery.options.DeliveryOptions`, and keep what they cannot
deliver yet in a :class:`~eventtracking.spool.Spool`. :class:`SpoolingBackend` gives
them one ``flush``, ``close`` and ``stats``, with one deadline rule.
"""

from __future__ import annotations

from typing import Any

from eventtracking import delivery as delivery_module
from eventtracking._util.delivery_api import deadline_for, remaining
from eventtracking.delivery import BatchDelivery

__all__ = ["SpoolingBackend"]


class SpoolingBackend:
    """``flush``, ``close`` and ``stats`` over a backend's deliveries, then (for a router,
    through the next class in the method order) its nested backends.

    One deadline for the whole backend: ``flush(None)`` means 30 s
    (:data:`~eventtracking.delivery.DEFAULT_FLUSH_TIMEOUT`) and ``close(None)``
    ``exit_timeout``, for everything together; nested backends get what is left. A
    subclass sets ``delivery``, and may override :meth:`_deliveries`,
    :meth:`_after_close` and :meth:`_stats`.
    """

    delivery: BatchDelivery

    def _deliveries(self) -> list[BatchDelivery]:
        """The deliveries to flush and close, in that order."""
        return [self.delivery]

    def _after_close(self) -> None:
        """Called once the deliveries are closed, before the nested backends are."""

    def _stats(self, result: dict[str, Any], delivery: dict[str, Any]) -> dict[str, Any]:
        """The stats from the nested backends' ``result`` and the ``delivery``'s."""
        result.update(delivery)
        return result

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver what was sent so far, spooled items included, then flush nested
        backends; True when all of it is done within ``timeout`` (None: 30 s). On False
        nothing is lost: what is left stays queued or spooled."""
        if timeout is None:
            timeout = delivery_module.DEFAULT_FLUSH_TIMEOUT  # read now: tests lower it
        deadline = deadline_for(timeout)
        done = True
        for delivery in self._deliveries():
            done = delivery.flush(remaining(deadline)) and done
        nested = getattr(super(), "flush", None)
        return (nested(remaining(deadline)) is not False if nested else True) and done

    def close(self, timeout: float | None = None) -> None:
        """Deliver for at most ``timeout`` seconds (None: ``exit_timeout``), spool the
        rest, stop the threads, then close nested backends. Idempotent; items sent
        afterwards go to the spool."""
        deadline = deadline_for(self.delivery.exit_timeout if timeout is None else timeout)
        for delivery in self._deliveries():
            delivery.close(remaining(deadline))
        self._after_close()
        nested = getattr(super(), "close", None)
        if nested is not None:
            nested(remaining(deadline))

    def stats(self) -> dict[str, Any]:
        """Counters: see each backend's :meth:`_stats`."""
        nested = getattr(super(), "stats", None)
        return self._stats(nested() if nested else {}, self.delivery.stats())
