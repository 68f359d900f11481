"""The immutable stack of named contexts that every locator stores.

A stack is a sequence of ``(name, context)`` frames, innermost last; only a name's
innermost frame counts, at its own position. Stacks are never changed in place, so they
are safe to share and each caches its merged context; a stack is a linked list, so
entering or leaving costs the same at any depth, and merging walks only the frames
entered since the last merge. ``docs/design.rst`` ("Contexts") has the rules.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any, NoReturn

#: Types whose values never change: a context that holds only these can be kept as it
#: is, and what is derived from it cached, for as long as it lives. Exact types: a
#: subclass may add state that changes.
IMMUTABLE_TYPES = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        complex,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        decimal.Decimal,
        uuid.UUID,
        frozenset,
    }
)
_only_immutable = IMMUTABLE_TYPES.issuperset


class FrozenContext(dict[str, Any]):
    """The merged context of an event: a dict that refuses to be changed.

    Every event emitted under the same entered contexts shares one of these, so that
    merging happens once per stack rather than once per event, and so that a backend
    can cache what it derives from it (the logger caches its JSON). It compares,
    serialises and pickles like a plain dict; ``dict(ctx)`` or :func:`copy.copy` gives a
    mutable copy. Processors and backends that may change events are handed copies in
    which it has been thawed into a plain dict.
    """

    # Whether every value is immutable (see plain_context), found out the first time
    # it is asked; None until then. The dict cannot change, so the answer cannot either.
    __slots__ = ("plain_values",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plain_values: bool | None = None

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        msg = (
            "An event's context is shared with other events and cannot be changed in "
            "place; copy it first: event['context'] = dict(event['context'])"
        )
        raise TypeError(msg)

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        # Copies and unpickled values are plain, mutable dicts.
        return (dict, (dict(self),))


def plain_context(value: Any) -> bool:
    """Whether ``value`` is a shared, read-only context whose values are all immutable.

    Such a context never changes: a backend may keep it as it is rather than copy it, and
    cache what it derives from it (the logger's JSON), keyed by its identity. The answer
    is computed once per context and kept on it.
    """
    if type(value) is not FrozenContext:
        return False
    plain = value.plain_values
    if plain is None:
        plain = value.plain_values = _only_immutable(map(type, value.values()))
    return plain


_new_stack = object.__new__
_new_frozen = dict.__new__
# FrozenContext refuses update(): the merge fills a new one through dict's own.
_dict_update = dict.update
_NO_NAMES: frozenset[str] = frozenset()


def _innermost(frames: list[tuple[str, Mapping[str, Any]]]) -> set[int]:
    """The ids of the frames that count in ``frames`` (outermost first): each name's last."""
    last = {frame[0]: frame for frame in frames}
    return {id(frame) for frame in last.values()}


class ContextStack:
    """An immutable sequence of named context frames with a cached merge.

    ``ContextStack(frames)`` builds a stack from ``(name, context)`` pairs, outermost
    first. :meth:`push` and leaving the innermost frame with :meth:`pop` take constant
    time: the stack below is kept, merge cache and all.
    """

    __slots__ = ("_below", "_depth", "_frame", "_frames", "_names", "cached_merge")

    _below: ContextStack | None
    _frame: tuple[str, Mapping[str, Any]] | None

    def __init__(self, frames: Iterable[tuple[str, Mapping[str, Any]]] = ()) -> None:
        self._below = None
        self._frame = None
        self._depth = 0
        self._frames: tuple[tuple[str, Mapping[str, Any]], ...] | None = ()
        #: The merged context once :meth:`merged` has computed it, else None. The emit
        #: path reads it directly: one attribute lookup, where calling merged() would
        #: cost a call on every event.
        self.cached_merge: FrozenContext | None = None
        # The names on the stack, once a merge above needed them (see _all_names).
        self._names: frozenset[str] | None = None
        frames = tuple(frames)
        if frames:
            stack = EMPTY
            for name, context in frames[:-1]:
                stack = stack.push(name, context)
            self._below = stack
            self._frame = (frames[-1][0], frames[-1][1])
            self._depth = len(frames)
            self._frames = None

    @property
    def frames(self) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        """Every frame, outermost first (each frame is the same object in every stack
        that holds it)."""
        frames = self._frames
        if frames is None:
            collected: list[tuple[str, Mapping[str, Any]]] = []
            node: ContextStack | None = self
            while node is not None and node._frame is not None:
                if node._frames is not None:
                    # A stack below already knows its frames: stop there.
                    collected.reverse()
                    frames = node._frames + tuple(collected)
                    break
                collected.append(node._frame)
                node = node._below
            else:
                collected.reverse()
                frames = tuple(collected)
            self._frames = frames
        return frames

    def push(self, name: str, context: Mapping[str, Any]) -> ContextStack:
        """Return a new stack with ``context`` entered as the innermost frame."""
        # _stack_on, written out: this runs on every enter.
        stack = _new_stack(ContextStack)
        stack._below = self
        stack._frame = (name, context)
        stack._depth = self._depth + 1
        stack._frames = stack.cached_merge = stack._names = None
        return stack

    def pop(self, name: str) -> ContextStack:
        """Return a new stack without the innermost frame called ``name``.

        Raises KeyError when no frame has that name.
        """
        frame = self._frame
        if frame is not None and frame[0] == name:
            return self._below  # type: ignore[return-value]  # a frame has a stack below
        # An outer frame: keep the stack below it, and enter the frames above it again.
        above: list[tuple[str, Mapping[str, Any]]] = []
        node: ContextStack | None = self
        while node is not None and node._frame is not None:
            if node._frame[0] == name:
                stack = node._below
                assert stack is not None
                # The same frame objects: the middleware tells frames apart by identity.
                for kept in reversed(above):
                    stack = _stack_on(stack, kept)
                return stack
            above.append(node._frame)
            node = node._below
        raise KeyError(name)

    def effective(self) -> list[tuple[str, Mapping[str, Any]]]:
        """The frames that count: each name's innermost frame, in stack order."""
        seen: set[str] = set()
        kept = []
        node: ContextStack | None = self
        while node is not None and node._frame is not None:
            frame = node._frame
            if frame[0] not in seen:
                seen.add(frame[0])
                kept.append(frame)
            node = node._below
        kept.reverse()
        return kept

    def merged(self) -> FrozenContext:
        """The effective frames merged, inner keys winning, computed once per stack."""
        merged = self.cached_merge
        if merged is None:
            # A benign race: two threads may both compute the same value.
            merged = self.cached_merge = self._merge()
        return merged

    def _merge(self) -> FrozenContext:
        # Start from the nearest stack below that has merged already, and add the
        # frames entered since, as long as none of them re-enters a name of that stack
        # (a re-entered name moves, so the merge below no longer holds).
        segment = []
        node = self
        while node.cached_merge is None and node._frame is not None:
            segment.append(node._frame)
            node = node._below  # type: ignore[assignment]  # a frame has a stack below
        base = node.cached_merge
        base_names = _NO_NAMES if base is None else node._names
        if base_names is None:
            base_names = node._names = node._all_names()
        # Built in place, without FrozenContext.__init__ or a dict to copy into it.
        combined = _new_frozen(FrozenContext)
        combined.plain_values = None
        names = set(map(_first, segment))
        if not names.isdisjoint(base_names):
            for _, context in self.effective():
                _dict_update(combined, context)
            return combined
        if base is not None:
            _dict_update(combined, base)
        segment.reverse()  # outermost first
        if len(names) < len(segment):
            # A name entered twice since: only its innermost frame counts, there.
            keep = _innermost(segment)
            segment = [frame for frame in segment if id(frame) in keep]
        for _, context in segment:
            _dict_update(combined, context)
        return combined

    def _all_names(self) -> frozenset[str]:
        """The names on the stack, from the nearest stack below that knows its own.

        Asked for only when a merge builds on this stack's, rather than worked out
        with every merge: a stack entered around one event never needs them.
        """
        collected: list[str] = []
        node = self
        while node._frame is not None:
            known = node._names
            if known is not None:
                return known.union(collected)
            collected.append(node._frame[0])
            node = node._below  # type: ignore[assignment]  # a frame has a stack below
        return frozenset(collected)

    def as_ordered_dict(self) -> OrderedDict[str, Mapping[str, Any]]:
        """A fresh ``OrderedDict`` of name -> context, as 4.x locators returned."""
        return OrderedDict(self.effective())

    def __len__(self) -> int:
        return self._depth

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.frames)
        return f"<ContextStack [{names}]>"


def _stack_on(below: ContextStack, frame: tuple[str, Mapping[str, Any]]) -> ContextStack:
    """``below`` with ``frame`` entered: built without __init__, on every enter."""
    stack = _new_stack(ContextStack)
    stack._below = below
    stack._frame = frame
    stack._depth = below._depth + 1
    stack._frames = stack.cached_merge = stack._names = None
    return stack


_first = itemgetter(0)

#: The stack with no frame, where every locator starts.
EMPTY = ContextStack()
