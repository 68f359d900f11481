"""Emit semi-structured events, enrich them with context and deliver them to backends.

The public API lives in its 4.x module paths: :mod:`eventtracking.tracker`,
:mod:`eventtracking.locator`, :mod:`eventtracking.backends` and
:mod:`eventtracking.processors`. The names re-exported here are shortcuts.
"""

from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.locator import (
    ContextVarLocator,
    DefaultContextLocator,
    ThreadLocalContextLocator,
)
from eventtracking.tracker import Tracker, emit, get_tracker, register_tracker

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
