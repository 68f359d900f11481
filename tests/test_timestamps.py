"""Tests for eventtracking._util.timestamps: the one parser of event timestamps, which
the Celery wire format, the event-bus backend and the bus receiver share."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from eventtracking._util.timestamps import UTC, parse_timestamp

WHEN = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-02T03:04:05.678901+00:00",
        "2024-01-02T03:04:05.678901Z",
        "2024-01-02T03:04:05.678901+0000",
        "2024-01-02 03:04:05.678901+00:00",
        "2024-01-02T08:34:05.678901+05:30",
        "2024-01-01T22:04:05.678901-05:00",
        " 2024-01-02T03:04:05.678901 \n",
        WHEN,
        WHEN.replace(tzinfo=None),
        WHEN.astimezone(datetime.timezone(datetime.timedelta(hours=-7))),
    ],
)
def test_every_form_of_one_moment_parses_to_it_in_utc(value: Any) -> None:
    """Strings from every known writer, in any offset, and datetimes (naive ones taken
    as UTC) become the same moment, with the UTC tzinfo."""
    parsed = parse_timestamp(value)
    assert parsed == WHEN
    assert parsed.tzinfo is UTC


class BrokenZone(datetime.tzinfo):
    """A time zone whose offset raises."""

    def utcoffset(self, moment: datetime.datetime | None) -> datetime.timedelta:
        raise RuntimeError("no offset")


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("yesterday", "'yesterday'"),
        ("", "''"),
        ("2024-01-02T03:04:05" + " " * 60, "2024-01-02T03:04:05"),
        (None, "None"),
        (1700000000, "1700000000"),
        ("0001-01-01T00:00:00+05:00", "0001-01-01"),
        (
            datetime.datetime.max.replace(tzinfo=datetime.timezone(-datetime.timedelta(hours=5))),
            "9999",
        ),
        (WHEN.replace(tzinfo=BrokenZone()), "BrokenZone"),
        (Unprintable(), "unrepresentable Unprintable"),
    ],
    ids=[
        "word",
        "empty",
        "too-long",
        "none",
        "number",
        "before-year-1",
        "after-9999",
        "zone",
        "repr",
    ],
)
def test_what_names_no_moment_is_a_value_error_naming_it(value: Any, named: str) -> None:
    """Anything that is no date-time, or cannot be one in UTC, raises ValueError (never
    another error) with a message that shows the value."""
    with pytest.raises(ValueError, match="timestamp") as caught:
        parse_timestamp(value)
    assert named in str(caught.value)
