"""Taking one entry down to its leaf backends, and what became of it at each leaf.

:mod:`eventtracking.backends.celery._worker` decodes a message's entries; for each one,
:func:`deliver_entry` walks the nested backends of the target routing backend (running
the processors of nested routers on the way down) and records, by leaf path, which
leaves took the event and which failed and why (:func:`deliver_flat` does the same
for a tree of leaves only, and records nothing but the entry when every leaf took
it). :func:`confirm` asks the leaves that buffer to store what they took, and
:func:`settle` turns the failures into retries (for that leaf only) or dead letters.

Leaf paths in an entry (``leaves``) are chosen by whoever wrote the message: counters
are kept by the paths of the worker's own tree only. The paths of an entry that name
no leaf are counted once, under ``failed['?']``, and become one dead letter together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventtracking._copy import safe_copy
from eventtracking._util.escape import escape
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters
from eventtracking.backends.celery import _wire
from eventtracking.processors.exceptions import (
    EventEmissionExit,
    NoBackendEnabled,
    NoTransformerImplemented,
)
from eventtracking.routing import Node, plan

__all__ = [
    "UNKNOWN_PATH",
    "Batch",
    "Failure",
    "Outcome",
    "RetryLimit",
    "Taken",
    "confirm",
    "deliver_entry",
    "deliver_flat",
    "settle",
]

#: The ``failed`` counter of leaf paths that name no leaf of the worker's tree.
UNKNOWN_PATH = "?"
# Paths that name no leaf shown in a dead letter's reason; the rest are counted.
_PATHS_SHOWN = 5

_LOG = RateLimitedLogger(logging.getLogger("eventtracking.tasks"))

_PERMANENT = (NoTransformerImplemented, NoBackendEnabled)
_DETAIL_LIMIT = 2_000


class RetryLimit(Protocol):
    """What :func:`settle` needs of the worker's settings (``WorkerSettings`` is one)."""

    @property
    def max_retries(self) -> int:
        """Retries of a failing leaf before its event becomes a dead letter."""


@dataclass(frozen=True)
class Failure:
    """Why a leaf does not hold an event: ``text`` for people; ``final`` names the kind
    of dead letter it becomes at once, or is None when a retry may succeed."""

    text: str
    final: str | None = None
    error: BaseException | None = None

    @classmethod
    def raised(cls, error: BaseException) -> Failure:
        try:
            message = str(error)
        except Exception:
            message = "<its message cannot be shown>"
        text = f"{type(error).__name__}: {escape(message, _DETAIL_LIMIT)}"
        final = type(error).__name__ if isinstance(error, _PERMANENT) else None
        return cls(text, final, error)


class Outcome:
    """What became of one entry: failures by leaf path, the leaves that took it, and
    the paths it named that no leaf has (``missing``).

    It keeps the entry's text, its id and attempt count, but not its event: a message's
    events are freed one by one as they are delivered, rather than all living until its
    end, which made the garbage collector scan the whole worker every few messages (a
    fifth of a worker's time). :meth:`event` reads the event again, for a retry or a
    dead letter.
    """

    __slots__ = ("attempt", "failures", "id", "missing", "source", "taken")

    def __init__(self, source: str | bytes, event_id: str, attempt: int) -> None:
        self.source = source
        self.id = event_id
        self.attempt = attempt
        self.failures: dict[tuple[str, ...], Failure] = {}
        self.taken: list[tuple[str, ...]] = []
        # Replaced (never changed in place) when the entry names paths no leaf has.
        self.missing: Sequence[tuple[str, ...]] = ()

    def event(self) -> dict[str, Any]:
        """The entry's event as it arrived (before any leaf or processor saw it)."""
        return _wire.decode_entry(self.source).event


#: An entry that every leaf of a flat tree took (see :func:`deliver_flat`): its text
#: alone, which :func:`confirm` reads again into an :class:`Outcome` only if a leaf then
#: cannot confirm.
Taken = str | bytes


# The last top-level plan: the mapping, its (name, backend) pairs then, and the steps.
_last_top: tuple[Mapping[str, Any], tuple[tuple[str, Any], ...], list[Node]] | None = None


