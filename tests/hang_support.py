"""Calling code that might hang, with a limit, so that a hang fails a test instead of the run.

The call runs in a daemon thread; when it has not returned after ``limit`` seconds the
test fails, and the thread (which may still be spinning) dies with the process.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

#: Seconds a call that should take microseconds may take on a loaded CI machine.
GENEROUS = 10.0


class Outcome:
    """What a call did: its ``result``, or the ``error`` it raised."""

    def __init__(self) -> None:
        self.result: Any = None
        self.error: BaseException | None = None


def call_within(limit: float, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
    """Run ``function(*args, **kwargs)``; fail the test if it has not returned in ``limit`` s."""
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.result = function(*args, **kwargs)
        except BaseException as error:  # reported to the caller, which decides
            outcome.error = error

    thread = threading.Thread(target=run, name="call-within", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        name = getattr(function, "__qualname__", repr(function))
        frame = sys._current_frames().get(thread.ident or 0)
        where = "".join(traceback.format_stack(frame)[-12:]) if frame is not None else ""
        msg = f"{name} did not return within {limit} s; it is at:\n{where}"
        raise AssertionError(msg)
    return outcome
