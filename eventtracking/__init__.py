"""Emit semi-structured events, enrich them with context and deliver them to backends.

The public API lives in its 4.x module paths: :mod:`eventtracking.tracker`,
:mod:`eventtracking.locator`, :mod:`eventtracking.backends` and
:mod:`eventtracking.processors`. The names re-exported here are shortcuts.
"""

from eventtracking import tracker as _tracker
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.locator import (
    ContextVarLocator,
    DefaultContextLocator,
    ThreadLocalContextLocator,
)
from eventtracking.tracker import Tracker, emit, get_tracker, register_tracker
from eventtracking.typing import Backend

__all__ = [
    "ContextVarLocator",
    "DefaultContextLocator",
    "ImproperlyConfigured",
    "ThreadLocalContextLocator",
    "Tracker",
    "__version__",
    "emit",
    "get_tracker",
    "register_tracker",
]

__version__ = "5.0.0"


def _stream_backend() -> Backend:
    # Imported when the fallback is first built: importing the tracker loads no backend.
    from eventtracking.backends.stream import StreamBackend

    return StreamBackend()


# The fallback tracker prints with the stream backend. The package, which sits above
# both, hands it over, so that the tracker imports no backend.
_tracker.set_console_backend(_stream_backend)