class Batch:
    """The entries of one message on their way down, and the leaves they reached."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.outcomes: list[Outcome | Taken] = []
        # The top level's steps when none of them is walked into (see flat()), and
        # whether deliver_flat() had every one of them take an event.
        self.flat_steps: list[_Step] | None = None
        self.flat_took = False
        # Leaves that took events, by path: each is asked to confirm once per batch.
        self.touched: dict[tuple[str, ...], Any] = {}
        # What _walk does at each level of the tree, worked out once per batch rather
        # than once per event: by id of the backends mapping and path.
        self._plans: dict[tuple[int, tuple[str, ...]], list[_Step]] = {}
        # The top level's plan, and the mapping it is for: found without a key per event.
        self._top: tuple[Any, list[_Step]] | None = None

    def plan(self, backends: Mapping[str, Any], path: tuple[str, ...]) -> list[_Step]:
        """The nested backends of one level of the tree, as the router sees them
        (:func:`eventtracking.routing.plan`): path, backend, whether to walk into it,
        whether it gets its own copy of the event."""
        key = (id(backends), path)
        steps = self._plans.get(key)
        if steps is None:
            steps = self._plans[key] = plan(backends, path)
        return steps

    def top(self, backends: Mapping[str, Any]) -> list[_Step]:
        """:meth:`plan` for the top level (path ``()``), kept from one message to the next
        while the mapping is the same object and holds the same backends."""
        global _last_top
        top = self._top
        if top is not None and top[0] is backends:
            return top[1]
        items = tuple(backends.items())
        last = _last_top
        if last is not None and last[0] is backends and last[1] == items:
            steps = last[2]
        else:
            steps = plan(backends, ())
            _last_top = (backends, items, steps)
        self._plans[(id(backends), ())] = steps
        self._top = (backends, steps)
        return steps

    def flat(self, backends: Mapping[str, Any]) -> list[_Step] | None:
        """The top level's steps when every one of them is a leaf, else None."""
        steps = self.top(backends)
        if any(walk for _path, _backend, walk, _copy in steps):
            return None
        self.flat_steps = steps
        return steps


_Step = Node


_CURRENT_ID = _wire.current_event_id
_SET_ID = _CURRENT_ID.set


def deliver_entry(
    target: Any,
    event_id: str,
    event: dict[str, Any],
    only: tuple[tuple[str, ...], ...] | None,
    attempt: int,
    source: str | bytes,
    batch: Batch,
) -> Outcome:
    """Deliver one entry (its fields as :func:`eventtracking.backends.celery._wire.read_entry` gives
    them, read from ``source``) to the leaves of ``target``."""
    outcome = Outcome(source, event_id, attempt)
    # The context variable by hand rather than through _wire.delivering(): a context
    # manager costs about 1.5 us, a fifth of the worker's time per event.
    token = _CURRENT_ID.set(event_id)
    try:
        backends = target.backends
        top = batch._top
        steps = top[1] if top is not None and top[0] is backends else batch.top(backends)
        _walk(steps, event, only, outcome, batch)
    finally:
        _CURRENT_ID.reset(token)
    if only is not None:
        reached = set(outcome.taken) | set(outcome.failures)
        outcome.missing = [
            path for path in only if not any(_under(found, path) for found in reached)
        ]
    return outcome


def deliver_flat(
    steps: list[_Step],
    event_id: str,
    event: dict[str, Any],
    attempt: int,
    source: Taken,
    batch: Batch,
) -> Outcome | Taken:
    """:func:`deliver_entry` for an entry that names no leaf paths, to a tree whose top
    level holds leaves only (``steps`` from :meth:`Batch.flat`), as most are.

    When every leaf takes the event, it returns the entry's text (:data:`Taken`)
    instead of an :class:`Outcome`: a worker's time per event is mostly its own objects
    and calls. It leaves :data:`~eventtracking.backends.celery._wire.current_event_id`
    set to the event's id: the caller puts it back once per message, rather than this
    once per event.
    """
    failures: dict[tuple[str, ...], Failure] | None = None
    _SET_ID(event_id)
    for here, backend, _walk, copy in steps:
        try:
            backend.send(safe_copy(event) if copy else event)
        except Exception as exc:
            if failures is None:
                failures = {}
            failures[here] = Failure.raised(exc)
    if failures is None:
        batch.flat_took = True
        return source
    outcome = Outcome(source, event_id, attempt)
    outcome.failures = failures
    for here, backend, _walk, _copy in steps:
        if here not in failures:
            outcome.taken.append(here)
            if here not in batch.touched:
                batch.touched[here] = backend
    return outcome


