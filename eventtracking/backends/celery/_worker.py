"""The worker's side of asynchronous routing: deliver each event to every leaf backend.

Celery runs the tasks of :mod:`eventtracking.tasks` as :func:`send_events` and
:func:`send_event` here (``_tasks`` declares them). For each entry (see
:mod:`eventtracking.backends.celery._wire`), :func:`deliver` looks up the top-level backend named by
``backend_name`` in the worker's default tracker and walks its nested backends itself,
rather than calling ``send_to_backends``: a routing backend swallows its backends'
errors, and a retry must know which *leaf* failed. Nested routing backends still run
their processors on the way down. The walk and the judging of each leaf's outcome are
in :mod:`eventtracking.backends.celery._leaves`; this module handles messages, settings, retries
and dead letters.

What happens to each (event, leaf):

* the leaf takes it: counted in ``delivered`` once every leaf of the event did;
* it raises :class:`~eventtracking.processors.exceptions.NoTransformerImplemented` or
  :class:`~eventtracking.processors.exceptions.NoBackendEnabled`: a dead letter at once,
  with the reason (a retry would meet the same refusal);
* it raises anything else, or cannot confirm it stored the event (its ``flush()``
  returns False): the event is published again for *that leaf only*, with the attempt
  count and a backoff countdown; after ``max_retries`` it becomes a dead letter.

Entries that cannot be read, a ``backend_name`` that names no top-level backend and a
message whose arguments have the wrong shape are dead letters at once, each alone.
Dead letters go to the worker's spool (the routing backend's ``spool_dir``), in the
stream ``celery:<backend_name>``; re-driven with ``python -m eventtracking spool
redrive``, they are published again, to the leaves they name.

Nothing here returns (and so lets Celery acknowledge the message) before every leaf
confirmed, or the retry was published or written to the spool, or the dead letter was
written; then the message leaves the Redis ledger (:mod:`eventtracking.backends.celery._ledger`).
While a leaf delivers, :data:`eventtracking.backends.celery._wire.current_event_id` holds the
event's id,
which MongoBackend uses as ``_id``: a redelivered event is stored once.

A message is written by whoever can write to the broker, so nothing a worker holds
grows with the values a message chooses:

* **Names.** Every ``backend_name`` that names no top-level backend of the worker's
  tracker (and every name that is not a string) shares one bucket, :data:`UNKNOWN`:
  its counters, one set of default settings per spool directory (one spool, one broker
  connection), and the dead-letter stream ``celery:?``; the name itself is kept,
  escaped and cut, in the dead letter's reason. Counters are kept by configured names
  only, and ``failed`` by the leaf paths of the worker's own tree, plus ``?`` for paths
  that name no leaf.
* **Size.** Before any entry is read, a message of more than ``max_message_entries``
  entries (10,000) or ``max_message_bytes`` bytes (4 MiB, the web side's cap) becomes
  one dead letter holding a summary instead of the entries, which are counted in
  ``dropped['oversize_message']``; an entry over ``max_event_size`` (1 MiB) is a dead
  letter alone. Both caps allow 64 KiB more, for the fields a retry adds.
* **Keeping fails.** When the spool cannot keep a message's retries or dead letters
  (full, disk full, out of descriptors), the message is sent back to the broker with a
  countdown (:class:`Requeue`, which the task turns into a Celery retry), at most
  ``max_requeues`` times (5) with backoff (5 s doubled, at most 300 s); after that its
  entries are counted in ``dropped['spool_unavailable']`` and it is acknowledged.
* **Logs.** Values from a message are written into log lines and reasons through
  :func:`eventtracking._util.escape.escape`, and every log line here is rate limited.

Why one module: a message's life on the worker (the task's body, checks, delivery,
retries, requeues, dead letters) is one sequence over the same settings and counters;
delivery leaf by leaf is apart, in ``_leaves``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from eventtracking._util.escape import escape
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters
from eventtracking.backends.celery import _wire
from eventtracking.backends.celery._leaves import (
    Batch,
    Outcome,
    confirm,
    deliver_entry,
    deliver_flat,
    settle,
)
from eventtracking.backends.celery._sink import DEFAULT_MAX_MESSAGE_ENTRIES
from eventtracking.delivery import backoff_delay
from eventtracking.routing import is_router
from eventtracking.spool import Spool, default_spool_dir

__all__ = [
    "DEFAULT_DELIVERY_TIMEOUT",
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_MESSAGE_ENTRIES",
    "DEFAULT_MAX_REQUEUES",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_REQUEUE_BACKOFF",
    "DEFAULT_REQUEUE_BACKOFF_MAX",
    "DEFAULT_RETRY_BACKOFF",
    "DEFAULT_RETRY_BACKOFF_MAX",
    "UNKNOWN",
    "Requeue",
    "WorkerSettings",
    "check_task",
    "dead_letter_message",
    "deliver",
    "deliver_legacy",
    "forget",
    "send_event",
    "send_events",
    "stats",
    "stream_for",
]

LOG = logging.getLogger("eventtracking.tasks")
_LOG = RateLimitedLogger(LOG)

#: Retries of a failing leaf before its event becomes a dead letter (4.x: 3).
DEFAULT_MAX_RETRIES = 3
#: Seconds before the first retry (4.x waited 30); doubled each time, with jitter.
DEFAULT_RETRY_BACKOFF = 30.0
#: The longest wait between retries. Keep it below the broker's visibility timeout.
DEFAULT_RETRY_BACKOFF_MAX = 600.0
#: Seconds a batch waits for its leaves to confirm (``flush``) before retrying them.
DEFAULT_DELIVERY_TIMEOUT = 30.0
#: Bytes of entries a worker takes in one message (the web side's cap).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Bytes of one entry a worker takes (the web side's ``max_event_size``).
DEFAULT_MAX_EVENT_SIZE = 1024 * 1024
#: Times a message whose retries or dead letters the spool cannot keep goes back to
#: the broker before its entries are counted as dropped.
DEFAULT_MAX_REQUEUES = 5
#: Seconds before such a message comes back the first time; doubled each time.
DEFAULT_REQUEUE_BACKOFF = 5.0
#: The longest wait before such a message comes back.
DEFAULT_REQUEUE_BACKOFF_MAX = 300.0

#: The name under which everything about a backend_name the worker does not have is
#: counted and dead-lettered (see the module docstring).
UNKNOWN = "?"

# What the caps allow beyond the web side's limits: the fields a retry adds to an entry
# (its leaf paths and attempt count).
_SLACK = 64 * 1024
# Characters of a sender-chosen value kept in a reason or a log line.
_SHOWN = 200


def stream_for(backend_name: str) -> str:
    """The spool stream of one routing backend's entries, on both sides of the broker."""
    return f"celery:{backend_name}"


