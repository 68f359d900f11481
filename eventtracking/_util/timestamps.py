"""The one parser of event timestamps read back from a broker or a bus.

:func:`parse_timestamp` gives a timezone-aware UTC datetime or raises ValueError naming
the value; each caller chooses what bad input becomes. The Celery worker and the
event-bus receiver keep such a timestamp as it came (a backend may know what it is);
the event-bus backend makes the event a dead letter, since the bus takes date-times only.
"""

from __future__ import annotations

import datetime
import re

from eventtracking._util.escape import safe_repr

__all__ = ["UTC", "parse_timestamp"]

UTC = datetime.timezone.utc

# Longer text is no date-time: refused before any parsing, whatever a message holds.
_SHORTEST, _LONGEST = 10, 64
_fromisoformat = datetime.datetime.fromisoformat
# What Python 3.10's fromisoformat refuses: 1 to 9 digits of fraction, "+HHMM".
_LOOSE = re.compile(r"\A(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?([+-]\d\d:?\d\d)?\Z")


def parse_timestamp(value: object) -> datetime.datetime:
    """``value`` as a timezone-aware UTC datetime; ValueError when it is none.

    A datetime is converted to UTC (a naive one is taken to be UTC already, as the JSON
    encoder does). A string may be any ISO 8601 date-time of 10 to 64 characters: with
    ``T`` or a space, with or without a fraction of a second, ending in ``Z``,
    ``+HH:MM``, ``+HHMM`` or nothing (UTC), as this library, kombu and 4.x's event bus
    write them. A date-time that cannot be converted to UTC (it falls before year 1 or
    after 9999 there, or its time zone's offset raises or is none) is a ValueError too,
    as is any other value, one whose own ``repr`` fails included.
    """
    if type(value) is str and _SHORTEST <= len(value) <= _LONGEST:
        # What this library writes (``...+00:00``) is parsed by fromisoformat alone, in
        # a twentieth of the time of the general path, with the same result.
        try:
            fast = _fromisoformat(value)
        except ValueError:
            pass
        else:
            if fast.tzinfo is UTC:
                return fast
    return _parse(value)


def _parse(value: object) -> datetime.datetime:
    """:func:`parse_timestamp` without its fast path (which the tests hold it to)."""
    if isinstance(value, datetime.datetime):
        return _in_utc(value)
    if isinstance(value, str):
        parsed = _parse_text(value) if _SHORTEST <= len(value) <= _LONGEST else None
        if parsed is not None:
            return _in_utc(parsed)
        msg = (
            f"timestamp {safe_repr(value)} is not an ISO 8601 date-time; emit events with a "
            "timezone-aware datetime, or a string such as '2024-01-31T12:00:00.000000+00:00'"
        )
        raise ValueError(msg)
    msg = (
        f"timestamp {safe_repr(value)} ({type(value).__name__}) is neither a "
        "datetime nor an ISO 8601 string; emit events with a timezone-aware datetime"
    )
    raise ValueError(msg)


def _in_utc(value: datetime.datetime) -> datetime.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        offset = value.utcoffset()
        if offset is None:
            msg = "its time zone gives no offset"
            raise ValueError(msg)
        return value.astimezone(UTC) if offset else value.replace(tzinfo=UTC)
    except Exception as exc:
        # isoformat() would ask the time zone again: name it apart.
        msg = (
            f"timestamp {value.replace(tzinfo=None).isoformat()} in time zone "
            f"{safe_repr(value.tzinfo)} cannot be converted to UTC "
            f"({type(exc).__name__}); emit events with a timezone-aware datetime "
            "between years 1 and 9999 in UTC"
        )
        raise ValueError(msg) from exc


def _parse_text(value: str) -> datetime.datetime | None:
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        return _fromisoformat(text)
    except ValueError:
        pass
    match = _LOOSE.match(text)
    if match is None:
        return None
    date, clock, fraction, offset = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    zone = (offset or "+00:00").replace(":", "")
    try:
        return datetime.datetime.strptime(f"{date}T{clock}.{micro}{zone}", "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None
