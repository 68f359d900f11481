"""Where a tracker keeps its stack of contexts.

A locator decides which code shares a context stack: one for the whole tracker
(:class:`DefaultContextLocator`), one per thread (:class:`ThreadLocalContextLocator`),
or one per :mod:`contextvars` context, so per thread and asyncio task
(:class:`ContextVarLocator`, for ASGI). Each stores an immutable
:class:`~eventtracking._contextstack.ContextStack` behind four methods, the protocol
the tracker and the Django middleware use (:class:`StackLocator`); ``get()`` gives
4.x code its mutable mapping, a live :class:`ContextView`; :func:`as_stack_locator`
adapts a 4.x locator that has only ``get()``. The rules are in ``docs/design.rst``
("Contexts").
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, Protocol, runtime_checkable

from eventtracking._contextstack import EMPTY, ContextStack
from eventtracking._util.fork import after_fork_in_child
from eventtracking.exceptions import ConfigurationTypeError

__all__ = [
    "ContextVarLocator",
    "ContextView",
    "DefaultContextLocator",
    "MappingLocatorAdapter",
    "StackLocator",
    "ThreadLocalContextLocator",
    "as_stack_locator",
    "checked_context",
    "stack_reader",
]


@runtime_checkable
class StackLocator(Protocol):
    """What the tracker and the middleware need from a locator."""

    def get_stack(self) -> ContextStack:
        """The calling code's current stack."""

    def set_stack(self, stack: ContextStack) -> None:
        """Make ``stack`` the calling code's current stack."""

    def push(self, name: str, context: Mapping[str, Any]) -> None:
        """Enter ``context`` as the innermost frame called ``name``."""

    def pop(self, name: str) -> None:
        """Leave the innermost frame called ``name``; KeyError when there is none."""


def checked_context(name: str, context: Any) -> dict[str, Any]:
    """A one-level copy of ``context``, to be entered as ``name``.

    Raises TypeError, naming the context, when ``context`` is not a mapping.
    """
    if type(context) is not dict and not isinstance(context, Mapping):
        msg = (
            f"Context {name!r} must be a mapping of keys to values, got "
            f"{type(context).__name__}: {context!r}"
        )
        raise TypeError(msg)
    return dict(context)


class ContextView(MutableMapping[str, Any]):
    """The entered contexts of a locator as a mutable mapping of name -> context.

    It is live: every read looks at the stack the locator holds for the calling thread
    or task at that moment, and gives each name's innermost context, outermost name
    first. ``view[name] = ctx`` enters a one-level copy of ``ctx`` (TypeError when it is
    not a mapping) and ``del view[name]`` leaves the innermost ``name`` (KeyError when
    none is entered), like ``enter_context`` and ``exit_context``. :meth:`copy` returns
    a snapshot as an ``OrderedDict``.
    """

    __slots__ = ("_locator",)

    def __init__(self, locator: StackLocator) -> None:
        self._locator = locator

    def __getitem__(self, name: str) -> Any:
        for frame_name, context in reversed(self._locator.get_stack().frames):
            if frame_name == name:
                return context
        raise KeyError(name)

    def __setitem__(self, name: str, context: Any) -> None:
        self._locator.push(name, checked_context(name, context))

    def __delitem__(self, name: str) -> None:
        self._locator.pop(name)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._locator.get_stack().effective()])

    def __len__(self) -> int:
        return len(self._locator.get_stack().effective())

    def __contains__(self, name: object) -> bool:
        return any(frame_name == name for frame_name, _ in self._locator.get_stack().frames)

    def copy(self) -> OrderedDict[str, Any]:
        """A snapshot of the entered contexts, which later changes do not affect."""
        return self._locator.get_stack().as_ordered_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.copy())!r})"


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

    def get(self) -> ContextView:
        """The entered contexts as a live, mutable mapping: see :class:`ContextView`."""
        return ContextView(self)


class DefaultContextLocator(_StackLocator):
    """One context stack shared by every thread and task that uses the tracker."""

    def __init__(self) -> None:
        self._stack = EMPTY
        # Every thread reads, pushes and writes back the one stack: without the lock,
        # two threads entering at once would lose a frame, and leaving it would then
        # raise KeyError.
        self._lock = threading.Lock()
        after_fork_in_child(self._after_fork_in_child)

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


class MappingLocatorAdapter:
    """A 4.x-style locator seen through the stack protocol.

    A 4.x locator has only ``get()``, returning a mutable mapping of name -> context
    that callers edit in place. The adapter keeps the state in that mapping, so code
    that still edits it directly and code that goes through the adapter agree. The
    mapping holds one context per name: :meth:`push` replaces a re-entered name's
    context and moves it innermost. :meth:`get_stack` builds a new stack on every call,
    since 4.x code may change the contexts in place.
    """

    __slots__ = ("locator",)

    def __init__(self, locator: Any) -> None:
        #: The wrapped 4.x-style locator.
        self.locator = locator

    def get(self) -> MutableMapping[str, Any]:
        """The wrapped locator's own mapping."""
        located: MutableMapping[str, Any] = self.locator.get()
        return located

    def get_stack(self) -> ContextStack:
        return ContextStack(tuple(self.locator.get().items()))

    def set_stack(self, stack: ContextStack) -> None:
        located = self.locator.get()
        wanted = stack.effective()
        if [(name, id(ctx)) for name, ctx in located.items()] == [
            (name, id(ctx)) for name, ctx in wanted
        ]:
            return
        located.clear()
        located.update(wanted)

    def push(self, name: str, context: Mapping[str, Any]) -> None:
        located = self.locator.get()
        located.pop(name, None)
        located[name] = context

    def pop(self, name: str) -> None:
        del self.locator.get()[name]


_STACK_OF = operator.attrgetter("_stack")


def stack_reader(stacks: StackLocator) -> Callable[[], ContextStack]:
    """What reads ``stacks``'s current stack: its ``get_stack``, or, for the locators
    shipped here (unless a subclass overrides ``get_stack``), a reader of the same stack
    that runs no Python code, since the tracker reads the stack on every emit."""
    method = getattr(type(stacks), "get_stack", None)
    if method is DefaultContextLocator.get_stack:
        return functools.partial(_STACK_OF, stacks)
    if method is ContextVarLocator.get_stack and isinstance(stacks, ContextVarLocator):
        return stacks._var.get
    return stacks.get_stack


def as_stack_locator(locator: Any) -> StackLocator:
    """``locator`` itself when it offers the stack protocol, else a 4.x adapter of it.

    Raises :class:`~eventtracking.exceptions.ConfigurationTypeError` (a TypeError) when
    ``locator`` offers neither the protocol nor ``get()``.
    """
    if all(
        callable(getattr(locator, method, None))
        for method in ("get_stack", "set_stack", "push", "pop")
    ):
        stacks: StackLocator = locator  # it has the four methods, checked above
        return stacks
    if callable(getattr(locator, "get", None)):
        return MappingLocatorAdapter(locator)
    msg = (
        f"context_locator {locator!r} is not a locator: it needs get_stack(), set_stack(), "
        "push() and pop() (see eventtracking.locator), or a 4.x-style get() returning a "
        "mutable mapping of name -> context."
    )
    raise ConfigurationTypeError(msg)
