"""Calling code that might hang, with a limit, so that a hang fails a test instead of the run.

The call runs in a daemon thread; when it has not returned after ``limit`` seconds the
test fails, and the thread (which may still be spinning) dies with the process.
:func:`fuzz_settings` are the hypothesis settings of the property tests that drive code
with hostile input this way.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, settings

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


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings for a hostile-input property test: ``FUZZ_EXAMPLES`` examples
    (``default_examples`` when unset), no per-example deadline (``call_within`` bounds
    each call), and no shrinking: a hang leaves a thread spinning until the process
    ends, so the run stops at the first failure rather than shrinking through more."""
    return settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", str(default_examples))),
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        report_multiple_bugs=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,
        ],
    )
