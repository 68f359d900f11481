"""Property-based tests: the worker's tasks against arbitrary messages.

Hypothesis writes the arguments of ``eventtracking.tasks.send_events`` and
``send_event`` as a hostile broker writer could: wrong types and counts, unknown
backend names, junk and forged entries (bad ids, arbitrary leaf paths and attempt
counts, surrogates, deep and large values). Each message is run as Celery runs a task
(``Task.apply()``, on a real redis-server for the broker and the Redis ledger), and
must:

* return within :data:`LIMIT` seconds, in state SUCCESS (acknowledged): a failure
  would be acknowledged uncounted, and no spool trouble is arranged here, so nothing
  may be sent back either;
* be counted: the worker's ``received`` counter grows, and so does one of the
  counters that say what became of the entries;
* leave the worker's holdings flat: after all examples, its open descriptors, its
  counter buckets, its default settings and the size of ``stats()`` are bounded by the
  configuration, not by the number of messages.

The module takes about 20 s. ``FUZZ_EXAMPLES=3000`` runs more examples per task;
``FUZZ_LOGS=1`` keeps the worker's warnings in the report of a failing example.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from celery_support import Broker, make_app
from hang_support import call_within, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from eventtracking import tasks, tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.celery import _wire
from eventtracking.backends.celery import _worker as _celery_worker
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.processors.exceptions import NoBackendEnabled

pytestmark = pytest.mark.slow

#: Seconds one message may take. Each takes milliseconds; this only has to tell a hang
#: from a slow, shared machine.
LIMIT = 20.0
NAME = "fuzzed"

FUZZ = fuzz_settings(150)


class Flaky:
    """A leaf that fails every other event: retries are published to the broker."""

    mutates_events = False

    def __init__(self) -> None:
        self.calls = 0

    def send(self, event: Any) -> None:
        self.calls += 1
        if self.calls % 2:
            msg = "flaky leaf"
            raise ConnectionError(msg)


class Refusing:
    mutates_events = False

    def send(self, event: Any) -> None:
        raise NoBackendEnabled


# -- hostile messages -----------------------------------------------------------------

# Text with everything hypothesis can write, lone surrogates and controls included.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    TEXT,
    st.binary(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"d": [value]}
    return value


HUGE = st.sampled_from(["x" * 2_000_000, deep(50), list(range(20_000))])
# Leaf paths: the worker's own, names it lacks, and values of the wrong type.
PATHS = st.one_of(
    st.sampled_from([["memory"], ["flaky"], ["refusing"], ["nested", "memory"], []]),
    st.lists(TEXT, max_size=3),
    VALUES,
)
IDS = st.one_of(
    st.builds(_wire.new_event_id), TEXT, st.integers(), st.just("A" * 24), st.just("0" * 24)
)


@st.composite
def entry_texts(draw: st.DrawFn) -> Any:
    """One entry: a good one, a forged one, or junk."""
    kind = draw(st.sampled_from(["good", "forged", "junk", "huge"]))
    event: Any = {"name": draw(TEXT), "data": draw(VALUES), "timestamp": draw(VALUES)}
    if kind == "good":
        leaves = draw(st.none() | st.lists(PATHS.filter(lambda p: isinstance(p, list)), max_size=3))
        try:
            return _wire.encode_entry(
                _wire.new_event_id(), _wire.encode_event(event), leaves=leaves
            )
        except Exception:
            return draw(TEXT)
    if kind == "forged":
        raw = {"id": draw(IDS), "event": draw(st.just(event) | VALUES)}
        if draw(st.booleans()):
            raw["leaves"] = draw(st.lists(PATHS, max_size=3) | VALUES)
        if draw(st.booleans()):
            raw["attempt"] = draw(st.integers() | VALUES)
        try:
            return json.dumps(raw, default=repr)
        except (ValueError, RecursionError):
            return draw(TEXT)
    if kind == "huge":
        return draw(HUGE)
    return draw(VALUES)


NAMES = st.one_of(st.just(NAME), st.just(NAME), TEXT, VALUES)
ENTRIES = st.one_of(st.lists(entry_texts(), max_size=6), VALUES, HUGE)


@st.composite
def messages(
    draw: st.DrawFn, body: st.SearchStrategy[Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) as the broker could carry them: mostly two, sometimes not."""
    name, value = draw(NAMES), draw(body)
    shape = draw(st.sampled_from(["args", "args", "args", "kwargs", "odd"]))
    if shape == "args":
        return (name, value), {}
    if shape == "kwargs":
        return (), {"backend_name": name, "entries": value, "processed_event": value}
    return tuple(draw(st.lists(VALUES, max_size=3))), draw(
        st.dictionaries(TEXT, VALUES, max_size=2)
    )


