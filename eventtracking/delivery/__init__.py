"""Deliver items to a sink from one background thread, without blocking or losing any.

:class:`BatchDelivery` wraps any *sink*: an object with ``write_batch(items)`` that
stores a batch somewhere slow (a database, an HTTP API). Callers hand it items with
:meth:`~BatchDelivery.put`, which only appends to a bounded in-memory queue; one named
daemon thread per delivery takes batches off the queue, by size or by interval, and
calls the sink.

Items are ``bytes``, serialised by the backend when the event is sent. That is what
lets them be written to the :class:`~eventtracking.spool.Spool`, and it snapshots the
event, so a caller changing its data afterwards cannot change what is delivered.

Nothing is lost on the way:

* when the sink fails, the batch goes to the spool and the thread retries with
  exponential backoff and jitter, spooling new items meanwhile so memory stays bounded;
  when the sink is back, the spool is replayed in order before the queue;
* what earlier processes left in the spool is replayed once this process has work of
  its own: the thread starts with the first :meth:`~BatchDelivery.put` (or
  :meth:`~BatchDelivery.flush`), never at construction, so a process that sends
  nothing (``manage.py check``, a cron job) neither replays the spool nor waits for the
  sink at exit;
* when the queue is full, its oldest batch moves to the spool to make room;
* with ``durable=True``, every item is on the spool before :meth:`~BatchDelivery.put`
  returns, and the thread delivers from the spool;
* at interpreter exit, each delivery flushes for at most ``exit_timeout`` seconds, then
  spools what is left;
* after ``os.fork()`` the child starts its own thread on its first use, with an empty
  queue (the parent still delivers what it had queued);
* items the sink refuses for good become dead letters in the spool, with the reason.

Every outcome is counted in :meth:`~BatchDelivery.stats`, and errors are logged at a
limited rate. What cannot be kept, without a spool or when the spool is full, is
dropped, logged and counted.

Why one module: :class:`BatchDelivery` is one state machine. Its caller's side
(``put``, ``flush``, ``close``) and its thread's side share the queue, the counters and
the spool under one lock and the promises above, and each side's code is only
understood beside the other's. What stands alone lives apart: the handshake between
callers and the thread (:mod:`eventtracking.delivery._flush_gate`), the options
(:mod:`eventtracking.delivery.options`), the backends' base
(:mod:`eventtracking.delivery._backend`), the spool (:mod:`eventtracking.spool`) and
fork handling (:mod:`eventtracking._util.fork`).
"""

from __future__ import annotations

import atexit
import collections
import functools
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from eventtracking._util.fork import after_fork_in_child
from eventtracking._util.options import check_count, check_seconds
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters, FastCounter
from eventtracking.delivery._flush_gate import FlushGate, Orders
from eventtracking.spool import Claim, Spool, SpoolFullError

# Gives up the GIL for a moment: sched_yield() returns at once where nothing else waits
# for the CPU (time.sleep(0), the fallback, sleeps for the timer slack, ~50 us on Linux).
_let_others_run = getattr(os, "sched_yield", None) or functools.partial(time.sleep, 0)
# A sink that took a batch less than this many seconds ago answers: put() may give up
# the GIL for its thread. One that did not (down from the start, or a write hanging on
# an unreachable server) would gain nothing from it.
_ANSWERED_LATELY = 1.0

__all__ = [
    "DEFAULT_FLUSH_TIMEOUT",
    "BatchDelivery",
    "Sink",
    "backoff_delay",
]

LOG = logging.getLogger(__name__)

#: How long :meth:`BatchDelivery.flush` waits when given ``timeout=None``.
DEFAULT_FLUSH_TIMEOUT = 30.0

# When idle, the thread looks this often for rows that other processes left in a
# shared spool (a read that takes no lock).
_SPOOL_POLL_INTERVAL = 5.0
# While a flush waits for rows that another process has claimed.
_CLAIMED_ELSEWHERE_WAIT = 0.05


