"""Where a tracker keeps its stack of contexts.

A locator decides which code shares a context stack:

* :class:`DefaultContextLocator` — one stack for the whole tracker;
* :class:`ThreadLocalContextLocator` — one stack per thread;
* :class:`ContextVarLocator` — one stack per thread *and* per asyncio task, following
  :mod:`contextvars`: a new task starts from a copy of the stack it was created under,
  and what it enters is never seen outside it. Use it under ASGI.

Every locator returns, from :meth:`get`, a fresh ``OrderedDict`` of name -> context, as
the 4.x locators did. It is a snapshot: change the stack with
:meth:`~eventtracking.tracker.Tracker.enter_context` and
:meth:`~eventtracking.tracker.Tracker.exit_context`, not by editing that dict.

A custom locator written for 4.x, whose ``get()`` returns a mutable mapping the tracker
edits in place, keeps working: the tracker falls back to that protocol when the locator
has no ``get_stack``/``set_stack`` pair.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from eventtracking._contextstack import EMPTY, ContextStack

__all__ = ["ContextVarLocator", "DefaultContextLocator", "ThreadLocalContextLocator"]


class _StackLocator:
    """Common surface: the stack itself, and the 4.x ``get()`` view of it."""

    #: True when several threads may change the same stack, so that the tracker must
    #: serialise its read-push-write of the stack.
    shared = False

    def get_stack(self) -> ContextStack:  # pragma: no cover - overridden
        raise NotImplementedError

    def set_stack(self, stack: ContextStack) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def get(self) -> OrderedDict[str, Mapping[str, Any]]:
        """Return a snapshot of the entered contexts, outermost first."""
        return self.get_stack().as_ordered_dict()


class DefaultContextLocator(_StackLocator):
    """One context stack shared by every thread and task that uses the tracker."""

    shared = True

    def __init__(self) -> None:
        self._stack = EMPTY

    def get_stack(self) -> ContextStack:
        return self._stack

    def set_stack(self, stack: ContextStack) -> None:
        self._stack = stack


class ThreadLocalContextLocator(_StackLocator):
    """One context stack per thread.

    The :class:`threading.local` is created on first use rather than at construction, so
    that concurrency libraries which patch ``threading.local`` (gevent, eventlet) have
    had their chance to do so. Asyncio tasks on one thread share its stack; use
    :class:`ContextVarLocator` to isolate them.
    """

    def __init__(self) -> None:
        self._local: threading.local | None = None

    def _storage(self) -> threading.local:
        local = self._local
        if local is None:
            local = self._local = threading.local()
        return local

    def get_stack(self) -> ContextStack:
        return getattr(self._storage(), "stack", EMPTY)

    def set_stack(self, stack: ContextStack) -> None:
        self._storage().stack = stack


_locator_ids = itertools.count(1)


class ContextVarLocator(_StackLocator):
    """One context stack per :mod:`contextvars` context: isolates threads and tasks.

    The stack stored in the variable is immutable, so a task created while contexts are
    entered starts with exactly those contexts and can never change what its parent, or
    a sibling task, sees.
    """

    def __init__(self) -> None:
        # One variable per locator, so two trackers never share a stack. Context
        # variables are never garbage collected; locators are long-lived, so this is fine.
        self._var: contextvars.ContextVar[ContextStack] = contextvars.ContextVar(
            f"eventtracking_context_{next(_locator_ids)}", default=EMPTY
        )

    def get_stack(self) -> ContextStack:
        return self._var.get()

    def set_stack(self, stack: ContextStack) -> None:
        self._var.set(stack)