class Requeue(Exception):
    """The spool could not keep a message's retries or dead letters: send it back.

    Raised by :func:`deliver` and :func:`deliver_legacy`; the task publishes the
    message again after ``countdown`` seconds (``Task.retry``), which acknowledges
    this delivery of it.
    """

    def __init__(self, message: str, countdown: float, key: str, entries: int) -> None:
        super().__init__(message)
        self.countdown = countdown
        #: The counters (a backend name or :data:`UNKNOWN`) and the entries at stake.
        self.key = key
        self.entries = entries


def send_back(task: Any, requeue: Requeue) -> None:
    """Have Celery publish the message again after ``requeue.countdown`` seconds.

    Raises ``celery.exceptions.Retry`` (Celery then acknowledges this delivery). When
    the copy cannot be published (the broker refuses it), its entries are counted in
    ``dropped['requeue_failed']`` and this returns: Celery would otherwise reject the
    message without requeueing it, uncounted.
    """
    from celery.exceptions import Retry

    try:
        task.retry(countdown=requeue.countdown, max_retries=None)
    except Retry:
        raise
    except Exception as exc:
        # Celery raises Reject(requeue=False) when the broker refuses the copy; a
        # forged retry count in the message's headers raises TypeError.
        _counters(requeue.key).incr("dropped", "requeue_failed", amount=requeue.entries)
        _LOG.error(
            "requeue-failed",
            "Dropped a message of %d entries: the spool could not keep it (%s) and it "
            "could not be sent back (%s: %s)",
            requeue.entries,
            requeue,
            type(exc).__name__,
            escape(str(exc), _SHOWN),
        )