def _under(path: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    return path[: len(prefix)] == prefix


def _walk(
    steps: list[_Step],
    event: Any,
    only: tuple[tuple[str, ...], ...] | None,
    outcome: Outcome,
    batch: Batch,
) -> None:
    for here, backend, walk, copy in steps:
        if only is not None and not any(
            _under(wanted, here) or _under(here, wanted) for wanted in only
        ):
            continue
        if walk:
            try:
                processed = backend.process_event(event)
            except EventEmissionExit:
                batch.counters.incr("filtered")
                continue
            _walk(batch.plan(backend.backends, here), processed, only, outcome, batch)
            continue
        try:
            backend.send(safe_copy(event) if copy else event)
        except Exception as exc:
            outcome.failures[here] = Failure.raised(exc)
        else:
            outcome.taken.append(here)
            if here not in batch.touched:
                batch.touched[here] = backend


def confirm(batch: Batch, timeout: float) -> None:
    """Ask every leaf that buffers to store what it took; a leaf that cannot, failed."""
    if batch.flat_took and batch.flat_steps is not None:
        for here, backend, _walk, _copy in batch.flat_steps:
            if here not in batch.touched:
                batch.touched[here] = backend
    deadline = time.monotonic() + timeout
    unconfirmed: dict[tuple[str, ...], Failure] = {}
    for path, backend in batch.touched.items():
        # What isinstance(backend, SupportsFlush) checks, without the runtime protocol's
        # walk over its members: 10 us a leaf, on every message.
        flush = getattr(backend, "flush", None)
        if flush is None:
            continue
        left = max(0.0, deadline - time.monotonic())
        try:
            confirmed = flush(left)
        except Exception as exc:
            unconfirmed[path] = Failure(f"flush() raised {type(exc).__name__}: {exc}")
        else:
            if confirmed is False:
                text = f"it could not confirm it stored the events within {timeout:g} s"
                unconfirmed[path] = Failure(text)
    if not unconfirmed:
        return
    outcomes = batch.outcomes
    for index, outcome in enumerate(outcomes):
        if not isinstance(outcome, Outcome):
            event_id, _event, _only, attempt, _extra = _wire.read_entry(outcome)
            outcome = outcomes[index] = Outcome(outcome, event_id, attempt)
            outcome.taken.extend(here for here, *_rest in batch.flat_steps or ())
        assert isinstance(outcome, Outcome)
        for path in list(outcome.taken):
            if path in unconfirmed:
                outcome.taken.remove(path)
                outcome.failures[path] = unconfirmed[path]


def settle(
    outcome: Outcome,
    settings: RetryLimit,
    counters: Counters,
    dead: list[tuple[bytes | None, str, str | None]],
    retries: dict[int, list[str]],
) -> None:
    """Turn one entry's failures into dead letters and retries, and count it."""
    if not outcome.failures and not outcome.missing:
        counters.incr("delivered")
        return
    event_json: str | None = None
    retry_paths: list[tuple[str, ...]] = []
    attempt = outcome.attempt + 1
    if outcome.missing:
        event_json = _wire.encode_event(outcome.event())
        text = _wire.encode_entry(
            outcome.id, event_json, leaves=outcome.missing, attempt=outcome.attempt
        )
        dead.append((text.encode("utf-8"), _missing_reason(outcome.missing), None))
        counters.incr("failed", UNKNOWN_PATH)
        counters.incr("dead_letter_reasons", "missing_leaf")
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
        event_json = event_json or _wire.encode_event(outcome.event())
        text = _wire.encode_entry(outcome.id, event_json, leaves=[path], attempt=outcome.attempt)
        dead.append((text.encode("utf-8"), reason, None))
        counters.incr("dead_letter_reasons", kind)
    if retry_paths:
        event_json = event_json or _wire.encode_event(outcome.event())
        text = _wire.encode_entry(outcome.id, event_json, leaves=retry_paths, attempt=attempt)
        retries.setdefault(attempt, []).append(text)
        counters.incr("retried", amount=len(retry_paths))


def _missing_reason(paths: Sequence[tuple[str, ...]]) -> str:
    shown = ", ".join(escape("/".join(path), 100) for path in paths[:_PATHS_SHOWN])
    if len(paths) == 1:
        return (
            f"leaf {shown} refused the event: no nested backend has this path any more: it "
            "was removed from the configuration"
        )
    more = f" and {len(paths) - _PATHS_SHOWN} more" if len(paths) > _PATHS_SHOWN else ""
    return (
        f"leaves {shown}{more} refused the event: no nested backend has these paths any "
        "more: they were removed from the configuration"
    )


def _log_failure(where: str, failure: Failure, attempt: int, limit: int) -> None:
    _LOG.warning(
        f"leaf:{where}",
        "Leaf %s failed (%s); retry %d of %d is scheduled",
        where,
        failure.text,
        attempt,
        limit,
        exc_info=failure.error,
    )
