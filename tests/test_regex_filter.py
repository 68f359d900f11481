"""Tests for eventtracking.processors.regex_filter.RegexFilter."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest

from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.processors import regex_filter
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.processors.regex_filter import ALLOWLIST, BLOCKLIST, RegexFilter
from eventtracking.tracker import Tracker


def event(name: Any) -> dict[str, Any]:
    return {"name": name, "timestamp": None, "context": {}, "data": {}}


def passes(processor: RegexFilter, name: Any) -> bool:
    try:
        processor(event(name))
    except EventEmissionExit:
        return False
    return True


def test_filter_type_constants() -> None:
    """ALLOWLIST and BLOCKLIST are the strings 'allowlist' and 'blocklist'."""
    assert (ALLOWLIST, BLOCKLIST) == ("allowlist", "blocklist")


@pytest.mark.parametrize(
    ("name", "matched"),
    [
        ("edx.video.play", True),
        ("edx.video.play.extra", True),
        ("edx.videoX", True),
        ("prefix.edx.video", False),
        ("edx.vid", False),
        ("EDX.VIDEO", False),
    ],
)
def test_matching_is_anchored_at_the_start_only(name: str, matched: bool) -> None:
    """Expressions use re.match: anchored at the start of the name but not at its end."""
    allow = RegexFilter(ALLOWLIST, [r"edx\.video"])
    block = RegexFilter(BLOCKLIST, [r"edx\.video"])
    assert passes(allow, name) is matched
    assert passes(block, name) is not matched


def test_any_expression_may_match() -> None:
    """An event matches when any of the expressions matches it."""
    allow = RegexFilter(ALLOWLIST, ["^a", ".*b$", "x.*y"])
    assert [passes(allow, name) for name in ("abc", "cab", "xzy", "yx")] == [
        True,
        True,
        True,
        False,
    ]


def test_full_match_can_be_asked_for_with_dollar() -> None:
    """An expression ending in $ matches whole names only."""
    allow = RegexFilter(ALLOWLIST, [r"page\.view$"])
    assert passes(allow, "page.view")
    assert not passes(allow, "page.view.more")


def test_defaults_are_an_empty_allowlist() -> None:
    """With no expressions, an allowlist lets nothing through and a blocklist everything."""
    assert RegexFilter().filter_type == ALLOWLIST
    assert not passes(RegexFilter(), "anything")
    assert passes(RegexFilter(BLOCKLIST), "anything")


def test_allowed_event_is_returned_as_is() -> None:
    """An event that passes is returned as the same object."""
    original = event("a")
    assert RegexFilter(ALLOWLIST, ["a"])(original) is original
    assert RegexFilter.mutates_events is False


def test_list_of_events_is_filtered() -> None:
    """Given a list of events, it returns the list of those that pass, in order."""
    events = [event("a1"), event("b1"), event("a2")]
    assert [e["name"] for e in RegexFilter(ALLOWLIST, ["a"])(events)] == ["a1", "a2"]
    assert [e["name"] for e in RegexFilter(BLOCKLIST, ["a"])(events)] == ["b1"]


def test_non_str_name_is_matched_as_its_string() -> None:
    """A name that is not a string is matched against its str()."""
    assert passes(RegexFilter(ALLOWLIST, ["12"]), 123)


@pytest.mark.parametrize("expression", ["(unclosed", "[a-", "*start", 5])
def test_invalid_expression_raises_improperly_configured(expression: Any) -> None:
    """An expression that does not compile raises ImproperlyConfigured naming it."""
    with pytest.raises(ImproperlyConfigured, match="does not compile") as info:
        RegexFilter(ALLOWLIST, ["fine", expression])
    assert repr(expression) in str(info.value)


@pytest.mark.parametrize("filter_type", ["whitelist", "ALLOWLIST", "", None])
def test_invalid_filter_type_raises_improperly_configured(filter_type: Any) -> None:
    """A filter type other than allowlist or blocklist raises ImproperlyConfigured listing both."""
    with pytest.raises(ImproperlyConfigured, match="allowlist") as info:
        RegexFilter(filter_type, ["a"])
    assert "blocklist" in str(info.value)


def test_single_string_instead_of_a_list_raises() -> None:
    """A single string for regular_expressions is refused rather than split into characters."""
    with pytest.raises(ImproperlyConfigured, match="list"):
        RegexFilter(ALLOWLIST, "edx.*")


def test_in_a_tracker_blocked_events_are_counted() -> None:
    """In a tracker, blocked events never reach backends and are counted as filtered."""
    memory = InMemoryBackend()
    t = Tracker({"memory": memory}, processors=[RegexFilter(BLOCKLIST, [r"debug\."])])
    for name in ("debug.x", "page.view", "debug.y"):
        t.emit(name)
    assert [e["name"] for e in memory.events] == ["page.view"]
    assert t.stats()["dropped"] == {"filtered": 2}


def test_repr_shows_the_configuration() -> None:
    """The repr shows the filter type and expressions."""
    assert repr(RegexFilter(BLOCKLIST, ["a"])) == (
        "RegexFilter(filter_type='blocklist', regular_expressions=['a'])"
    )


@pytest.mark.parametrize("filter_type", [ALLOWLIST, BLOCKLIST])
def test_names_over_max_name_length_are_dropped_and_counted(
    filter_type: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An overlong name (over 1,024 characters by default) is dropped in both modes,
    counted as filtered and logged; names within the limit are matched as usual."""
    monkeypatch.setattr(regex_filter, "_RATE_LIMITED", RateLimitedLogger(regex_filter.LOG))
    backend = InMemoryBackend()
    processor = RegexFilter(filter_type, [r"a+b$"])
    tracker = Tracker({"memory": backend}, processors=[processor])
    with caplog.at_level(logging.WARNING, logger="eventtracking.processors"):
        tracker.emit("a" * 2000 + "b")
        tracker.emit("a" * 1023 + "b")
        tracker.emit("c")
    kept = [event["name"][-1] for event in backend.events]
    assert kept == (["b"] if filter_type == ALLOWLIST else ["c"])
    assert tracker.stats()["dropped"] == {"filtered": 2}
    assert "2001 characters, over RegexFilter's max_name_length=1024" in caplog.text
    assert not passes(processor, "b" * 1025)


_CATASTROPHIC = """
from eventtracking.processors.regex_filter import RegexFilter
from eventtracking.tracker import Tracker
tracker = Tracker({}, processors=[RegexFilter("blocklist", [r"(a|aa)*b"])])
tracker.emit("a" * 2000)
print("returned")
"""


def test_overlong_names_never_reach_a_backtracking_expression() -> None:
    """``(a|aa)*b`` backtracks exponentially on a run of ``a`` without a ``b``; the cap
    keeps a 2,000-character name from ever being matched against it.

    Run in a child process: the regular expression engine holds the GIL, so a hang
    could not be interrupted in this one.
    """
    result = subprocess.run(
        [sys.executable, "-c", _CATASTROPHIC],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == "returned", result.stderr


def test_max_name_length_is_checked() -> None:
    """max_name_length must be a positive int (or None for no limit)."""
    assert RegexFilter(ALLOWLIST, ["x"], max_name_length=None).max_name_length is None
    for bad in (0, -1, "10", True, 1.5):
        with pytest.raises(ImproperlyConfigured, match="max_name_length"):
            RegexFilter(ALLOWLIST, ["x"], max_name_length=bad)  # type: ignore[arg-type]