@dataclass
class WorkerSettings:
    """How a worker treats the entries of one ``backend_name``."""

    spool: Spool
    stream: str
    publish: Callable[[str, list[str], float | None], None]
    forget: Callable[[str], None] | None = None
    replay: Callable[[], None] | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX
    delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT
    max_message_entries: int = DEFAULT_MAX_MESSAGE_ENTRIES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_event_size: int = DEFAULT_MAX_EVENT_SIZE
    max_requeues: int = DEFAULT_MAX_REQUEUES
    requeue_backoff: float = DEFAULT_REQUEUE_BACKOFF
    requeue_backoff_max: float = DEFAULT_REQUEUE_BACKOFF_MAX

    def retry_delay(self, attempt: int) -> float:
        """The countdown before retry number ``attempt`` (1 for the first)."""
        return backoff_delay(attempt, self.retry_backoff, self.retry_backoff_max)

    def requeue_delay(self, requeues: int) -> float:
        """The countdown before a message comes back for the ``requeues``-th time."""
        return backoff_delay(requeues, self.requeue_backoff, self.requeue_backoff_max)

    @property
    def entry_limit(self) -> int:
        """Bytes of one entry taken, with room for the fields a retry adds."""
        return self.max_event_size + _SLACK

    @property
    def message_limit(self) -> int:
        """Bytes of entries taken in one message: a single larger entry travels alone."""
        return max(self.max_message_bytes, self.max_event_size) + _SLACK


# -- counters -------------------------------------------------------------------------

_COUNTERS: dict[str, Counters] = {}
_COUNTERS_LOCK = threading.Lock()


def _counters(key: str) -> Counters:
    """The counters of a configured backend name, or of :data:`UNKNOWN` (see _lookup)."""
    with _COUNTERS_LOCK:
        counters = _COUNTERS.get(key)
        if counters is None:
            counters = _COUNTERS[key] = Counters(
                "received",
                "delivered",
                "retried",
                "dead_lettered",
                "filtered",
                "spooled",
                "requeued",
                groups=("failed", "dead_letter_reasons", "dropped"),
            )
        return counters


def stats(backend_name: str | None = None) -> dict[str, Any]:
    """This process's worker counters for ``backend_name`` (all names when None).

    ``received`` entries; ``delivered`` events every targeted leaf took; ``retried``
    (event, leaf) pairs published again; ``dead_lettered`` dead letters written;
    ``filtered`` events a nested processor dropped; ``spooled`` retries kept in the
    spool because the broker refused them; ``requeued`` messages sent back to the
    broker because the spool could not keep their retries or dead letters; ``failed``
    leaf errors by leaf path (``?`` for paths that name no leaf); ``dead_letter_reasons``
    by kind; ``dropped`` entries lost by reason (``oversize_message``,
    ``spool_unavailable``). Names the worker's tracker does not have are all counted
    under :data:`UNKNOWN`.
    """
    if backend_name is not None:
        with _COUNTERS_LOCK:
            counters = _COUNTERS.get(backend_name)
        return counters.snapshot() if counters is not None else {}
    with _COUNTERS_LOCK:
        items = list(_COUNTERS.items())
    return {name: counters.snapshot() for name, counters in items}


# -- settings -------------------------------------------------------------------------

# Settings for backend names that have no AsyncRoutingBackend of their own (an unknown
# name, a plain RoutingBackend named by a 4.x message), one per spool directory: never
# one per name, which a message chooses. Each name gets its stream by a cheap copy.
_DEFAULTS: dict[str, WorkerSettings] = {}


def _settings_for(key: str, target: Any) -> WorkerSettings:
    """The target's own worker settings, or defaults when it is not an async router.

    ``key`` is a configured backend name or :data:`UNKNOWN`. The defaults keep dead
    letters in the default spool directory (:func:`~eventtracking.spool.default_spool_dir`)
    of the worker's host.
    """
    own = getattr(target, "worker_settings", None)
    if callable(own):
        settings: WorkerSettings = own()
        return settings
    directory = str(default_spool_dir())
    with _COUNTERS_LOCK:
        default = _DEFAULTS.get(directory)
        if default is None:
            from eventtracking.backends.celery._sink import CelerySink

            # Its publish() takes the name of each message; the callable is unused.
            sink = CelerySink(lambda: UNKNOWN)
            default = _DEFAULTS[directory] = WorkerSettings(
                spool=Spool(directory),
                stream=stream_for(UNKNOWN),
                publish=sink.publish,
                forget=sink.forget,
            )
    if key == UNKNOWN:
        return default
    return dataclasses.replace(default, stream=stream_for(key))


