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
has no ``get_stack``, ``push`` and ``pop`` methods.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from eventtracking._contextstack import EMPTY, ContextStack

__all__ = ["ContextVarLocator", "DefaultContextLocator", "ThreadLocalContextLocator"]


class _StackLocator:
    """Common surface: the stack itself, and the 4.x ``get()`` view of it."""

    def get_stack(self) -> ContextStack:  # pragma: no cover - overridden
        raise NotImplementedError

    def set_stack(self, stack: ContextStack) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def push(self, name: str, context: Mapping[str, Any]) -> None:
        """Enter ``context`` as the innermost frame called ``name``."""
        self.set_stack(self.get_stack().push(name, context))

    def pop(self, name: str) -> None:
        """Leave the innermost frame called ``name``; KeyError when there is none."""
        self.set_stack(self.get_stack().pop(name))

    def get(self) -> OrderedDict[str, Mapping[str, Any]]:
        """Return a snapshot of the entered contexts, outermost first."""
        return self.get_stack().as_ordered_dict()


class DefaultContextLocator(_StackLocator):
    """One context stack shared by every thread and task that uses the tracker."""

    def __init__(self) -> None:
        self._stack = EMPTY
        # Every thread reads, pushes and writes back the one stack: without the lock,
        # two threads entering at once would lose a frame, and leaving it would then
        # raise KeyError.
        self._lock = threading.Lock()
        _DEFAULT_LOCATORS.add(self)

    def _after_fork_in_child(self) -> None:
        # A thread of the parent may have held the lock at the fork; it does not exist
        # in the child, so the lock would never be released.
        self._lock = threading.Lock()

    def get_stack(self) -> ContextStack:
        return self._stack

    def set_stack(self, stack: ContextStack) -> None:
        self._stack = stack

    def push(self, name: str, context: Mapping[str, Any]) -> None:
        # acquire/release rather than `with`: half the cost, on every enter.
        self._lock.acquire()
        try:
            self._stack = self._stack.push(name, context)
        finally:
            self._lock.release()

    def pop(self, name: str) -> None:
        self._lock.acquire()
        try:
            self._stack = self._stack.pop(name)
        finally:
            self._lock.release()


_DEFAULT_LOCATORS: weakref.WeakSet[DefaultContextLocator] = weakref.WeakSet()


def _reset_default_locators_in_child() -> None:
    for locator in list(_DEFAULT_LOCATORS):
        locator._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_default_locators_in_child)


class ThreadLocalContextLocator(_StackLocator):
    """One context stack per thread.

    The :class:`threading.local` is created on first use rather than at construction, so
    that concurrency libraries which patch ``threading.local`` (gevent, eventlet) have
    had their chance to do so. Asyncio tasks on one thread share its stack; use
    :class:`ContextVarLocator` to isolate them.
    """

    def __init__(self) -> None:
        self._local: threading.local | None = None
        self._create_lock = threading.Lock()

    def _storage(self) -> threading.local:
        local = self._local
        if local is None:
            # Two threads' first uses must not make one each: the stack one of them
            # set on the discarded storage would be lost.
            with self._create_lock:
                if self._local is None:
                    self._local = threading.local()
                local = self._local
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
