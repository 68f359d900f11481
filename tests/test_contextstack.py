"""Tests for eventtracking._contextstack: the immutable stack of named contexts."""

from __future__ import annotations

import datetime
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventtracking._contextstack import EMPTY, ContextStack, FrozenContext, plain_context


def test_empty_stack() -> None:
    """EMPTY has no frames, merges to {} and lists no contexts."""
    assert len(EMPTY) == 0
    assert EMPTY.frames == ()
    assert EMPTY.merged() == {}
    assert EMPTY.as_ordered_dict() == OrderedDict()


def test_push_returns_a_new_stack_and_leaves_the_old_one() -> None:
    """push() builds a new stack; the stack it was called on is unchanged."""
    one = EMPTY.push("a", {"k": 1})
    two = one.push("b", {"k": 2})
    assert EMPTY.frames == ()
    assert one.frames == (("a", {"k": 1}),)
    assert two.frames == (("a", {"k": 1}), ("b", {"k": 2}))
    assert isinstance(two.frames, tuple)


def test_pop_removes_the_innermost_frame_of_that_name() -> None:
    """pop(name) removes only the innermost frame called name, keeping the others in order."""
    stack = EMPTY.push("a", {"v": 1}).push("b", {"v": 2}).push("a", {"v": 3})
    popped = stack.pop("a")
    assert popped.frames == (("a", {"v": 1}), ("b", {"v": 2}))
    assert len(stack) == 3


def test_pop_unknown_name_raises_key_error() -> None:
    """pop() of a name with no frame raises KeyError naming it."""
    with pytest.raises(KeyError, match="missing"):
        EMPTY.push("a", {}).pop("missing")


def test_effective_keeps_each_names_innermost_frame_at_its_position() -> None:
    """effective() keeps one frame per name: the innermost, where it was entered."""
    stack = EMPTY.push("a", {"v": 1}).push("b", {"v": 2}).push("a", {"v": 3}).push("c", {})
    assert stack.effective() == [("b", {"v": 2}), ("a", {"v": 3}), ("c", {})]


def test_merged_lets_inner_keys_win() -> None:
    """merged() combines the effective frames in order, so inner keys override outer ones."""
    stack = EMPTY.push("a", {"x": 1, "y": 1}).push("b", {"y": 2, "z": 2})
    assert stack.merged() == {"x": 1, "y": 2, "z": 2}


def test_merged_is_cached() -> None:
    """merged() computes once per stack and returns the cached dict after."""
    stack = EMPTY.push("a", {"x": 1})
    assert stack.merged() is stack.merged()


def test_as_ordered_dict_is_a_fresh_snapshot() -> None:
    """as_ordered_dict() returns a new OrderedDict each call; editing it changes nothing."""
    stack = EMPTY.push("a", {"x": 1}).push("b", {"y": 2})
    view = stack.as_ordered_dict()
    assert isinstance(view, OrderedDict)
    assert list(view.items()) == [("a", {"x": 1}), ("b", {"y": 2})]
    view.clear()
    assert list(stack.as_ordered_dict()) == ["a", "b"]
    assert stack.as_ordered_dict() is not stack.as_ordered_dict()


def test_repr_lists_frame_names() -> None:
    """The repr names every frame, outermost first, for debugging."""
    stack = ContextStack((("a", {}), ("b", {})))
    assert repr(stack) == "<ContextStack [a, b]>"


NAMES = st.sampled_from(["a", "b", "c", "d"])
STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            NAMES,
            st.dictionaries(st.sampled_from(["k", "x"]), st.integers(0, 5), max_size=2),
        ),
        st.tuples(st.just("pop"), NAMES),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS)
def test_stack_matches_a_list_of_frames(steps: list[Any]) -> None:
    """Random push/pop sequences agree with a plain list of frames: effective frames,
    merge and KeyError on popping an absent name, and old stacks never change."""
    stack = EMPTY
    frames: list[tuple[str, dict[str, int]]] = []
    history: list[tuple[ContextStack, tuple[Any, ...]]] = []
    for step in steps:
        history.append((stack, tuple(frames)))
        if step[0] == "push":
            stack = stack.push(step[1], step[2])
            frames.append((step[1], step[2]))
        else:
            names = [name for name, _ in frames]
            if step[1] not in names:
                with pytest.raises(KeyError):
                    stack.pop(step[1])
                continue
            index = len(names) - 1 - names[::-1].index(step[1])
            del frames[index]
            stack = stack.pop(step[1])
        latest = {name: index for index, (name, _) in enumerate(frames)}
        effective = [f for index, f in enumerate(frames) if latest[f[0]] == index]
        merged: dict[str, int] = {}
        for _, ctx in effective:
            merged.update(ctx)
        assert stack.frames == tuple(frames)
        assert stack.effective() == effective
        assert stack.merged() == merged
    for old, old_frames in history:
        assert old.frames == old_frames


@settings(max_examples=150, deadline=None)
@given(steps=STEPS, merge_at=st.sets(st.integers(0, 25)))
def test_merge_matches_whatever_was_merged_before(steps: list[Any], merge_at: set[int]) -> None:
    """Merging only now and then (so a merge starts from an older stack's cached merge,
    across re-entered names and outer pops) gives the same result as merging afresh."""
    stack = EMPTY
    for index, step in enumerate(steps):
        if step[0] == "push":
            stack = stack.push(step[1], step[2])
        else:
            try:
                stack = stack.pop(step[1])
            except KeyError:
                continue
        if index in merge_at:
            stack.merged()
    fresh: dict[str, int] = {}
    for _, ctx in ContextStack(stack.frames).effective():
        fresh.update(ctx)
    assert stack.merged() == fresh
    assert len(stack) == len(stack.frames)


def test_leaving_an_outer_frame_keeps_the_other_frames_objects() -> None:
    """Leaving a frame below the innermost keeps the very frame objects above it (the
    middleware tells frames apart by identity) and the stack below it."""
    base = EMPTY.push("a", {"v": 1})
    stack = base.push("b", {"v": 2}).push("c", {"v": 3})
    frames = stack.frames
    popped = stack.pop("b")
    assert popped.frames == (frames[0], frames[2])
    assert popped.frames[0] is frames[0] and popped.frames[1] is frames[2]
    assert popped.merged() == {"v": 3}


def test_deep_stack_enters_merges_and_leaves() -> None:
    """Thousands of frames can be entered, merged and left one by one; leaving the
    innermost returns the stack below it, merge cache and all."""
    stack = EMPTY
    stacks = []
    for index in range(5000):
        stacks.append(stack)
        stack = stack.push(f"frame{index}", {f"k{index}": index, "shared": index})
    merged = stack.merged()
    assert len(merged) == 5001 and merged["shared"] == 4999
    assert len(stack) == 5000 and len(stack.frames) == 5000
    for index in range(4999, -1, -1):
        stack = stack.pop(f"frame{index}")
        assert stack is stacks[index]
    assert stack is EMPTY


def test_plain_context_vouches_only_for_shared_contexts_of_immutable_values() -> None:
    """plain_context is True for a FrozenContext holding only immutable values (exact
    types), False for a plain dict, for a mutable value and for a subclass of str; the
    answer is kept on the context."""
    plain = FrozenContext({"a": "x", "n": 1, "when": datetime.date(2024, 1, 2)})
    assert plain_context(plain) is True
    assert plain.plain_values is True
    assert plain_context({"a": "x"}) is False
    assert plain_context(FrozenContext({"a": ["x"]})) is False

    class Text(str):
        pass

    assert plain_context(FrozenContext({"a": Text("x")})) is False
