"""Tests for eventtracking.backends.stream: JSON lines on standard output or any stream."""

from __future__ import annotations

import contextlib
import io
import json
import threading
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from eventtracking.backends.stream import StreamBackend
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.tracker import Tracker


def event(name: str = "e", **data: Any) -> dict[str, Any]:
    return {
        "name": name,
        "timestamp": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "context": {"user_id": 1},
        "data": data,
    }


def test_writes_one_json_line_per_event_to_the_given_stream() -> None:
    """Each event becomes one line of JSON with the library's encoding rules."""
    out = io.StringIO()
    backend = StreamBackend(out)
    backend.send(event("a", price=Decimal("1.10")))
    backend.send(event("b"))
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "name": "a",
            "timestamp": "2026-01-02T03:04:05+00:00",
            "context": {"user_id": 1},
            "data": {"price": "1.10"},
        },
        {
            "name": "b",
            "timestamp": "2026-01-02T03:04:05+00:00",
            "context": {"user_id": 1},
            "data": {},
        },
    ]
    assert backend.stats() == {"sent": 2}


def test_named_streams_follow_a_later_redirection() -> None:
    """'stdout' (the default) and 'stderr' are looked up at each write, so redirections
    made after construction are followed."""
    to_stdout, to_stderr = StreamBackend(), StreamBackend("stderr")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        to_stdout.send(event("out"))
        to_stderr.send(event("err"))
    assert json.loads(out.getvalue())["name"] == "out"
    assert json.loads(err.getvalue())["name"] == "err"


@pytest.mark.parametrize("bad", ["stdin", "/tmp/events.log", 5, None])
def test_anything_else_is_refused_with_the_valid_choices(bad: Any) -> None:
    """A stream that is neither a name it knows nor writable raises ImproperlyConfigured
    listing the valid choices."""
    with pytest.raises(ImproperlyConfigured, match="'stdout', 'stderr'") as caught:
        StreamBackend(bad)
    assert repr(bad) in str(caught.value)


def test_lines_from_many_threads_never_interleave() -> None:
    """Concurrent sends each produce a whole line."""
    out = io.StringIO()
    backend = StreamBackend(out)
    tracker = Tracker({"out": backend})
    big = "x" * 5000

    def work(index: int) -> None:
        for count in range(50):
            tracker.emit("t", {"index": index, "count": count, "pad": big})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    lines = out.getvalue().splitlines()
    assert len(lines) == 200
    assert {(d["index"], d["count"]) for d in (json.loads(x)["data"] for x in lines)} == {
        (i, c) for i in range(4) for c in range(50)
    }


def test_flush_flushes_the_stream() -> None:
    """Tracker.flush() reaches the stream's own flush."""

    class Recording(io.StringIO):
        flushed = 0

        def flush(self) -> None:
            self.flushed += 1
            super().flush()

    out = Recording()
    tracker = Tracker({"out": StreamBackend(out)})
    assert tracker.flush(1) is True
    assert out.flushed == 1