# The last lookup that found a target: (the tracker's backends mapping, the name, the
# target). Reused while the mapping and the backend under the name are the same
# objects, so that a replaced tracker or backend is seen on the next message.
_last_found: tuple[Any, str, Any] | None = None


def _lookup(backend_name: Any) -> tuple[str, Any, str | None]:
    """``(key, target, problem)`` for ``backend_name``, with one look at the registered
    tracker: ``key`` is the name when the tracker has a top-level backend by that name,
    else :data:`UNKNOWN` (what counters and default settings are kept by); ``target``
    the router to deliver to, or None with the ``problem`` why there is none."""
    global _last_found
    from eventtracking.tracker import registered

    # The registered tracker only: get_tracker() would make the fallback that prints
    # events when nothing is configured, which has none of the worker's backends.
    tracker = registered()
    if tracker is None:
        problem = (
            "the worker has no default tracker: register one (the Django app does when "
            "EVENT_TRACKING_ENABLED is true) before the worker consumes events"
        )
        return UNKNOWN, None, problem
    backends = tracker.backends
    target = backends.get(backend_name) if isinstance(backend_name, str) else None
    last = _last_found
    if last is not None and last[2] is target and last[0] is backends and last[1] == backend_name:
        return backend_name, target, None
    if target is None:
        names = ", ".join(repr(name) for name in backends) or "none"
        problem = (
            f"unknown backend_name '{escape(str(backend_name), _SHOWN)}': the worker's "
            f"tracker has the top-level backends {names}; set backend_name to the key of "
            "the AsyncRoutingBackend in EVENT_TRACKING_BACKENDS"
        )
        return UNKNOWN, None, problem
    if not is_router(target):
        problem = (
            f"backend_name {backend_name!r} names a {type(target).__name__}, which has no "
            "nested backends to deliver to; name an AsyncRoutingBackend"
        )
        return backend_name, None, problem
    _last_found = (backends, backend_name, target)
    return backend_name, target, None


# -- the tasks ------------------------------------------------------------------------
# What Celery runs: ``eventtracking.backends.celery._tasks`` declares the two tasks with
# these functions as their bodies.


def send_events(self: Any, *args: Any, **kwargs: Any) -> None:
    """Deliver a batch: ``send_events(backend_name, entries)``.

    ``entries`` is a list of entry texts written by
    :func:`eventtracking.backends.celery._wire.encode_entry`. Not meant to be called by hand:
    AsyncRoutingBackend publishes it.
    """
    backend_name, entries, problem = _arguments(args, kwargs, ("backend_name", "entries"))
    requeues = self.request.retries or 0
    try:
        if problem is not None:
            body = {"args": args, "kwargs": kwargs}
            dead_letter_message(backend_name, body, problem, requeues=requeues)
            forget(backend_name, self.request.id)
            return
        found = _lookup(backend_name) if isinstance(backend_name, str) else None
        if check_task(self, backend_name, entries, found=found):
            deliver(backend_name, entries, self.request.id, requeues, found=found)
    except Requeue as requeue:
        send_back(self, requeue)


def send_event(self: Any, *args: Any, **kwargs: Any) -> None:
    """Deliver one event of a 4.x message: ``send_event(backend_name, processed_event)``.

    ``processed_event`` is the event dict, already through the top-level processors.
    Its ``timestamp`` may arrive as a datetime or an ISO string (kombu <= 5.2); either
    way the leaves receive a timezone-aware UTC datetime. The event's id is derived
    from the message id, so a redelivered message is stored once in MongoDB.
    """
    backend_name, event, problem = _arguments(args, kwargs, ("backend_name", "processed_event"))
    requeues = self.request.retries or 0
    try:
        if problem is not None:
            body = {"args": args, "kwargs": kwargs}
            dead_letter_message(backend_name, body, problem, requeues=requeues)
            return
        if check_task(self, backend_name, event, legacy=True):
            deliver_legacy(backend_name, event, self.request.id, requeues)
    except Requeue as requeue:
        send_back(self, requeue)


