"""Tests for eventtracking._util.watched: containers that report every change."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest

from eventtracking._util.watched import WatchedDict, WatchedList


def watched_dict() -> tuple[WatchedDict, list[list[Any]]]:
    seen: list[list[Any]] = []
    value = WatchedDict([("a", 1), ("b", 2)])
    value.on_change = lambda: seen.append(list(value.items()))
    return value, seen


DICT_EDITS: list[tuple[str, Callable[[WatchedDict], Any], list[Any]]] = [
    ("setitem", lambda d: d.__setitem__("c", 3), [("a", 1), ("b", 2), ("c", 3)]),
    ("delitem", lambda d: d.__delitem__("a"), [("b", 2)]),
    ("pop", lambda d: d.pop("a"), [("b", 2)]),
    ("popitem", lambda d: d.popitem(), [("a", 1)]),
    ("clear", lambda d: d.clear(), []),
    ("update", lambda d: d.update(c=3), [("a", 1), ("b", 2), ("c", 3)]),
    ("ior", lambda d: d.__ior__({"c": 3}), [("a", 1), ("b", 2), ("c", 3)]),
    ("setdefault", lambda d: d.setdefault("c", 3), [("a", 1), ("b", 2), ("c", 3)]),
    ("move_to_end", lambda d: d.move_to_end("a"), [("b", 2), ("a", 1)]),
]


@pytest.mark.parametrize(
    ("edit", "expected"), [e[1:] for e in DICT_EDITS], ids=[e[0] for e in DICT_EDITS]
)
def test_every_dict_edit_is_reported_after_it_happens(
    edit: Callable[[WatchedDict], Any], expected: list[Any]
) -> None:
    """Each way of changing a WatchedDict calls on_change, with the change already made."""
    value, seen = watched_dict()
    edit(value)
    assert seen and seen[-1] == expected


def test_watched_dict_reads_like_an_ordered_dict() -> None:
    """Reading and copying a WatchedDict behave as for an OrderedDict; reads report nothing."""
    value, seen = watched_dict()
    assert isinstance(value, OrderedDict)
    assert value["a"] == 1 and list(value) == ["a", "b"] and value.get("z") is None
    assert value.copy() == OrderedDict([("a", 1), ("b", 2)])
    assert seen == []


LIST_EDITS: list[tuple[str, Callable[[WatchedList], Any], list[Any]]] = [
    ("append", lambda v: v.append(3), [1, 2, 3]),
    ("extend", lambda v: v.extend([3, 4]), [1, 2, 3, 4]),
    ("insert", lambda v: v.insert(0, 0), [0, 1, 2]),
    ("remove", lambda v: v.remove(1), [2]),
    ("pop", lambda v: v.pop(), [1]),
    ("clear", lambda v: v.clear(), []),
    ("setitem", lambda v: v.__setitem__(0, 9), [9, 2]),
    ("setslice", lambda v: v.__setitem__(slice(0, 1), [7, 8]), [7, 8, 2]),
    ("delitem", lambda v: v.__delitem__(0), [2]),
    ("iadd", lambda v: v.__iadd__([3]), [1, 2, 3]),
]


@pytest.mark.parametrize(
    ("edit", "expected"), [e[1:] for e in LIST_EDITS], ids=[e[0] for e in LIST_EDITS]
)
def test_every_list_edit_is_reported_after_it_happens(
    edit: Callable[[WatchedList], Any], expected: list[Any]
) -> None:
    """Each way of changing which items a WatchedList holds calls on_change afterwards."""
    seen: list[list[Any]] = []
    value = WatchedList([1, 2])
    value.on_change = lambda: seen.append(list(value))
    edit(value)
    assert seen and seen[-1] == expected


def test_without_a_callback_edits_just_happen() -> None:
    """With no on_change set, the containers work as plain ones."""
    items = WatchedList()
    items += [1]
    items.append(2)
    mapping = WatchedDict()
    mapping["a"] = 1
    assert items == [1, 2] and mapping == {"a": 1}