# -- the worker ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("fuzz-worker")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home / "cache"))
        celery_app = make_app(Broker("redis", redis_server.url_for(3)))
        yield celery_app
        celery_app.close()


@pytest.fixture(scope="module")
def router(app: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsyncRoutingBackend]:
    from eventtracking.backends.routing import RoutingBackend

    backend = AsyncRoutingBackend(
        backends={
            "memory": InMemoryBackend(),
            "flaky": Flaky(),
            "refusing": Refusing(),
            "nested": RoutingBackend(backends={"memory": InMemoryBackend()}),
        },
        backend_name=NAME,
        app=app,
        spool_dir=tmp_path_factory.mktemp("fuzz-spool"),
        spool_max_bytes=None,
        retry_backoff=60,
        ledger_grace=600,
    )
    yield backend
    backend.close(1)


@pytest.fixture
def worker(router: AsyncRoutingBackend) -> Iterator[AsyncRoutingBackend]:
    """The router on the default tracker, and quiet logs (unless FUZZ_LOGS is set)."""
    tracker.register_tracker(tracker.Tracker({NAME: router}))
    root = logging.getLogger("eventtracking")
    old = root.level
    root.setLevel(logging.ERROR if os.environ.get("FUZZ_LOGS") else logging.CRITICAL)
    yield router
    root.setLevel(old)


OUTCOMES = ("delivered", "dead_lettered", "retried", "filtered", "spooled")


def totals() -> tuple[int, int]:
    """(received, outcomes) summed over every bucket of the worker's counters."""
    received = outcomes = 0
    for counters in _celery_worker.stats().values():
        received += int(counters.get("received", 0))  # type: ignore[call-overload]
        outcomes += sum(int(counters.get(name, 0)) for name in OUTCOMES)  # type: ignore[call-overload]
        outcomes += sum(counters.get("dropped", {}).values())  # type: ignore[union-attr]
    return received, outcomes


def run(task: Any, message: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
    args, kwargs = message
    received, outcomes = totals()
    outcome = call_within(LIMIT, task.apply, args=args, kwargs=kwargs)
    assert outcome.error is None, outcome.error
    result = outcome.result
    assert result.state == "SUCCESS", (result.state, result.traceback)
    if len(args) == 2 and not kwargs and args[1] in ([], ()):
        return  # a well-formed message of no entries: nothing to count
    after_received, after_outcomes = totals()
    assert after_received > received
    assert after_outcomes > outcomes


@FUZZ
@given(message=messages(ENTRIES))
def test_send_events_survives_any_message(worker: Any, message: Any) -> None:
    """send_events returns in time, acknowledged, and counts what it did."""
    run(tasks.send_events, message)


@FUZZ
@given(message=messages(st.dictionaries(TEXT, VALUES, max_size=5) | VALUES | HUGE))
def test_send_event_survives_any_message(worker: Any, message: Any) -> None:
    """The 4.x send_event returns in time, acknowledged, and counts what it did."""
    run(tasks.send_event, message)


def test_the_worker_holds_no_more_after_thousands_of_messages(
    worker: Any, redis_server: Any
) -> None:
    """After the fuzzing above (and 2,000 more messages in one thread with distinct
    names and leaf paths), the worker holds what its configuration decides: no new
    counter bucket or default settings, as many spool files and broker connections as
    before, and small counters.

    Descriptors are counted by what they open (this module's spool files, and Redis
    connections to its database), so that threads other tests left behind in this
    process do not count.
    """
    directories = (os.environ["XDG_CACHE_HOME"], str(worker.spool.directory))
    admin = redis_server.client()

    def holdings() -> tuple[int, int]:
        files = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                files += os.readlink(f"/proc/self/fd/{fd}").startswith(directories)
        connections = sum(client.get("db") == "3" for client in admin.client_list())
        return files, connections

    def send(i: int) -> None:
        tasks.send_events.apply(args=(f"name-{i}", [f"junk-{i}"]))
        text = _wire.encode_entry(
            _wire.new_event_id(), _wire.encode_event({"name": "x"}), leaves=[[f"p{i}"]]
        )
        tasks.send_events.apply(args=(NAME, [text]))

    send(-1)  # this thread's spool connections, opened once
    files, connections = holdings()
    buckets, defaults = set(_celery_worker._COUNTERS), set(_celery_worker._DEFAULTS)
    for i in range(1_000):
        send(i)
    assert holdings() == (files, connections)
    assert set(_celery_worker._COUNTERS) == buckets
    assert set(_celery_worker._DEFAULTS) == defaults
    for name in (NAME, _celery_worker.UNKNOWN):
        assert len(repr(_celery_worker.stats(name))) < 2_000