def _arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any], names: tuple[str, str]
) -> tuple[Any, Any, str | None]:
    """The two arguments of a task, by position or by name, and what is wrong with them.

    Tasks take ``*args`` so that a message with the wrong arguments reaches our code
    and becomes a counted dead letter, instead of a TypeError that Celery would
    acknowledge and drop.
    """
    if not kwargs and len(args) == 2:
        return args[0], args[1], None  # what the library publishes
    values: list[Any] = [*args[:2], None, None][:2]
    for index, name in enumerate(names):
        if name in kwargs:
            values[index] = kwargs[name]
    given = len(args) + len(kwargs)
    unknown = sorted(set(kwargs) - set(names))
    if given != 2 or unknown:
        problem = (
            f"malformed message: expected 2 arguments ({', '.join(names)}), got "
            f"{len(args)} positional and keyword(s) {sorted(kwargs)}"
        )
        return values[0], None, problem
    return values[0], values[1], None


def check_task(
    task: Any,
    backend_name: Any,
    body: Any,
    *,
    legacy: bool = False,
    found: tuple[str, Any, str | None] | None = None,
) -> bool:
    """Whether a task may deliver its message; when not (see
    :func:`~eventtracking.backends.celery._wire.refusal`), the message is kept whole
    as a counted dead letter and taken out of the Redis ledger. ``found``: what
    :func:`_lookup` gave for ``backend_name``, when the caller looked already."""
    if found is None:
        refused = _wire.refusal(task, backend_name, body, legacy=legacy)
    else:
        refused = _wire.refusal(task, backend_name, body, legacy=legacy, backend=found[1])
    if refused is None:
        return True
    kind, reason = refused
    dead_letter_message(backend_name, body, reason, kind)
    forget(backend_name, getattr(task.request, "id", None))
    return False


# -- delivery -------------------------------------------------------------------------


def deliver(
    backend_name: Any,
    entries: Any,
    task_id: str | None = None,
    requeues: int = 0,
    *,
    found: tuple[str, Any, str | None] | None = None,
) -> None:
    """Deliver the entries of one ``send_events`` message (see the module docstring).

    Returns once everything is delivered or kept (or counted as dropped), after taking
    the message (``task_id``) out of the Redis ledger. ``requeues`` is how many times
    the message was sent back already (Celery's ``request.retries``). Raises
    :class:`Requeue` only when the spool cannot keep what must be kept and the message
    may come back once more. ``found``: what :func:`_lookup` gave for ``backend_name``,
    when the caller (the task) looked already.
    """
    if not isinstance(backend_name, str) or not isinstance(entries, (list, tuple)):
        shape = _shape_problem(backend_name, entries)
        dead_letter_message(backend_name, entries, shape, requeues=requeues)
        forget(backend_name, task_id)
        return
    key, target, problem = found or _lookup(backend_name)
    settings = _settings_for(key, target)
    counters = _counters(key)
    texts = list(entries)
    try:
        with _guard(backend_name, entries):
            oversize = _oversize(texts, settings)
            if oversize is not None:
                _dead_letter_summary(backend_name, texts, oversize, settings, counters)
            else:
                _deliver_texts(backend_name, texts, target, problem, settings, counters)
    except _KeepFailed as exc:
        _requeue_or_drop(backend_name, len(texts), exc, settings, counters, requeues)
    _forget(settings, task_id)


def forget(backend_name: Any, task_id: str | None) -> None:
    """Take a message that is dealt with (delivered or kept) out of the Redis ledger."""
    if task_id is None:
        return
    key, target, _problem = _lookup(backend_name)
    _forget(_settings_for(key, target), task_id)


def _forget(settings: WorkerSettings, task_id: str | None) -> None:
    if task_id is None or settings.forget is None:
        return
    try:
        settings.forget(task_id)
    except Exception as exc:
        # The message is still acknowledged after this; a sweep may later publish it
        # again: a duplicate, which stores recognise, never a loss.
        _LOG.warning(
            "ledger-forget",
            "Could not take delivered message %s out of the Redis ledger: %s: %s",
            escape(task_id),
            type(exc).__name__,
            escape(str(exc)),
        )


