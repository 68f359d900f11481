"""The worker's side of asynchronous routing: deliver each event to every leaf backend.

The tasks in :mod:`eventtracking.tasks` hand their message here. For each entry (see
:mod:`eventtracking._wire`), :func:`deliver` looks up the top-level backend named by
``backend_name`` in the worker's default tracker and walks its nested backends itself,
rather than calling ``send_to_backends``: a routing backend swallows its backends'
errors, and a retry must know which *leaf* failed. Nested routing backends still run
their processors on the way down. The walk and the judging of each leaf's outcome are
in :mod:`eventtracking._celery_leaves`; this module handles messages, settings, retries
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
written; then the message leaves the Redis ledger (:mod:`eventtracking._redis_ledger`).
When even the spool cannot be written, the message is rejected and requeued.
While a leaf delivers, :data:`eventtracking._wire.current_event_id` holds the event's id,
which MongoBackend uses as ``_id``: a redelivered event is stored once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from eventtracking import _wire
from eventtracking._celery_leaves import Batch, confirm, deliver_entry, settle
from eventtracking._ratelimit import RateLimitedLogger
from eventtracking._stats import Counters
from eventtracking.delivery import backoff_delay
from eventtracking.spool import Spool, default_spool_dir

__all__ = [
    "DEFAULT_DELIVERY_TIMEOUT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY_BACKOFF",
    "DEFAULT_RETRY_BACKOFF_MAX",
    "WorkerSettings",
    "dead_letter_message",
    "deliver",
    "deliver_legacy",
    "forget",
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


def stream_for(backend_name: str) -> str:
    """The spool stream of one routing backend's entries, on both sides of the broker."""
    return f"celery:{backend_name}"


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

    def retry_delay(self, attempt: int) -> float:
        """The countdown before retry number ``attempt`` (1 for the first)."""
        return backoff_delay(attempt, self.retry_backoff, self.retry_backoff_max)


# -- counters -------------------------------------------------------------------------

_COUNTERS: dict[str, Counters] = {}
_COUNTERS_LOCK = threading.Lock()


def _counters(backend_name: str) -> Counters:
    with _COUNTERS_LOCK:
        counters = _COUNTERS.get(backend_name)
        if counters is None:
            counters = _COUNTERS[backend_name] = Counters(
                "received",
                "delivered",
                "retried",
                "dead_lettered",
                "filtered",
                "spooled",
                groups=("failed", "dead_letter_reasons"),
            )
        return counters


