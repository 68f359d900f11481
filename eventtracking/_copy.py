"""Copying events for processors and backends that may change them.

:func:`copy.deepcopy` is slow for the JSON-like trees that events are (it keeps a memo
of every object and dispatches on every leaf) and it raises on values that refuse to be
copied, which 4.x let escape into the caller. This module copies dicts, lists and tuples
by hand, takes immutable leaves along with a C-level shallow copy instead of a call per
leaf, and hands only other objects to :func:`copy.deepcopy`. A shared, read-only
:class:`~eventtracking._contextstack.FrozenContext` comes out as a plain dict. A value
that cannot be copied is shared rather than lost, and counted.

Three entry points:

* :func:`safe_copy` makes one copy;
* :func:`copy_one` makes one copy of each event from one place, through the compiled
  copier of the last event's shape;
* :class:`Copier` makes as many independent copies of one event as a fan-out needs:
  the first walks the event and records a *plan*, the others replay it (compiled once
  seen on a few events), as ``docs/design.rst`` describes.

Why one module, past 450 lines: the walk, the plans it records and their
compiled form share one representation (tuples whose replay functions are told apart
by identity). Split in two, each half would have to read the other's private names.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from eventtracking._contextstack import IMMUTABLE_TYPES, FrozenContext, plain_context
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters

__all__ = ["COPY_STATS", "Copier", "copy_one", "safe_copy"]

LOG = logging.getLogger(__name__)
_RATE_LIMITED = RateLimitedLogger(LOG)

#: How many values could not be copied and were shared instead.
COPY_STATS = Counters("uncopyable")

_IMMUTABLE = IMMUTABLE_TYPES

# Beyond this depth the hand-written copy hands over to deepcopy, whose memo copes with
# cycles; JSON-like event data is never this deep.
_MAX_DEPTH = 64

_dict_copy = dict.copy
_list_copy = list.copy
# True when every type in an iterable of types is immutable: one C-level pass.
_only_immutable = _IMMUTABLE.issuperset

# The walk's memo maps id(container) -> its copy. This key, never an id, marks a walk
# that a plan cannot describe (see _walk).
_NOT_REPLAYABLE = 0


def safe_copy(value: Any) -> Any:
    """Return a deep copy of ``value``; never raises.

    Containers are copied, immutable scalars are shared. A value that refuses to be
    copied is shared as it is, logged at a limited rate and counted in
    ``COPY_STATS['uncopyable']``.
    """
    try:
        return _walk(value, 0, {})[0]
    except RecursionError:
        return _deepcopy(value)


def copy_one(value: Any, hint: _Compiled | None) -> tuple[Any, _Compiled | None]:
    """Return one deep copy of ``value``, and the hint for the next value from the same
    place (see :class:`Copier`); never raises.

    For a router that makes a single copy of each event. When ``value`` has the shape of
    ``hint``, the compiled check-and-copy is all it runs: no :class:`Copier`, partial or
    list around it, which cost almost as much as the copy itself.
    """
    if hint is not None:
        checked = hint.checked
        if checked is not None:
            try:
                return checked(value), hint
            except Exception:
                pass  # another shape (or a check that raised): learn this one
    copier = Copier(value)
    return copier.copy(), copier.hint


class Copier:
    """Independent deep copies of one value, as many as asked for; never raises.

    ``copy()`` returns a new copy on every call. The first walks ``value`` like
    :func:`safe_copy` and remembers where its containers are; later ones rebuild just
    those containers. The value must not change between copies (the router copies
    before it hands the original to anyone who may change it). If it changed shape
    anyway, the copy falls back to a walk.

    ``hint`` is the :attr:`hint` of a copier used for an earlier value: when this value
    has the same shape, which a compiled check confirms, even the first copy needs no
    walk.
    """

    __slots__ = ("_many", "copy", "hint", "value")

    def __init__(self, value: Any, hint: _Compiled | None = None) -> None:
        self.value = value
        #: The compiled copier of this value's shape, once known: offer it to the next
        #: copier of a value from the same place.
        self.hint = hint
        self._many: Callable[[Any, int], list[Any]] | None = None
        #: Make a copy. An attribute, swapped for cheaper functions as the copier learns
        #: the value's shape: the fan-out calls it once per backend.
        self.copy: Callable[[], Any] = self._first_copy

    def _first_copy(self) -> Any:
        value = self.value
        hint = self.hint
        checked = hint.checked if hint is not None else None
        if checked is not None:
            try:
                copied = checked(value)
            except Exception:
                # Another shape (or a check that raised): walk it.
                self.hint = None
            else:
                self.copy = functools.partial(hint.replay, value)  # type: ignore[union-attr]
                self._many = hint.many  # type: ignore[union-attr]
                return copied
        memo: dict[int, Any] = {}
        try:
            copied, plan = _walk(value, 0, memo)
        except RecursionError:
            copied, plan = _deepcopy(value), None
            memo[_NOT_REPLAYABLE] = True
        if _NOT_REPLAYABLE in memo:
            # Shared containers, or nesting past _MAX_DEPTH: a plan cannot say it.
            self.copy = functools.partial(safe_copy, value)
            return copied
        # An immutable value (plan None) is its own copy.
        compiled = _compiled_for(_SHARE if plan is None else plan)
        self.hint = compiled if compiled.checked is not None else None
        self.copy = functools.partial(compiled.replay, value)
        self._many = compiled.many
        return copied

    def copies(self, count: int) -> list[Any]:
        """Return ``count`` new copies at once (cheaper than ``count`` calls of copy)."""
        if count <= 0:
            return []
        first = self.copy()
        many = self._many
        if many is None or count == 1:
            return [first, *(self.copy() for _ in range(count - 1))]
        return [first, *many(self.value, count - 1)]


def _walk(value: Any, depth: int, memo: dict[int, Any]) -> tuple[Any, Any]:
    """Copy ``value``; return the copy and the plan to make the same copy again.

    The plan is None when the value is shared rather than copied (see _replay_dict).
    """
    kind = type(value)
    if kind in _IMMUTABLE:
        return value, None
    # The kind is at hand: only a shared context pays for the call.
    if kind is FrozenContext and plain_context(value):
        return _dict_copy(value), _FLAT_DICT
    if depth > _MAX_DEPTH:
        memo[_NOT_REPLAYABLE] = True
        return _deepcopy(value), None
    marker = id(value)
    done = memo.get(marker)
    if done is not None:
        # A container reached a second time (shared, or through a cycle) is copied once,
        # as deepcopy's memo does; without this a list that holds itself twice would
        # take 2**_MAX_DEPTH steps. A plan is a tree and cannot say "that copy again".
        memo[_NOT_REPLAYABLE] = True
        return done, None
    depth += 1
    if kind is dict or kind is FrozenContext:
        # The C-level shallow copy brings every immutable child along; only containers
        # are replaced by copies of their own.
        copied: Any = _dict_copy(value)
        memo[marker] = copied
        children: Any = value.items()
    elif kind is list:
        copied = _list_copy(value)
        memo[marker] = copied
        children = enumerate(value)
    elif kind is tuple:
        return _walk_tuple(value, depth, memo)
    else:
        other = _deepcopy(value)
        # Shared by deepcopy (a function, a class) or uncopyable: share it on replay too,
        # without a second warning.
        return (value, None) if other is value else (other, _DEEP)
    flat: list[tuple[Any, Any]] = []
    nested: list[tuple[Any, Any]] = []
    others = []
    for key, item in children:
        item_kind = type(item)
        if item_kind in _IMMUTABLE:
            others.append(key)
            continue
        # A container of immutable values is copied by one C call, outside the memo: it
        # holds no container, so it cannot be part of a cycle.
        if item_kind is dict and _only_immutable(map(type, item.values())):
            copied[key] = _dict_copy(item)
            flat.append((key, _dict_copy))
        elif item_kind is list and _only_immutable(map(type, item)):
            copied[key] = _list_copy(item)
            flat.append((key, _list_copy))
        else:
            copied[key], child = _walk(item, depth, memo)
            if child is not None:
                nested.append((key, child))
            else:
                # Shared (deepcopy keeps it, or it is uncopyable): the plan cannot
                # check such a value, so this shape is replayed but never matched.
                others.append(_UNCHECKABLE)
    rebuild = _replay_dict if kind is not list else _replay_list
    if not flat and not nested:
        return copied, _FLAT_DICT if rebuild is _replay_dict else _FLAT_LIST
    return copied, (rebuild, tuple(flat), tuple(nested), tuple(others))


def _walk_tuple(value: tuple[Any, ...], depth: int, memo: dict[int, Any]) -> tuple[Any, Any]:
    # Registered after it is built: a cycle through a tuple passes through a list or a
    # dict, which the memo already holds.
    parts = [_walk(item, depth, memo) for item in value]
    if all(
        child is None and part is item for (part, child), item in zip(parts, value, strict=True)
    ):
        # Only immutable (or shared) items: the tuple itself is immutable, and shared.
        return value, None
    result = memo[id(value)] = tuple(part for part, _ in parts)
    return result, (_replay_tuple, tuple(child for _, child in parts), ())


# A plan is ``(rebuild, flat, nested, others)``, and ``rebuild(value, flat, nested)``
# makes a copy of ``value``. For a dict or a list, the C-level shallow copy brings every
# immutable child along; ``flat`` lists the (key or index, copy function) of the children
# that are containers of immutables only, one C call each, ``nested`` the (key or index,
# plan) of the other containers, and ``others`` the keys or indexes of the immutable
# children (what a compiled check of the shape verifies; None where there is none).
def _replayer(shallow_copy: Callable[[Any], Any]) -> Callable[[Any, Any, Any], Any]:
    """The replay of a dict or list plan, whose C-level ``shallow_copy`` brings every
    immutable child along; only the containers are copied again."""

    def replay(value: Any, flat: Any, nested: Any) -> Any:
        copied = shallow_copy(value)
        for key, copy_function in flat:
            copied[key] = copy_function(value[key])
        for key, (rebuild, child_flat, child_nested, _) in nested:
            copied[key] = rebuild(value[key], child_flat, child_nested)
        return copied

    return replay


# Two functions, not one with a flag: a plan tells dicts from lists by which it holds.
_replay_dict = _replayer(_dict_copy)
_replay_list = _replayer(_list_copy)


def _replay_tuple(value: Any, children: Any, _nested: Any) -> Any:
    # zip(strict=True) raises if the tuple is no longer the one planned.
    return tuple(
        item if child is None else child[0](item, child[1], child[2])
        for item, child in zip(value, children, strict=True)
    )


def _replay_deep(value: Any, _flat: Any, _nested: Any) -> Any:
    return _deepcopy(value)


def _replay_share(value: Any, _flat: Any, _nested: Any) -> Any:
    return value


_DEEP = (_replay_deep, (), (), None)
_SHARE = (_replay_share, (), (), None)
_FLAT_DICT = (_replay_dict, (), (), ())
_FLAT_LIST = (_replay_list, (), (), ())
# Stands in ``others`` for a child the plan shares without being able to check it.
_UNCHECKABLE = object()


# -- compiled plans ---------------------------------------------------------------------
#
# A Python function written for one plan does the same work as _replay_dict and friends
# without their loops, tuple unpacking and calls: about 40% less per copy. Events from
# one call site share a plan, so a plan is compiled once it has been seen a few times;
# shapes that never repeat (keys made of ids, say) are replayed without compiling, and
# both tables are bounded.

_COMPILE_AFTER = 3
_MAX_COMPILED = 256
_MAX_SEEN = 4096


@dataclasses.dataclass(eq=False, slots=True)
class _Compiled:
    """How to copy values of one shape: ``replay(value)`` makes a copy, assuming the
    shape; ``checked(value)``, when not None, first checks that ``value`` has exactly
    that shape (every other value immutable) and raises if not."""

    replay: Callable[[Any], Any]
    checked: Callable[[Any], Any] | None = None
    #: ``many(value, n)``: a list of ``n`` copies made in one loop.
    many: Callable[[Any, int], list[Any]] | None = None


_compiled: dict[Any, _Compiled] = {}
_seen: dict[Any, int] = {}
_compile_lock = threading.Lock()


def _compiled_for(plan: Any) -> _Compiled:
    """The copier for ``plan``: compiled once the plan has been seen a few times."""
    try:
        compiled = _compiled.get(plan)
        if compiled is not None:
            return compiled
        with _compile_lock:
            count = _seen.get(plan, 0) + 1
            if count >= _COMPILE_AFTER and len(_compiled) < _MAX_COMPILED:
                compiled = _compiled[plan] = _compile(plan)
                _seen.pop(plan, None)
                return compiled
            if len(_seen) >= _MAX_SEEN:
                _seen.clear()
            _seen[plan] = count
    except Exception:
        # A key whose hash or comparison raises: replay without the tables.
        pass
    rebuild, flat, nested, _ = plan

    def replay(value: Any) -> Any:
        try:
            return rebuild(value, flat, nested)
        except Exception:
            return _changed_shape(value)

    return _Compiled(replay)


def _changed_shape(value: Any) -> Any:
    # The value changed shape since it was planned (another thread edits the caller's
    # data): a fresh walk copies what is there now.
    return safe_copy(value)


class _Mismatch(Exception):
    """A value does not have the shape a compiled check expects."""


class _Unchecked(Exception):
    """A plan holds a part (a tuple, a deep copy) that a compiled check cannot verify."""


def _compile(plan: Any) -> _Compiled:
    """Write and compile the functions that copy values of ``plan``'s shape."""
    constants: dict[str, Any] = {
        "_dc": _dict_copy,
        "_lc": _list_copy,
        "_changed_shape": _changed_shape,
        "_type": type,
        "_dict": dict,
        "_list": list,
        "_frozen": FrozenContext,
        "_immutable": _only_immutable,
        "_immutable_types": _IMMUTABLE,
        "_plain": plain_context,
        "_Mismatch": _Mismatch,
    }
    # The containers to copy are read out of the value first (read_lines), then copied
    # (copy_lines): many() reads them once for all its copies.
    read_lines: list[str] = []
    copy_lines: list[str] = []
    check_lines: list[str] = []
    names = iter(range(1, 1 << 30))

    def constant(obj: Any) -> str:
        name = f"k{len(constants)}"
        constants[name] = obj
        return name

    def copy_code(source: str, node: Any) -> str:
        rebuild, flat, nested, _ = node
        target = f"c{next(names)}"
        if rebuild is not _replay_dict and rebuild is not _replay_list:
            # Tuples and deep copies keep their generic replay.
            call = f"{constant(rebuild)}({source}, {constant(flat)}, {constant(nested)})"
            copy_lines.append(f"{target} = {call}")
            return target
        copy_lines.append(f"{target} = {'_dc' if rebuild is _replay_dict else '_lc'}({source})")
        for key, copy_function in flat:
            key_name = constant(key)
            child_source = f"v{next(names)}"
            read_lines.append(f"{child_source} = {source}[{key_name}]")
            function = "_dc" if copy_function is _dict_copy else "_lc"
            copy_lines.append(f"{target}[{key_name}] = {function}({child_source})")
        for key, child in nested:
            key_name = constant(key)
            child_source = f"v{next(names)}"
            read_lines.append(f"{child_source} = {source}[{key_name}]")
            copy_lines.append(f"{target}[{key_name}] = {copy_code(child_source, child)}")
        return target

    def check_code(source: str, node: Any) -> None:
        rebuild, flat, nested, others = node
        fail = "raise _Mismatch"
        if rebuild is _replay_dict and not flat and not nested:
            # A shared context knows whether it is plain once asked (plain_values).
            check_lines.append(
                f"if not ((_type({source}) is _frozen and ({source}.plain_values or "
                f"_plain({source}))) or (_type({source}) is _dict and _immutable(map(_type, "
                f"{source}.values())))): {fail}"
            )
            return
        if rebuild is _replay_list and not flat and not nested:
            check_lines.append(
                f"if _type({source}) is not _list or not _immutable(map(_type, {source})): {fail}"
            )
            return
        if (rebuild is not _replay_dict and rebuild is not _replay_list) or (
            _UNCHECKABLE in others
        ):
            raise _Unchecked
        kind = "_dict" if rebuild is _replay_dict else "_list"
        size = len(flat) + len(nested) + len(others)
        if len(others) <= 8:
            # A few values: one type test each, written out, costs less than two maps.
            immutable = "".join(
                f" and _type({source}[{constant(key)}]) in _immutable_types" for key in others
            )
        else:
            immutable = (
                f" and _immutable(map(_type, map({source}.__getitem__, {constant(others)})))"
            )
        check_lines.append(
            f"if not (_type({source}) is {kind} and len({source}) == {size}{immutable}): {fail}"
        )
        for key, copy_function in flat:
            child_source = f"g{next(names)}"
            check_lines.append(f"{child_source} = {source}[{constant(key)}]")
            flat_node = _FLAT_DICT if copy_function is _dict_copy else _FLAT_LIST
            check_code(child_source, flat_node)
        for key, child in nested:
            child_source = f"g{next(names)}"
            check_lines.append(f"{child_source} = {source}[{constant(key)}]")
            check_code(child_source, child)

    result = copy_code("value", plan)
    try:
        check_code("value", plan)
    except _Unchecked:
        check_lines = []
    parameters = "".join(f", {name}={name}" for name in constants)
    copy_body = "".join(f"\n        {line}" for line in [*read_lines, *copy_lines])
    source = (
        f"def replay(value{parameters}):\n    try:{copy_body}\n        return {result}\n"
        "    except Exception:\n        return _changed_shape(value)\n"
    )
    reads = "".join(f"\n        {line}" for line in read_lines)
    loop_body = "".join(f"\n            {line}" for line in copy_lines)
    source += (
        f"\ndef many(value, count{parameters}):\n    made = []\n    append = made.append\n"
        f"    try:{reads}\n        for _ in range(count):{loop_body}\n"
        f"            append({result})\n"
        "        return made\n    except Exception:\n"
        "        return [_changed_shape(value) for _ in range(count)]\n"
    )
    if check_lines:
        body = "".join(f"\n    {line}" for line in [*check_lines, *read_lines, *copy_lines])
        source += f"\ndef checked(value{parameters}):{body}\n    return {result}\n"
    namespace = dict(constants)
    exec(compile(source, "<eventtracking copy plan>", "exec"), namespace)
    return _Compiled(namespace["replay"], namespace.get("checked"), namespace["many"])


def _deepcopy(value: Any) -> Any:
    try:
        return copy.deepcopy(value)
    except Exception as exc:
        COPY_STATS.incr("uncopyable")
        _RATE_LIMITED.warning(
            f"uncopyable:{type(value).__qualname__}",
            "Could not copy a %s inside an event (%r); it is shared, not copied, so a "
            "processor or backend that changes it changes it for the others too.",
            type(value).__qualname__,
            exc,
        )
        return value