def deliver_legacy(
    backend_name: Any, event: Any, message_id: str | None, requeues: int = 0
) -> None:
    """Deliver the one event of a 4.x ``send_event`` message.

    Its id is derived from the message id, which a redelivery keeps, so MongoBackend
    still stores it once. Raises :class:`Requeue` as :func:`deliver` does.
    """
    if not isinstance(backend_name, str) or not isinstance(event, Mapping):
        shape = _shape_problem(backend_name, event)
        dead_letter_message(backend_name, event, shape, requeues=requeues)
        return
    key, target, problem = _lookup(backend_name)
    settings = _settings_for(key, target)
    counters = _counters(key)
    try:
        with _guard(backend_name, event):
            decoded = _wire.decode_event(event)
            seed = message_id if isinstance(message_id, str) else _wire.new_event_id()
            event_id = _wire.event_id_from(seed, decoded.get("timestamp"))
            text = _wire.encode_entry(event_id, _wire.encode_event(decoded))
            oversize = _oversize([text], settings)
            if oversize is not None:
                _dead_letter_summary(backend_name, [text], oversize, settings, counters)
            else:
                _deliver_texts(backend_name, [text], target, problem, settings, counters)
    except _KeepFailed as exc:
        _requeue_or_drop(backend_name, 1, exc, settings, counters, requeues)


class _KeepFailed(Exception):
    """The spool refused what had to be kept; the message goes back or is dropped."""


def _requeue_or_drop(
    backend_name: str,
    entries: int,
    problem: _KeepFailed,
    settings: WorkerSettings,
    counters: Counters,
    requeues: int,
) -> None:
    """Raise :class:`Requeue` while the message may come back, else count it dropped."""
    requeues = requeues if isinstance(requeues, int) and requeues >= 0 else 0
    if requeues < settings.max_requeues:
        countdown = settings.requeue_delay(requeues + 1)
        counters.incr("requeued")
        _LOG.error(
            "requeue",
            "Could not keep the retries or dead letters of '%s' (%s); the message comes "
            "back in %.0f s (%d of %d)",
            escape(backend_name, _SHOWN),
            problem,
            countdown,
            requeues + 1,
            settings.max_requeues,
        )
        raise Requeue(str(problem), countdown, _lookup(backend_name)[0], entries)
    counters.incr("dropped", "spool_unavailable", amount=entries)
    _LOG.error(
        "requeue-drop",
        "Dropped a message of %d entries for '%s': the spool could not keep its retries "
        "or dead letters after %d attempts (%s); make room in the spool (python -m "
        "eventtracking spool status)",
        entries,
        escape(backend_name, _SHOWN),
        requeues + 1,
        problem,
    )


@contextlib.contextmanager
def _guard(backend_name: str, body: Any) -> Iterator[None]:
    """Dead-letter the whole message when delivering it fails unexpectedly.

    A bug must neither lose the message (Celery would acknowledge the failed task) nor
    loop on it (a requeued message would fail the same way).
    """
    try:
        yield
    except _KeepFailed:
        raise
    except Exception as exc:
        _LOG.error(
            "internal-error",
            "Delivering a message for '%s' failed unexpectedly",
            escape(backend_name, _SHOWN),
            exc_info=exc,
        )
        reason = (
            f"delivery failed unexpectedly: {type(exc).__name__}: {escape(str(exc), 2 * _SHOWN)}"
        )
        _dead_letter_whole(backend_name, body, reason, "internal_error")


def _oversize(texts: list[Any], settings: WorkerSettings) -> str | None:
    """Why a message is over the worker's caps, or None; reads no entry."""
    if len(texts) > settings.max_message_entries:
        return (
            f"{len(texts)} entries, over the worker's max_message_entries="
            f"{settings.max_message_entries}"
        )
    limit = settings.message_limit
    try:
        joined = "".join(texts)
    except TypeError:  # an entry that is not a str: counted one by one below
        pass
    else:
        # Four bytes a character at most, one byte for ASCII: most messages need no
        # closer look.
        if len(joined) <= limit // 4 or (len(joined) <= limit and joined.isascii()):
            return None
    total = 0
    for text in texts:
        total += _size(text, limit - total + 1)
        if total > limit:
            return (
                f"over {limit} bytes of entries, the worker's max_message_bytes="
                f"{settings.max_message_bytes} (or max_event_size, when larger) plus "
                f"{_SLACK} for retries"
            )
    return None


