"""Tests for eventtracking.metadata._jsonform: the JSON form of data, without side effects."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

from hang_support import GENEROUS, call_within

from eventtracking.metadata._jsonform import json_size, to_json_form


def self_referencing() -> dict[str, Any]:
    """A dict holding itself twice: a naive walk of depth 100 takes 2**100 steps."""
    loop: dict[str, Any] = {}
    loop["a"] = loop
    loop["b"] = loop
    return loop


def test_to_json_form_marks_cycles_and_returns_at_once() -> None:
    """A container that contains itself becomes "<cycle>" where it repeats."""
    outcome = call_within(GENEROUS, to_json_form, {"data": self_referencing(), "n": 1})
    assert outcome.error is None
    assert outcome.result == {"data": {"a": "<cycle>", "b": "<cycle>"}, "n": 1}
    loop: list[Any] = [1]
    loop.append({"again": loop})
    assert to_json_form(loop) == [1, {"again": "<cycle>"}]


def test_to_json_form_writes_a_shared_value_each_time_it_appears() -> None:
    """The same object twice, without a cycle, is written twice, as JSON writers do."""
    shared = {"k": [1, 2]}
    assert to_json_form({"x": shared, "y": [shared, shared]}) == {
        "x": {"k": [1, 2]},
        "y": [{"k": [1, 2]}, {"k": [1, 2]}],
    }


def test_to_json_form_gives_what_a_json_reader_gets_back() -> None:
    """Dates become text, NaN a string, tuples lists and keys their JSON text."""
    value = {
        "when": datetime.date(2024, 1, 31),
        "nan": math.nan,
        "pair": (1, 2),
        1: "int key",
        None: "null key",
    }
    assert to_json_form(value) == {
        "when": "2024-01-31",
        "nan": "NaN",
        "pair": [1, 2],
        "1": "int key",
        "null": "null key",
    }


def test_json_size_of_an_event_with_a_cycle_returns_at_once() -> None:
    """The size check measures cyclic data by its cleaned form instead of hanging."""
    event = {"name": "n", "data": self_referencing()}
    outcome = call_within(GENEROUS, json_size, event)
    assert outcome.error is None
    expected = json.dumps({"name": "n", "data": {"a": "<cycle>", "b": "<cycle>"}})
    assert outcome.result == len(expected)


class BadItems(dict):  # type: ignore[type-arg]
    """A dict whose items() raises."""

    def items(self) -> Any:
        raise RuntimeError("no items")


class BadKey:
    """A key whose repr() and str() raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_to_json_form_never_raises_on_hostile_values() -> None:
    """Huge ints become hex, as written; unreadable containers and keys are named."""
    huge = 10**5000
    value = {"n": huge, "bad": BadItems(a=1), BadKey(): 1}
    assert to_json_form(value) == {
        "n": hex(huge),
        "bad": "<unserialisable BadItems>",
        "<unrepresentable BadKey>": 1,
    }
    assert json_size({"data": value}) == len(json.dumps({"data": to_json_form(value)}))