@runtime_checkable
class Sink(Protocol):
    """Where a :class:`BatchDelivery` stores its items.

    ``write_batch`` is called from the delivery thread only, one batch at a time. It
    either stores the batch and returns, or raises, and then nothing is assumed stored:
    the whole batch is retried later, so storing an item twice must be harmless (the
    Mongo backend gives each event its ``_id`` for that). It returns the positions of
    the items it refused for good, mapped to the reason (``{}`` or None when none
    were); those become dead letters and the rest of the batch counts as stored.

    A sink may also have ``close()``, called once by :meth:`BatchDelivery.close`, and
    ``stats()``, whose dict is merged into the delivery's.
    """

    def write_batch(self, items: Sequence[bytes]) -> Mapping[int, str] | None:
        """Store ``items``; return refused positions -> reasons; raise to retry later."""


def backoff_delay(
    failures: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1 for the first).

    Exponential (``base * 2 ** (failures - 1)``, at most ``cap``) with jitter: a random
    factor between 0.5 and 1, so processes that failed together do not retry together.
    """
    exponent = min(max(failures, 1) - 1, 62)
    delay = min(cap, base * (2.0**exponent))
    return delay * (0.5 + 0.5 * (rng or random).random())


class BatchDelivery:
    """Deliver ``bytes`` items to ``sink`` in batches from a named daemon thread.

    ``name`` names the thread (``eventtracking-delivery-<name>``) and the log lines.
    ``spool`` and ``stream`` say where to keep what cannot be delivered yet; without a
    spool, items that cannot be kept in memory are dropped and counted. ``durable``
    (which needs a spool) writes each item to the spool before :meth:`put` returns.

    Batches hold at most ``batch_size`` items and leave at the latest
    ``flush_interval`` seconds after their first item arrived. When the sink falls
    behind, so that more than two batches wait in the queue (or the spool), a batch
    takes half of what waits, in whole batches, up to ``catch_up_batches`` batches'
    items: the sink's cost per batch is then paid less often (1, the default: batches
    stay ``batch_size``). The queue holds ``max_queue_size`` items; while it is more
    than half full and the sink took a batch within the last second, :meth:`put` gives
    up the GIL once before it returns, so that a caller emitting without pause does not
    starve the thread. After a failure the thread waits :func:`backoff_delay`
    (``backoff_base`` doubling up to ``backoff_max``). At exit it spends at most
    ``exit_timeout`` seconds delivering. Raises ValueError for options out of range.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        name: str,
        spool: Spool | None = None,
        stream: str = "default",
        durable: bool = False,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue_size: int = 10_000,
        catch_up_batches: int = 1,
        exit_timeout: float = 5.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        log_interval: float = 60.0,
    ) -> None:
        if not callable(getattr(sink, "write_batch", None)):
            msg = f"sink {sink!r} has no write_batch(items) method; give it one"
            raise TypeError(msg)
        check_count("batch_size", batch_size)
        check_count("max_queue_size", max_queue_size)
        check_count("catch_up_batches", catch_up_batches)
        check_seconds("flush_interval", flush_interval)
        check_seconds("backoff_base", backoff_base)
        check_seconds("backoff_max", backoff_max)
        check_seconds("exit_timeout", exit_timeout, allow_zero=True)
        if durable and spool is None:
            msg = "durable=True needs a spool to write to; pass spool=Spool(directory)"
            raise ValueError(msg)
        self.name = name
        self.stream = stream
        self.spool = spool
        self.durable = bool(durable)
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self.max_queue_size = max_queue_size
        self._yield_above = max_queue_size // 2
        self.catch_up_batches = catch_up_batches
        self.exit_timeout = float(exit_timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self._sink = sink
        self._log = RateLimitedLogger(LOG, interval=log_interval)
        self._closed = False
        self._reset_runtime()
        after_fork_in_child(self._after_fork)
        _LIVE.add(self)
        # No thread yet: it starts with the first put() or flush(), and then replays what
        # earlier processes left. A process that sends nothing must not contact the sink,
        # nor wait for it at exit (a management command while the server is down).

    def __repr__(self) -> str:
        return f"<BatchDelivery {self.name!r} stream={self.stream!r}>"

    def _reset_runtime(self) -> None:
        """Fresh state for this process: at construction, and in the child after a fork."""
        self._pid = os.getpid()
        self._queue: collections.deque[bytes] = collections.deque()
        self._dead: collections.deque[tuple[bytes | None, str, str | None]] = collections.deque()
        self._wake = threading.Event()
        self._gate = FlushGate()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failures = 0
        # When the sink last took a batch (time.monotonic()), forgotten when a batch
        # fails: put() gives up the GIL only for a sink that answers (_ANSWERED_LATELY).
        self._answered_at = -math.inf
        self._backoff_until = 0.0
        self._batch_started: float | None = None
        # Rows may be waiting in the spool: left by an earlier process, or spooled here.
        self._spool_dirty = self.spool is not None
        self._next_spool_poll = 0.0
        self._inflight: list[bytes] | None = None
        self._durable_puts = FastCounter()
        self._durable_taken = 0
        self._queued = FastCounter()
        self._counters = Counters(
            "stored",
            "spooled",
            "replayed",
            "dead_lettered",
            "retries",
            "batches",
            "overflowed",
            groups=("dropped",),
        )

    # -- the caller's side ------------------------------------------------------------

    def put(self, item: bytes) -> None:
        """Accept one item for delivery. Never raises; blocks only to write the spool.

        Normally this appends to the queue, and while the queue is more than half
        full and the sink answers, it gives up the GIL once (``os.sched_yield()``). It
        writes the spool (on the caller's thread) with ``durable=True``, after
        :meth:`close`, and when the queue is full: then the oldest ``batch_size`` queued
        items move to the spool in one commit.
        """
        if self._pid != os.getpid():
            self._after_fork()
        if self._thread is None:
            self._ensure_thread()
        self._queued.incr()
        if self._closed:
            self._spool_now([item], reason="closed")
            return
        if self.durable and self._spool_now([item], reason=None):
            self._durable_puts.incr()
            self._spool_dirty = True
            self._poke(self._backlog())
            return
        queue = self._queue
        if len(queue) >= self.max_queue_size and not self._make_room():
            self._spool_now([item], reason="queue_full")
            return
        queue.append(item)
        self._poke(len(queue))
        if (
            len(queue) > self._yield_above
            and time.monotonic() - self._answered_at < _ANSWERED_LATELY
        ):
            # The thread is behind a sink that answers. Each of its round trips gives up
            # the GIL, and a caller that emits without pause keeps it for a whole switch
            # interval (5 ms) before the thread gets it back: a burst then outruns the
            # thread and spills. Giving the GIL up here lets the thread send while the
            # queue has room. Not while the sink fails or hangs: the thread then waits,
            # or moves the queue to the spool, and the caller would only pay for that.
            _let_others_run()

    def _make_room(self) -> bool:
        """The queue is full: move its oldest batch to the spool; False if impossible.

        Moving the oldest items, rather than spooling the new one, keeps the order
        (the spool is replayed before the queue), and one commit serves a whole batch.
        """
        self._counters.incr("overflowed")
        if self.spool is None:
            return False
        oldest = self._take(self._queue, self.batch_size)
        if self._spool_now(oldest, reason=None):
            return True
        self._queue.extendleft(reversed(oldest))
        return False

    def put_many(self, items: Iterable[bytes]) -> None:
        """Accept several items, in order; the same promises as :meth:`put`."""
        for item in items:
            self.put(item)

    def dead_letter(self, payload: bytes | None, reason: str, detail: str | None = None) -> None:
        """Record an item refused before it was queued (it could not be encoded, say).

        The thread writes it to the dead-letter table; without a spool it is dropped
        and counted. Logged at a limited rate. Never raises.
        """
        if self._pid != os.getpid():
            self._after_fork()
        self._log.warning(
            "dead-letter", "Delivery %r refused an event for good: %s", self.name, reason
        )
        if self._closed:
            self._write_dead_letters([(payload, reason, detail)])
            return
        self._dead.append((payload, reason, detail))
        self._poke(1)

    def _poke(self, backlog: int) -> None:
        # Wake the thread for the first item of a batch (to start its interval) and
        # when a batch is full; in between, waking it would only cost time.
        if (backlog == 1 or backlog >= self.batch_size) and not self._wake.is_set():
            self._wake.set()

    def _backlog(self) -> int:
        return len(self._queue) + self._durable_puts.value - self._durable_taken

    def _spool_now(self, items: list[bytes], reason: str | None) -> bool:
        """Write ``items`` to the spool from the caller's thread; count a drop if impossible.

        ``reason`` is the drop reason to count when there is no usable spool; None means
        the caller has a fallback and nothing is counted as dropped. Returns success.
        """
        if self.spool is not None:
            try:
                self.spool.append(self.stream, items)
            except SpoolFullError as exc:
                # Counted by the spool (refused); a drop is counted and logged below.
                self._counters.set("last_error", f"{type(exc).__name__}: {exc}")
                self._counters.set("last_error_at", time.time())
                if reason is None:
                    self._log.warning(
                        "spool-full",
                        "Delivery %r keeps events in memory, up to max_queue_size: %s",
                        self.name,
                        exc,
                    )
                else:
                    reason = "spool_full"
            except Exception as exc:
                self._record_error("spool", exc)
            else:
                self._counters.incr("spooled", amount=len(items))
                self._spool_dirty = True
                return True
        if reason is not None:
            self._counters.incr("dropped", reason, amount=len(items))
            self._log.error(
                f"drop-{reason}",
                "Delivery %r dropped %d event(s) (%s): %s",
                self.name,
                len(items),
                reason,
                "the spool is full" if reason == "spool_full" else "no spool could take them",
            )
        return False

    # -- flush and close ----------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything accepted so far; True when all of it was stored in time.

        "Everything" includes rows waiting in the spool for this stream, and dead
        letters written to their table. A flush cuts short the current backoff, so it
        retries at once. ``timeout=None`` waits up to :data:`DEFAULT_FLUSH_TIMEOUT`
        seconds: nothing here waits forever. Returns False on timeout; the events stay
        queued or spooled.
        """
        if self._pid != os.getpid():
            self._after_fork()
        if timeout is None:
            timeout = DEFAULT_FLUSH_TIMEOUT
        if self._closed:
            return self._settled()
        return self._wait_flushed(time.monotonic() + max(0.0, timeout), give_up_on_failure=False)

    def _wait_flushed(self, deadline: float, *, give_up_on_failure: bool) -> bool:
        thread = self._ensure_thread()
        if thread is None:
            return self._settled()
        failures = self._counters.get("retries")

        def failed() -> bool:
            return self._counters.get("retries") > failures

        # A flush cuts the backoff short; closing does not, as it gives up on failure.
        ticket = self._ask_to_flush(retry_now=not give_up_on_failure)
        return self._gate.wait(
            ticket, deadline, alive=thread.is_alive, failed=failed if give_up_on_failure else None
        )

    def _ask_to_flush(self, *, retry_now: bool) -> int:
        """Have the thread deliver everything it holds now; returns the flush's ticket."""
        ticket = self._gate.request(retry_now=retry_now)
        self._wake.set()
        return ticket

    def close(self, timeout: float | None = None) -> None:
        """Deliver what can be delivered within ``timeout``, spool the rest, stop the thread.

        ``timeout=None`` means ``exit_timeout``. While the sink is failing it does not
        wait at all: the queue goes straight to the spool. Calling it again does
        nothing; items put afterwards go to the spool.
        """
        if self._pid != os.getpid():
            self._after_fork()
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        _LIVE.discard(self)
        if timeout is None:
            timeout = self.exit_timeout
        deadline = time.monotonic() + max(0.0, timeout)
        thread = self._thread
        if thread is not None and thread.is_alive():
            if time.monotonic() >= self._backoff_until:
                # Deliver while that works; at the first failure, spool instead of waiting.
                self._wait_flushed(deadline, give_up_on_failure=True)
            self._gate.stop()
            self._wake.set()
            # The thread only has to spool the queue now; give it a moment even when
            # the deadline has passed.
            thread.join(max(0.5, deadline - time.monotonic()))
            if thread.is_alive():
                # Stuck in the sink. Spool what it holds too: if it did store that
                # batch after all, replaying it later stores nothing twice.
                inflight = self._inflight
                if inflight:
                    self._spool_now(list(inflight), reason="closed")
        self._spool_queue(reason="closed")
        self._write_dead_letters(self._take_all(self._dead))
        if thread is not None and thread.is_alive():
            return  # the sink is still in use by the stuck thread: leave it open
        close = getattr(self._sink, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                self._record_error("close", exc)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (in this process or before the fork)."""
        return self._closed

    # -- stats --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since this process started using the delivery.

        ``queued`` items accepted; ``stored`` confirmed by the sink (``replayed`` of them
        came from the spool); ``spooled`` written to the spool; ``overflowed`` found the
        queue full; ``dead_lettered`` refused for good; ``retries`` failed attempts;
        ``batches`` successful sink calls; ``dropped`` lost, by reason (``spool_full``
        when the spool refused them); ``queue_size`` now; ``last_error`` and
        ``last_error_at`` (Unix time) when anything failed; ``spool``, the spool's own
        :meth:`~eventtracking.spool.Spool.stats`, when there is one.
        """
        result = self._counters.snapshot()
        result["queued"] = self._queued.value
        result["queue_size"] = len(self._queue)
        result.setdefault("last_error", None)
        if self.spool is not None:
            result["spool"] = self.spool.stats()
        sink_stats = getattr(self._sink, "stats", None)
        if callable(sink_stats):
            try:
                result.update(sink_stats())
            except Exception as exc:
                self._record_error("stats", exc)
        return result

    # -- the thread ---------------------------------------------------------------------

    def _ensure_thread(self) -> threading.Thread | None:
        """Start the thread unless it runs or the delivery is closed; return it."""
        thread = self._thread
        if thread is not None or self._closed:
            return thread
        with self._start_lock:
            if self._thread is None and not self._closed:
                thread = threading.Thread(
                    target=self._run, name=f"eventtracking-delivery-{self.name}", daemon=True
                )
                thread.start()
                self._thread = thread
            return self._thread

    def _after_fork(self) -> None:
        # Locks may have been held by the parent's thread at the fork; the queue holds
        # the parent's items, which the parent delivers. Start over, lazily.
        self._reset_runtime()
        if not self._closed:
            _LIVE.add(self)

    def _run(self) -> None:
        if self.spool is not None:
            # This thread takes the spool's checkpoints, never the application's.
            self.spool.checkpoint()
        while True:
            try:
                if not self._step():
                    break
                if self.spool is not None:
                    self.spool.checkpoint()
            except Exception as exc:  # a bug here must not end delivery for good
                self._record_error("worker", exc)
                self._wake.wait(1.0)
        self._spool_queue(reason="closed")
        self._write_dead_letters(self._take_all(self._dead))

    def _step(self) -> bool:
        """Do one unit of work or wait for some; False when the thread should stop.

        The phases, in order: write the dead letters; while backing off after a
        failure, *spool* the queue; wait while a batch is still filling; *replay* a
        batch from the spool; *take* a batch off the queue and *send* it. With nothing
        left, a flush that asked is told it is done.
        """
        self._wake.clear()
        orders = self._gate.orders()
        if orders.stopping:
            return False
        if orders.retry_now:
            self._backoff_until = 0.0
        if self._dead:
            self._write_dead_letters(self._take_all(self._dead))
        now = time.monotonic()
        if now < self._backoff_until:
            self._spool_while_failing(now)
            return True
        if self._batch_filling(now, orders.urgent):
            return True
        if self._spool_due(now, orders.urgent) and self._replay_batch() is not None:
            return True
        if self._queue:
            if self._batch_due(orders.urgent):
                self._send_queued()
            return True
        self._idle(orders)
        return True

    def _spool_while_failing(self, now: float) -> None:
        """The sink is failing: keep memory bounded until the next attempt."""
        self._spool_queue(reason=None)
        self._wake.wait(min(self._backoff_until - now, self.flush_interval))

    def _batch_filling(self, now: float, urgent: bool) -> bool:
        """Whether to wait for more items before sending; if so, this waited already.

        A batch waits until it is full or ``flush_interval`` old, unless a flush is
        urgent. Spooled rows count: with ``durable=True`` they are the batch.
        """
        backlog = self._backlog()
        if not backlog:
            self._batch_started = None
        elif not urgent and backlog < self.batch_size:
            if self._batch_started is None:
                self._batch_started = now
            left = self._batch_started + self.flush_interval - now
            if left > 0:
                self._wake.wait(left)
                return True
        # Items that arrived since the backlog was read: the next step starts their
        # interval, instead of sending them one by one as they come.
        return not urgent and not backlog and self._backlog() > 0

    def _batch_due(self, urgent: bool) -> bool:
        """Whether the queue's first batch leaves now: items may have arrived since
        :meth:`_batch_filling` looked, and then the next step starts their interval."""
        started = self._batch_started
        return (
            urgent
            or len(self._queue) >= self.batch_size
            or (started is not None and time.monotonic() - started >= self.flush_interval)
        )

    def _idle(self, orders: Orders) -> None:
        """Nothing queued here: tell a waiting flush it is done, or wait for work."""
        self._batch_started = None
        if not orders.urgent:
            self._wake.wait(self.flush_interval)
        elif self._settled():
            self._gate.done(orders.ticket)
        else:
            # Rows of this stream are claimed by another process: wait for its ack.
            self._wake.wait(_CLAIMED_ELSEWHERE_WAIT)

    def _spool_due(self, now: float, urgent: bool) -> bool:
        if self.spool is None:
            return False
        if urgent or self._spool_dirty or now >= self._next_spool_poll:
            self._next_spool_poll = now + _SPOOL_POLL_INTERVAL
            return True
        return False

    def _replay_batch(self) -> bool | None:
        """Deliver one batch from the spool: None when it had nothing, else success."""
        assert self.spool is not None
        # Cleared before looking, so a row spooled after the look sets it again.
        self._spool_dirty = False
        self._durable_taken = self._durable_puts.value
        try:
            # A read first: most looks find nothing, and need no write lock. Claimed
            # rows count, so that claims of dead processes get taken back by claim().
            pending = self._spooled_waiting()
            if pending == 0:
                return None
            claim = self.spool.claim(self.stream, self._batch_limit(pending))
        except Exception as exc:
            self._record_error("spool", exc)
            return None
        if claim is None:
            return None
        self._spool_dirty = True
        try:
            rejected = self._sink.write_batch(claim.payloads) or {}
        except Exception as exc:
            self._release(claim)
            self._failed(exc, len(claim))
            self._spool_queue(reason=None)
            return False
        self._succeeded()
        self._ack(claim, rejected)
        return True

    def _ack(self, claim: Claim, rejected: Mapping[int, str]) -> None:
        assert self.spool is not None
        try:
            held = self.spool.ack(claim, rejected)
        except Exception as exc:
            # Stored, but still on the spool: the next replay stores nothing twice.
            self._record_error("spool", exc)
            return
        if held < len(claim):
            LOG.info(
                "Delivery %r: %d spooled event(s) were taken back by another process "
                "while being delivered; it will find them stored already",
                self.name,
                len(claim) - held,
            )
        stored = len(claim) - len(rejected)
        self._counters.incr("stored", amount=stored)
        self._counters.incr("replayed", amount=stored)
        if rejected:
            self._counters.incr("dead_lettered", amount=len(rejected))
            self._log_rejected(rejected)

    def _release(self, claim: Claim) -> None:
        assert self.spool is not None
        try:
            self.spool.release(claim)
        except Exception as exc:
            # The lease hands these rows back later, to this process or another one.
            self._record_error("spool", exc)

    def _send_queued(self) -> None:
        batch = self._take(self._queue, self._batch_limit(len(self._queue)))
        if not batch:
            return
        self._batch_started = time.monotonic() if self._queue else None
        self._inflight = batch
        try:
            rejected = self._sink.write_batch(batch) or {}
        except Exception as exc:
            self._failed(exc, len(batch))
            if not self._spool_now(batch, reason=None):
                # No spool: keep the batch, in order, at the head of the queue. Memory
                # stays bounded by the queue limit: put() drops when it is full.
                self._queue.extendleft(reversed(batch))
            # What queued behind it waits on disk too, not in memory.
            self._spool_queue(reason=None)
            return
        finally:
            self._inflight = None
        self._succeeded()
        self._counters.incr("stored", amount=len(batch) - len(rejected))
        if rejected:
            self._write_dead_letters(
                [(batch[position], reason, None) for position, reason in rejected.items()]
            )
            self._log_rejected(rejected)

    def _spooled_waiting(self) -> int:
        """Rows of the stream waiting in the spool, counted only as far as the size of
        the next batch depends on them, so that a look costs the same however many wait.
        """
        assert self.spool is not None
        if self.catch_up_batches == 1:
            return int(self.spool.has_pending(self.stream))
        return self.spool.pending_up_to(self.stream, 2 * self.batch_size * self.catch_up_batches)

    def _batch_limit(self, waiting: int) -> int:
        """The items of the next batch when ``waiting`` items wait (queued or spooled)."""
        # Behind: half of what waits, in whole batches; the rest is the next batch's.
        batches = min(self.catch_up_batches, waiting // (2 * self.batch_size))
        return self.batch_size * max(batches, 1)

    def _succeeded(self) -> None:
        self._answered_at = time.monotonic()
        self._counters.incr("batches")
        if self._failures:
            LOG.warning(
                "Delivery %r recovered after %d failed attempt(s)", self.name, self._failures
            )
        self._failures = 0
        self._backoff_until = 0.0

    def _failed(self, exc: BaseException, count: int) -> None:
        self._answered_at = -math.inf
        self._failures += 1
        delay = backoff_delay(self._failures, self.backoff_base, self.backoff_max)
        self._backoff_until = time.monotonic() + delay
        self._counters.incr("retries")
        self._record_error(
            "send",
            exc,
            f"could not deliver {count} event(s); they are kept and retried in {delay:.1f}s "
            f"(attempt {self._failures})",
        )

    def _spool_queue(self, reason: str | None) -> None:
        """Move the queue to the spool, a batch per transaction (so writers wait little)."""
        if self.spool is None and reason is None:
            return
        while self._queue:
            batch = self._take(self._queue, self.batch_size)
            if not self._spool_now(batch, reason=reason):
                if reason is None:
                    self._queue.extendleft(reversed(batch))
                return

    def _write_dead_letters(self, entries: list[tuple[bytes | None, str, str | None]]) -> None:
        if not entries:
            return
        if self.spool is not None:
            try:
                self.spool.add_dead_letters(self.stream, entries)
            except Exception as exc:
                self._record_error("spool", exc)
            else:
                self._counters.incr("dead_lettered", amount=len(entries))
                return
        self._counters.incr("dropped", "dead_letter", amount=len(entries))
        for _payload, reason, _detail in entries:
            self._log.error(
                "drop-dead-letter",
                "Delivery %r dropped a refused event (no spool for dead letters): %s",
                self.name,
                reason,
            )

    def _log_rejected(self, rejected: Mapping[int, str]) -> None:
        for reason in rejected.values():
            self._log.warning(
                "dead-letter",
                "Delivery %r: the sink refused an event for good: %s",
                self.name,
                reason,
            )

    def _settled(self) -> bool:
        """Whether nothing of this process or stream is left to deliver."""
        if self._queue or self._dead or self._inflight:
            return False
        if self.spool is None:
            return True
        try:
            return not self.spool.has_pending(self.stream)
        except Exception as exc:
            self._record_error("spool", exc)
            return False

    def _record_error(self, where: str, exc: BaseException, what: str = "") -> None:
        text = f"{type(exc).__name__}: {exc}"
        self._counters.set("last_error", text)
        self._counters.set("last_error_at", time.time())
        self._counters.incr("errors", where)
        self._log.error(
            f"{where}:{type(exc).__name__}",
            "Delivery %r: %s failed: %s%s",
            self.name,
            where,
            text,
            f"; {what}" if what else "",
        )

    @staticmethod
    def _take(queue: collections.deque[Any], limit: int) -> list[Any]:
        items = []
        popleft = queue.popleft
        for _ in range(limit):
            try:
                items.append(popleft())
            except IndexError:
                break
        return items

    @staticmethod
    def _take_all(queue: collections.deque[Any]) -> list[Any]:
        items = []
        while True:
            try:
                items.append(queue.popleft())
            except IndexError:
                return items


# Deliveries of this process that are not closed: flushed and closed at exit.
_LIVE: weakref.WeakSet[BatchDelivery] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Give each live delivery its ``exit_timeout`` (together, not one after another)."""
    deliveries = [d for d in list(_LIVE) if d._pid == os.getpid() and not d.closed]
    if not deliveries:
        return
    deadline = time.monotonic() + max(d.exit_timeout for d in deliveries)
    for delivery in deliveries:
        # Ask every thread to send what it holds now, so that they work in parallel.
        delivery._ask_to_flush(retry_now=False)
    for delivery in deliveries:
        left = min(delivery.exit_timeout, max(0.0, deadline - time.monotonic()))
        try:
            delivery.close(left)
        except Exception:
            LOG.exception("Closing delivery %r at exit failed", delivery.name)