def _size(text: Any, budget: int) -> int:
    """Bytes of an entry as the broker carried it, counted no further than ``budget``."""
    if isinstance(text, str):
        if text.isascii() or len(text) > budget:
            return len(text)
        return len(text.encode("utf-8", "surrogatepass"))
    if isinstance(text, bytes):
        return len(text)
    return len(_wire.encode_value(text))


def _dead_letter_summary(
    backend_name: str,
    texts: list[Any],
    why: str,
    settings: WorkerSettings,
    counters: Counters,
) -> None:
    """Keep a message over the caps as one dead letter that describes it."""
    counters.incr("received", amount=len(texts))
    counters.incr("dropped", "oversize_message", amount=len(texts))
    counters.incr("dead_letter_reasons", "oversize_message")
    first = texts[0] if texts else None
    detail = (
        f"{len(texts)} entries; the first begins "
        f"{escape(first if isinstance(first, str) else repr(first)[:_SHOWN], _SHOWN)}"
    )
    reason = (
        f"message for '{escape(backend_name, _SHOWN)}' too large for this worker ({why}); "
        "its entries are not kept: publish smaller messages or raise the worker's limits"
    )
    _finish(backend_name, settings, counters, [(None, reason, detail)], {})


def _deliver_texts(
    backend_name: str,
    texts: list[Any],
    target: Any,
    problem: str | None,
    settings: WorkerSettings,
    counters: Counters,
) -> None:
    dead: list[tuple[bytes | None, str, str | None]] = []
    retries: dict[int, list[str]] = {}
    if problem is not None:
        counters.incr("received", amount=len(texts))
        for text in texts:
            dead.append((_as_bytes(text, settings), problem, None))
        counters.incr("dead_letter_reasons", "unknown_backend", amount=len(texts))
        _finish(backend_name, settings, counters, dead, retries)
        return
    batch = Batch(counters)
    limit = settings.entry_limit
    # Four bytes a character at most: most entries need no closer look.
    quick = limit // 4
    read = _wire.read_entry
    outcomes = batch.outcomes
    flat = batch.flat(target.backends)
    # deliver_flat leaves each event's id set: it is put back once, after the last one.
    token = _wire.current_event_id.set(None)
    try:
        for text in texts:
            if (not isinstance(text, str) or len(text) > quick) and _size(text, limit + 1) > limit:
                reason = (
                    f"entry over {limit} bytes, the worker's max_event_size="
                    f"{settings.max_event_size} plus {_SLACK} for retries"
                )
                dead.append((_as_bytes(text, settings), reason, None))
                counters.incr("dead_letter_reasons", "oversize_entry")
                continue
            try:
                event_id, event, only, attempt, _extra = read(text)
            except _wire.MalformedEntry as exc:
                reason = f"malformed entry: {escape(str(exc), 2 * _SHOWN)}"
                dead.append((_as_bytes(text, settings), reason, None))
                counters.incr("dead_letter_reasons", "malformed")
                continue
            if only is None and flat is not None:
                outcomes.append(deliver_flat(flat, event_id, event, attempt, text, batch))
            else:
                outcomes.append(deliver_entry(target, event_id, event, only, attempt, text, batch))
    finally:
        _wire.current_event_id.reset(token)
    confirm(batch, settings.delivery_timeout)
    delivered = 0
    for outcome in batch.outcomes:
        if not isinstance(outcome, Outcome):  # every leaf took it (deliver_flat)
            delivered += 1
        elif outcome.failures or outcome.missing:
            settle(outcome, settings, counters, dead, retries)
        else:
            delivered += 1  # counted once per message rather than once per event
    # Received and delivered are counted together, once per message and under one
    # lock, before the retries and dead letters are kept (which may fail).
    counters.add(received=len(texts), delivered=delivered)
    _finish(backend_name, settings, counters, dead, retries)


