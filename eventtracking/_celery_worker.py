"""The worker's side of asynchronous routing: deliver each event to every leaf backend.

The tasks in :mod:`eventtracking.tasks` hand their message here. For each entry (see
:mod:`eventtracking._wire`), :func:`deliver` looks up the top-level backend named by
``backend_name`` in the worker's default tracker and walks its nested backends itself,
rather than calling ``send_to_backends``: a routing backend swallows its backends'
errors, and a retry must know which *leaf* failed. Nested routing backends still run
their processors on the way down.

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
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from eventtracking import _wire
from eventtracking._copy import safe_copy
from eventtracking._ratelimit import RateLimitedLogger
from eventtracking._stats import Counters
from eventtracking.delivery import backoff_delay
from eventtracking.processors.exceptions import (
    EventEmissionExit,
    NoBackendEnabled,
    NoTransformerImplemented,
)
from eventtracking.routing import RoutingBackend
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

_PERMANENT = (NoTransformerImplemented, NoBackendEnabled)
_DETAIL_LIMIT = 2_000


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


@dataclass(frozen=True)
class _Failure:
    """Why a leaf does not hold an event: ``text`` for people; ``final`` names the kind
    of dead letter it becomes at once, or is None when a retry may succeed."""

    text: str
    final: str | None = None
    error: BaseException | None = None

    @classmethod
    def raised(cls, error: BaseException) -> _Failure:
        text = f"{type(error).__name__}: {error}"
        if len(text) > _DETAIL_LIMIT:
            text = text[:_DETAIL_LIMIT] + "..."
        final = type(error).__name__ if isinstance(error, _PERMANENT) else None
        return cls(text, final, error)


class _Outcome:
    """What became of one entry: failures by leaf path, and the leaves that took it."""

    __slots__ = ("entry", "failures", "taken")

    def __init__(self, entry: _wire.Entry) -> None:
        self.entry = entry
        self.failures: dict[tuple[str, ...], _Failure] = {}
        self.taken: list[tuple[str, ...]] = []


class _Batch:
    """The entries of one message on their way down, and the leaves they reached."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.outcomes: list[_Outcome] = []
        # Leaves that took events, by path: each is asked to confirm once per batch.
        self.touched: dict[tuple[str, ...], Any] = {}


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
    batch = _Batch(counters)
    for text in texts:
        try:
            entry = _wire.decode_entry(text)
        except _wire.MalformedEntry as exc:
            dead.append((_as_bytes(text), f"malformed entry: {exc}", None))
            counters.incr("dead_letter_reasons", "malformed")
            continue
        batch.outcomes.append(_deliver_entry(target, entry, batch))
    _confirm(batch, settings.delivery_timeout)
    for outcome in batch.outcomes:
        _settle(outcome, settings, counters, dead, retries)
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


def _walkable(backend: Any) -> bool:
    """Whether the worker walks into ``backend`` instead of calling its ``send``."""
    if not isinstance(backend, RoutingBackend):
        return False
    cls = type(backend)
    return (
        cls.send is RoutingBackend.send and cls.send_to_backends is RoutingBackend.send_to_backends
    )


def _deliver_entry(target: Any, entry: _wire.Entry, batch: _Batch) -> _Outcome:
    outcome = _Outcome(entry)
    only = entry.leaves
    with _wire.delivering(entry.id):
        _walk(target.backends, entry.event, (), only, outcome, batch)
    if only is not None:
        reached = set(outcome.taken) | set(outcome.failures)
        for path in only:
            if not any(_under(found, path) for found in reached):
                outcome.failures[path] = _Failure(
                    "no nested backend has this path any more: it was removed from the "
                    "configuration",
                    final="missing_leaf",
                )
    return outcome


def _under(path: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    return path[: len(prefix)] == prefix


def _walk(
    backends: Mapping[str, Any],
    event: Any,
    path: tuple[str, ...],
    only: tuple[tuple[str, ...], ...] | None,
    outcome: _Outcome,
    batch: _Batch,
) -> None:
    for name, backend in list(backends.items()):
        here = (*path, name)
        if only is not None and not any(
            _under(wanted, here) or _under(here, wanted) for wanted in only
        ):
            continue
        if _walkable(backend):
            try:
                processed = backend.process_event(event)
            except EventEmissionExit:
                batch.counters.incr("filtered")
                continue
            _walk(backend.backends, processed, here, only, outcome, batch)
            continue
        payload = (
            safe_copy(event) if getattr(backend, "mutates_events", True) is not False else event
        )
        try:
            backend.send(payload)
        except Exception as exc:
            outcome.failures[here] = _Failure.raised(exc)
        else:
            outcome.taken.append(here)
            batch.touched.setdefault(here, backend)


def _confirm(batch: _Batch, timeout: float) -> None:
    """Ask every leaf that buffers to store what it took; a leaf that cannot, failed."""
    deadline = time.monotonic() + timeout
    unconfirmed: dict[tuple[str, ...], _Failure] = {}
    for path, backend in batch.touched.items():
        flush = getattr(backend, "flush", None)
        if not callable(flush):
            continue
        left = max(0.0, deadline - time.monotonic())
        try:
            confirmed = flush(left)
        except Exception as exc:
            unconfirmed[path] = _Failure(f"flush() raised {type(exc).__name__}: {exc}")
        else:
            if confirmed is False:
                text = f"it could not confirm it stored the events within {timeout:g} s"
                unconfirmed[path] = _Failure(text)
    if not unconfirmed:
        return
    for outcome in batch.outcomes:
        for path in list(outcome.taken):
            if path in unconfirmed:
                outcome.taken.remove(path)
                outcome.failures[path] = unconfirmed[path]


def _settle(
    outcome: _Outcome,
    settings: WorkerSettings,
    counters: Counters,
    dead: list[tuple[bytes | None, str, str | None]],
    retries: dict[int, list[str]],
) -> None:
    """Turn one entry's failures into dead letters and retries, and count it."""
    if not outcome.failures:
        counters.incr("delivered")
        return
    entry = outcome.entry
    event_json: str | None = None
    retry_paths: list[tuple[str, ...]] = []
    attempt = entry.attempt + 1
    for path, failure in outcome.failures.items():
        where = "/".join(path) or "(top)"
        counters.incr("failed", where)
        if failure.final is not None:
            reason, kind = f"leaf {where} refused the event: {failure.text}", failure.final
        elif attempt <= settings.max_retries:
            retry_paths.append(path)
            _log_failure(where, failure, attempt, settings.max_retries)
            continue
        else:
            reason = f"leaf {where} failed {attempt} time(s); last error: {failure.text}"
            kind = "retries_exhausted"
        event_json = event_json or _wire.encode_event(entry.event)
        text = _wire.encode_entry(entry.id, event_json, leaves=[path], attempt=entry.attempt)
        dead.append((text.encode("utf-8"), reason, None))
        counters.incr("dead_letter_reasons", kind)
    if retry_paths:
        event_json = event_json or _wire.encode_event(entry.event)
        text = _wire.encode_entry(entry.id, event_json, leaves=retry_paths, attempt=attempt)
        retries.setdefault(attempt, []).append(text)
        counters.incr("retried", amount=len(retry_paths))


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


def _log_failure(where: str, failure: _Failure, attempt: int, limit: int) -> None:
    _LOG.warning(
        f"leaf:{where}",
        "Leaf %s failed (%s); retry %d of %d is scheduled",
        where,
        failure.text,
        attempt,
        limit,
        exc_info=failure.error,
    )