def stats(backend_name: str | None = None) -> dict[str, Any]:
    """This process's worker counters for ``backend_name`` (all names when None).

    ``received`` entries; ``delivered`` events every targeted leaf took; ``retried``
    (event, leaf) pairs published again; ``dead_lettered`` dead letters written;
    ``filtered`` events a nested processor dropped; ``spooled`` retries kept in the
    spool because the broker refused them; ``failed`` leaf errors by leaf path;
    ``dead_letter_reasons`` by kind.
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
# name, a plain RoutingBackend named by a 4.x message), by name and spool directory.
_DEFAULTS: dict[tuple[str, str], WorkerSettings] = {}


def _settings_for(backend_name: str, target: Any) -> WorkerSettings:
    """The target's own worker settings, or defaults when it is not an async router.

    The defaults keep dead letters in the default spool directory
    (:func:`~eventtracking.spool.default_spool_dir`) of the worker's host.
    """
    own = getattr(target, "worker_settings", None)
    if callable(own):
        settings: WorkerSettings = own()
        return settings
    directory = default_spool_dir()
    key = (backend_name, str(directory))
    with _COUNTERS_LOCK:
        default = _DEFAULTS.get(key)
        if default is None:
            from eventtracking._celery_sink import CelerySink

            sink = CelerySink(lambda: backend_name)
            default = _DEFAULTS[key] = WorkerSettings(
                spool=Spool(directory),
                stream=stream_for(backend_name),
                publish=sink.publish,
                forget=sink.forget,
            )
        return default


# -- delivery -------------------------------------------------------------------------


def deliver(backend_name: Any, entries: Any, task_id: str | None = None) -> None:
    """Deliver the entries of one ``send_events`` message (see the module docstring).

    Returns once everything is delivered or kept, after taking the message (``task_id``)
    out of the Redis ledger; raises ``celery.exceptions.Reject`` (requeue) only when
    the spool cannot keep what must be kept.
    """
    if not isinstance(backend_name, str) or not isinstance(entries, (list, tuple)):
        dead_letter_message(backend_name, entries, _shape_problem(backend_name, entries))
        forget(backend_name, task_id)
        return
    settings: WorkerSettings | None = None
    with _guard(backend_name, entries):
        settings = _deliver_texts(backend_name, list(entries))
    if settings is None:  # dead-lettered whole by the guard
        forget(backend_name, task_id)
    else:
        _forget(settings, task_id)


def forget(backend_name: Any, task_id: str | None) -> None:
    """Take a message that is dealt with (delivered or kept) out of the Redis ledger."""
    if task_id is None:
        return
    name = backend_name if isinstance(backend_name, str) else "?"
    _forget(_settings_for(name, _find_target(name)[0]), task_id)


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
            task_id,
            type(exc).__name__,
            exc,
        )


def deliver_legacy(backend_name: Any, event: Any, message_id: str | None) -> None:
    """Deliver the one event of a 4.x ``send_event`` message.

    Its id is derived from the message id, which a redelivery keeps, so MongoBackend
    still stores it once.
    """
    if not isinstance(backend_name, str) or not isinstance(event, Mapping):
        dead_letter_message(backend_name, event, _shape_problem(backend_name, event))
        return
    with _guard(backend_name, event):
        decoded = _wire.decode_event(event)
        seed = message_id or _wire.new_event_id()
        event_id = _wire.event_id_from(seed, decoded.get("timestamp"))
        text = _wire.encode_entry(event_id, _wire.encode_event(decoded))
        _deliver_texts(backend_name, [text])


@contextlib.contextmanager
def _guard(backend_name: str, body: Any) -> Iterator[None]:
    """Dead-letter the whole message when delivering it fails unexpectedly.

    A bug must neither lose the message (Celery would acknowledge the failed task) nor
    loop on it (a requeued message would fail the same way).
    """
    from celery.exceptions import Reject

    try:
        yield
    except Reject:
        raise
    except Exception as exc:
        LOG.exception("Delivering a message for %r failed unexpectedly", backend_name)
        reason = f"delivery failed unexpectedly: {type(exc).__name__}: {exc}"
        dead_letter_message(backend_name, body, reason, kind="internal_error")


def _deliver_texts(backend_name: str, texts: list[Any]) -> WorkerSettings:
    counters = _counters(backend_name)
    counters.incr("received", amount=len(texts))
    target, problem = _find_target(backend_name)
    settings = _settings_for(backend_name, target)
    dead: list[tuple[bytes | None, str, str | None]] = []
    retries: dict[int, list[str]] = {}
    if problem is not None:
        for text in texts:
            dead.append((_as_bytes(text), problem, None))
        counters.incr("dead_letter_reasons", "unknown_backend", amount=len(texts))
        _finish(backend_name, settings, counters, dead, retries)
        return settings
    batch = Batch(counters)
    for text in texts:
        try:
            entry = _wire.decode_entry(text)
        except _wire.MalformedEntry as exc:
            dead.append((_as_bytes(text), f"malformed entry: {exc}", None))
            counters.incr("dead_letter_reasons", "malformed")
            continue
        batch.outcomes.append(deliver_entry(target, entry, batch))
    confirm(batch, settings.delivery_timeout)
    for outcome in batch.outcomes:
        settle(outcome, settings, counters, dead, retries)
    _finish(backend_name, settings, counters, dead, retries)
    return settings


def _find_target(backend_name: str) -> tuple[Any, str | None]:
    from eventtracking.tracker import DEFAULT_TRACKER_NAME, TRACKERS

    # The registered tracker only: get_tracker() would make the fallback that prints
    # events when nothing is configured, which has none of the worker's backends.
    tracker = TRACKERS.get(DEFAULT_TRACKER_NAME)
    if tracker is None:
        return None, (
            "the worker has no default tracker: register one (the Django app does when "
            "EVENT_TRACKING_ENABLED is true) before the worker consumes events"
        )
    target = tracker.backends.get(backend_name)
    if target is None:
        names = ", ".join(repr(name) for name in tracker.backends) or "none"
        return None, (
            f"unknown backend_name {backend_name!r}: the worker's tracker has the top-level "
            f"backends {names}; set backend_name to the key of the AsyncRoutingBackend in "
            "EVENT_TRACKING_BACKENDS"
        )
    if not isinstance(getattr(target, "backends", None), Mapping):
        return None, (
            f"backend_name {backend_name!r} names a {type(target).__name__}, which has no "
            "nested backends to deliver to; name an AsyncRoutingBackend"
        )
    return target, None


def _finish(
    backend_name: str,
    settings: WorkerSettings,
    counters: Counters,
    dead: list[tuple[bytes | None, str, str | None]],
    retries: dict[int, list[str]],
) -> None:
    """Publish the retries and write the dead letters; reject the message if neither can be kept."""
    problems: list[str] = []
    for attempt, texts in sorted(retries.items()):
        try:
            settings.publish(backend_name, texts, settings.retry_delay(attempt))
        except Exception as exc:
            _LOG.warning(
                "retry-publish",
                "Could not publish %d retry(ies) for %r (%s: %s); they wait in the spool",
                len(texts),
                backend_name,
                type(exc).__name__,
                exc,
            )
            try:
                settings.spool.append(settings.stream, [text.encode("utf-8") for text in texts])
            except Exception as spool_exc:
                problems.append(f"retries: {type(spool_exc).__name__}: {spool_exc}")
            else:
                counters.incr("spooled", amount=len(texts))
                if settings.replay is not None:
                    settings.replay()  # the publisher sends them when the broker is back
    if dead:
        for _payload, reason, _detail in dead:
            _LOG.warning("dead-letter", "Dead letter for %r: %s", backend_name, reason)
        try:
            settings.spool.add_dead_letters(settings.stream, dead)
        except Exception as exc:
            problems.append(f"dead letters: {type(exc).__name__}: {exc}")
        else:
            counters.incr("dead_lettered", amount=len(dead))
    if problems:
        from celery.exceptions import Reject

        msg = (
            f"could not keep the retries or dead letters of {backend_name!r} in the spool "
            f"{settings.spool.path} ({'; '.join(problems)}); the message goes back to the "
            "queue"
        )
        LOG.error(msg)
        raise Reject(msg, requeue=True)


def _shape_problem(backend_name: Any, body: Any) -> str:
    return (
        "malformed message: expected (backend_name: str, entries: list of str) or, for "
        f"4.x messages, (backend_name: str, event: dict); got ({type(backend_name).__name__}, "
        f"{type(body).__name__})"
    )


def dead_letter_message(backend_name: Any, body: Any, reason: str, kind: str = "malformed") -> None:
    """Keep a whole message as one dead letter: its arguments, as JSON, and why.

    It goes to the spool of ``backend_name`` when that names a backend, else to the
    default spool under the name ``?``.
    """
    name = backend_name if isinstance(backend_name, str) else "?"
    counters = _counters(name)
    counters.incr("received")
    payload = _wire.encode_value([backend_name, body]).encode("utf-8")
    counters.incr("dead_letter_reasons", kind)
    settings = _settings_for(name, _find_target(name)[0])
    _finish(name, settings, counters, [(payload, reason, None)], {})


def _as_bytes(text: Any) -> bytes:
    if isinstance(text, bytes):
        return text
    if isinstance(text, str):
        return text.encode("utf-8", "surrogatepass")
    return _wire.encode_value(text).encode("utf-8")
