"""What every fork-aware object of the library uses to start over in a forked child.

Threads do not survive ``os.fork()``: in the child, a lock that a parent's thread held
stays held for good, a connection is the parent's, a queue holds what the parent still
delivers. Objects that own such state (delivery threads, spool connections, database
clients, context locators, id generators) start over in the child, in two ways at once,
as OpenTelemetry's batch processor does:

* :func:`after_fork_in_child` registers a bound method that Python calls in the child
  right after ``os.fork()``. The object is held weakly: registering never keeps it
  alive, and a collected object is forgotten.
* the object keeps the id of the process that made its state (``self._pid =
  os.getpid()``) and compares it on each use (``self._pid != os.getpid()``): that
  covers forks which run no at-fork hooks (a C extension's ``fork()``). It is written
  inline rather than through a helper here, as it runs on every ``put()`` of a
  delivery: one Python call less per event, and one file less on its path.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["after_fork_in_child"]

# What to call in a forked child: the object, held weakly, and the function to call on
# it, by the id of the weak reference (the objects need not be hashable).
_HOOKS: dict[int, tuple[weakref.ref[Any], Callable[[Any], Any]]] = {}


def after_fork_in_child(method: Callable[[], Any]) -> None:
    """Call the bound ``method`` in the child after every ``os.fork()``, while its object
    lives. Hooks run in the order they were registered."""
    instance: Any = getattr(method, "__self__", None)
    function: Any = getattr(method, "__func__", None)
    if instance is None or function is None:
        msg = f"after_fork_in_child needs a bound method, got {method!r}"
        raise TypeError(msg)
    ref = weakref.ref(instance, _forget)
    _HOOKS[id(ref)] = (ref, function)


def _forget(ref: weakref.ref[Any], hooks: dict[int, Any] = _HOOKS) -> None:
    # The dict is bound at definition: this may run while the interpreter shuts down.
    hooks.pop(id(ref), None)


def _run_hooks_in_child() -> None:
    # A copy: a hook may build or drop objects that register or forget hooks.
    for ref, function in list(_HOOKS.copy().values()):
        instance = ref()
        if instance is not None:
            function(instance)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_hooks_in_child)
