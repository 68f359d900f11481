"""What is stored of paths, referers and queries: tokens redacted, secrets blanked."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import SuspiciousOperation, TooManyFieldsSent
from django.http import HttpRequest

from eventtracking.django._settings import SecretKeys

#: What a blanked value becomes.
BLANK = ""
#: What a redacted part of a path becomes.
REDACTED = "<redacted>"
#: Query values longer than this are not read as JSON (a query is rarely this long).
MAX_JSON_VALUE = 65_536


def _redact_groups(match: re.Match[str]) -> str:
    """The match with each group's text (or, without groups, all of it) redacted."""
    if not match.re.groups:
        return REDACTED
    text, offset = match.group(0), match.start(0)
    pieces, position = [], 0
    for group in range(1, match.re.groups + 1):
        start, end = match.span(group)
        if start < 0 or start - offset < position:
            # A group that did not take part, or one nested in a group already redacted.
            continue
        pieces += [text[position : start - offset], REDACTED]
        position = end - offset
    pieces.append(text[position:])
    return "".join(pieces)


def redact_path(path: str, redactions: tuple[re.Pattern[str], ...]) -> str:
    """``path`` with the parts matched by ``redactions`` replaced by ``<redacted>``."""
    for pattern in redactions:
        path = pattern.sub(_redact_groups, path)
    return path


def clean_referer(value: Any, redactions: tuple[re.Pattern[str], ...]) -> str:
    """The Referer's scheme, host and redacted path: no query, fragment or credentials.

    A password-reset link's token is often in its query; a browser never sends
    credentials, but a client may. An unparseable value is stored as ``''``.
    """
    if not value:
        return ""
    try:
        parts = urlsplit(str(value))
    except ValueError:
        return ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, redact_path(parts.path, redactions), "", ""))


def _blank_json(value: Any, secrets: SecretKeys, depth: int = 0) -> tuple[Any, bool]:
    """``value`` with secret-looking keys blanked at any depth, and whether any was."""
    changed = False
    if depth > 100:
        return value, changed
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if secrets.match(key):
                result[key], changed = BLANK, True
            else:
                result[key], inner = _blank_json(item, secrets, depth + 1)
                changed = changed or inner
        return result, changed
    if isinstance(value, list):
        items = []
        for item in value:
            cleaned, inner = _blank_json(item, secrets, depth + 1)
            items.append(cleaned)
            changed = changed or inner
        return items, changed
    return value, changed


def _blank_value(value: str, secrets: SecretKeys) -> str:
    """A query value, with the secrets blanked inside it when it holds a JSON document."""
    if not value.lstrip().startswith(("{", "[")) or len(value) > MAX_JSON_VALUE:
        return value
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):
        return value
    cleaned, changed = _blank_json(document, secrets)
    return json.dumps(cleaned, ensure_ascii=False) if changed else value


def blank_secrets(params: Any, secrets: SecretKeys) -> dict[str, Any]:
    """Query parameters as a dict (lists for repeated keys), secret-looking ones blanked.

    Values that are JSON documents have their secret-looking keys blanked too.
    """
    result: dict[str, Any] = {}
    for key, values in params.lists():
        if secrets.match(key):
            values = [BLANK] * len(values)
        else:
            values = [_blank_value(value, secrets) for value in values]
        result[key] = values[0] if len(values) == 1 else values
    return result


def query_data(request: HttpRequest, secrets: SecretKeys) -> tuple[dict[str, Any], str | None]:
    """The request's query for its event, and why it was left out (None when it was not).

    Django refuses to parse a query with more than ``DATA_UPLOAD_MAX_NUMBER_FIELDS``
    fields: the event then has an empty query and ``query_omitted='too_many_fields'``.
    """
    try:
        return blank_secrets(request.GET, secrets), None
    except TooManyFieldsSent:
        return {}, "too_many_fields"
    except SuspiciousOperation:
        return {}, "unreadable"
