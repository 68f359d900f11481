"""The immutable stack of named contexts that every locator stores.

A stack is a tuple of ``(name, context)`` frames, innermost last. A name may appear more
than once (nested ``with tracker.context('x', ...)`` blocks); only its innermost frame
counts, and it counts at its own position, so re-entering a name makes it win over
everything entered before. Leaving a name removes its innermost frame and uncovers the
one below.

Stacks are never changed in place: every enter or exit builds a new one. That makes a
stack safe to share between threads and asyncio tasks, and lets it cache the merged
context, which is the only thing the emit path needs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NoReturn


class FrozenContext(dict[str, Any]):
    """The merged context of an event: a dict that refuses to be changed.

    Every event emitted under the same entered contexts shares one of these, so that
    merging happens once per stack rather than once per event, and so that a backend
    can cache what it derives from it (the logger caches its JSON). It compares,
    serialises and pickles like a plain dict; ``dict(ctx)`` or :func:`copy.copy` gives a
    mutable copy. Processors and backends that may change events are handed copies in
    which it has been thawed into a plain dict.
    """

    # Whether every value is immutable (a str, a number...), found out the first time
    # an event is copied (see eventtracking._copy); None until then. The dict cannot
    # change, so the answer cannot either.
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


class ContextStack:
    """An immutable sequence of named context frames with a cached merge.

    Each stack remembers the stack it was pushed onto, so that leaving the innermost
    context (the common, ``with``-block case) returns that very stack, merge cache and
    all, and a push of a new name merges onto the parent's cached result instead of
    starting over.
    """

    __slots__ = ("_merged", "_parent", "frames")

    frames: tuple[tuple[str, Mapping[str, Any]], ...]

    def __init__(
        self,
        frames: tuple[tuple[str, Mapping[str, Any]], ...] = (),
        parent: ContextStack | None = None,
    ) -> None:
        self.frames = frames
        self._parent = parent
        self._merged: FrozenContext | None = None

    def push(self, name: str, context: Mapping[str, Any]) -> ContextStack:
        """Return a new stack with ``context`` entered as the innermost frame."""
        return ContextStack((*self.frames, (name, context)), self)

    def pop(self, name: str) -> ContextStack:
        """Return a new stack without the innermost frame called ``name``.

        Raises KeyError when no frame has that name.
        """
        frames = self.frames
        if frames and frames[-1][0] == name and self._parent is not None:
            return self._parent
        for index in range(len(frames) - 1, -1, -1):
            if frames[index][0] == name:
                return ContextStack(frames[:index] + frames[index + 1 :])
        raise KeyError(name)

    def effective(self) -> list[tuple[str, Mapping[str, Any]]]:
        """The frames that count: each name's innermost frame, in stack order."""
        frames = self.frames
        seen: set[str] = set()
        kept = []
        for name, context in reversed(frames):
            if name not in seen:
                seen.add(name)
                kept.append((name, context))
        kept.reverse()
        return kept

    def merged(self) -> FrozenContext:
        """The effective frames merged, inner keys winning, computed once per stack."""
        merged = self._merged
        if merged is None:
            # A benign race: two threads may both compute the same value.
            merged = self._merged = FrozenContext(self._merge())
        return merged

    def _merge(self) -> dict[str, Any]:
        frames = self.frames
        parent = self._parent
        # Bounded, so that a pathological depth cannot recurse without end.
        if parent is not None and (parent._merged is not None or len(frames) < 64):
            name, context = frames[-1]
            # A name new to the parent adds its keys on top of the parent's merge. A
            # re-entered name replaces an outer frame, so it needs the full rule.
            if all(frame_name != name for frame_name, _ in parent.frames):
                return {**parent.merged(), **context}
        combined: dict[str, Any] = {}
        for _, context in self.effective():
            combined.update(context)
        return combined

    def as_ordered_dict(self) -> OrderedDict[str, Mapping[str, Any]]:
        """A fresh ``OrderedDict`` of name -> context, as 4.x locators returned."""
        return OrderedDict(self.effective())

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.frames)
        return f"<ContextStack [{names}]>"


EMPTY = ContextStack()