def _finish(
    backend_name: str,
    settings: WorkerSettings,
    counters: Counters,
    dead: list[tuple[bytes | None, str, str | None]],
    retries: dict[int, list[str]],
) -> None:
    """Publish the retries and write the dead letters; raise _KeepFailed if neither can
    be kept."""
    if not retries and not dead:
        return  # the usual message: every entry delivered, nothing to name in a log
    problems: list[str] = []
    shown = escape(backend_name, _SHOWN)
    for attempt, texts in sorted(retries.items()):
        for chunk in _chunks(texts, settings.max_message_bytes):
            try:
                settings.publish(backend_name, chunk, settings.retry_delay(attempt))
            except Exception as exc:
                _LOG.warning(
                    "retry-publish",
                    "Could not publish %d retry(ies) for '%s' (%s: %s); they wait in the spool",
                    len(chunk),
                    shown,
                    type(exc).__name__,
                    escape(str(exc), 2 * _SHOWN),
                )
                try:
                    settings.spool.append(settings.stream, [text.encode("utf-8") for text in chunk])
                except Exception as spool_exc:
                    problems.append(f"retries: {type(spool_exc).__name__}: {spool_exc}")
                else:
                    counters.incr("spooled", amount=len(chunk))
                    if settings.replay is not None:
                        settings.replay()  # the publisher sends them when the broker is back
    if dead:
        for _payload, reason, _detail in dead:
            _LOG.warning("dead-letter", "Dead letter for '%s': %s", shown, escape(reason, 1000))
        try:
            settings.spool.add_dead_letters(settings.stream, dead)
        except Exception as exc:
            problems.append(f"dead letters: {type(exc).__name__}: {exc}")
        else:
            counters.incr("dead_lettered", amount=len(dead))
    if problems:
        msg = f"the spool {settings.spool.path} refused them: {escape('; '.join(problems), 1000)}"
        raise _KeepFailed(msg)


def _chunks(texts: list[str], limit: int) -> Iterator[list[str]]:
    """``texts`` in messages of at most ``limit`` characters (a larger text alone)."""
    chunk: list[str] = []
    size = 0
    for text in texts:
        if chunk and size + len(text) > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(text)
        size += len(text)
    if chunk:
        yield chunk


def _shape_problem(backend_name: Any, body: Any) -> str:
    return (
        "malformed message: expected (backend_name: str, entries: list of str) or, for "
        f"4.x messages, (backend_name: str, event: dict); got ({type(backend_name).__name__}, "
        f"{type(body).__name__})"
    )


def dead_letter_message(
    backend_name: Any, body: Any, reason: str, kind: str = "malformed", requeues: int = 0
) -> None:
    """Keep a whole message as one dead letter: its arguments, as JSON, and why.

    It goes to the spool of ``backend_name`` when that names a backend, else to the
    default spool in the stream of :data:`UNKNOWN`. A message too large to keep is
    kept as a summary. Raises :class:`Requeue` as :func:`deliver` does.
    """
    try:
        _dead_letter_whole(backend_name, body, reason, kind)
    except _KeepFailed as exc:
        key, target, _problem = _lookup(backend_name)
        settings = _settings_for(key, target)
        _requeue_or_drop(key, 1, exc, settings, _counters(key), requeues)


def _dead_letter_whole(backend_name: Any, body: Any, reason: str, kind: str) -> None:
    key, target, _problem = _lookup(backend_name)
    counters = _counters(key)
    counters.incr("received")
    counters.incr("dead_letter_reasons", kind)
    settings = _settings_for(key, target)
    payload: bytes | None = _wire.encode_value([backend_name, body]).encode(
        "utf-8", "surrogatepass"
    )
    detail = None
    if payload is not None and len(payload) > settings.message_limit:
        detail = f"{len(payload)} bytes of JSON, over the worker's limit, not kept"
        payload = None
    if key == UNKNOWN and isinstance(backend_name, str):
        reason = f"{reason} (backend_name '{escape(backend_name, _SHOWN)}')"
    _finish(key, settings, counters, [(payload, reason, detail)], {})


def _as_bytes(text: Any, settings: WorkerSettings) -> bytes | None:
    """An entry as a dead letter's payload; None (with no payload) when over the cap."""
    if isinstance(text, bytes):
        payload = text
    elif isinstance(text, str):
        payload = text.encode("utf-8", "surrogatepass")
    else:
        payload = _wire.encode_value(text).encode("utf-8", "surrogatepass")
    return payload if len(payload) <= settings.message_limit else None
