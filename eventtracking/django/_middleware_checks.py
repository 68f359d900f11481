"""System checks of ``MIDDLEWARE``: order, duplicates, and the app they need."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from eventtracking.django._check_messages import (
    APP_NOT_INSTALLED,
    APP_NOT_INSTALLED_HINT,
    CONTEXT_MIDDLEWARE,
    DUPLICATE_MIDDLEWARE,
    DUPLICATE_MIDDLEWARE_HINT,
    E008,
    E009,
    EVENT_MIDDLEWARE,
    EVENT_MIDDLEWARE_BEFORE_CONTEXT,
    EVENT_MIDDLEWARE_BEFORE_CONTEXT_HINT,
    EVENT_MIDDLEWARE_WITHOUT_CONTEXT,
    EVENT_MIDDLEWARE_WITHOUT_CONTEXT_HINT,
    W001,
    W004,
)


def _middleware_classes(entries: Iterable[Any]) -> list[tuple[str, Any]]:
    """Each MIDDLEWARE entry with its class, or None when it cannot be imported."""
    resolved = []
    for entry in entries:
        cls = None
        if isinstance(entry, str):
            # A broken entry is Django's to report; it only means "not ours" here.
            with contextlib.suppress(Exception):
                cls = import_string(entry)
        resolved.append((entry, cls))
    return resolved


def _positions(resolved: list[tuple[str, Any]], base_path: str) -> list[int]:
    base = import_string(base_path)
    return [
        index
        for index, (entry, cls) in enumerate(resolved)
        if entry == base_path or (isinstance(cls, type) and issubclass(cls, base))
    ]


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check where the event-tracking middleware sit in ``MIDDLEWARE``."""
    entries = getattr(settings, "MIDDLEWARE", None) or []
    resolved = _middleware_classes(entries)
    context_at = _positions(resolved, CONTEXT_MIDDLEWARE)
    event_at = _positions(resolved, EVENT_MIDDLEWARE)
    messages: list[checks.CheckMessage] = []
    for path, found in ((CONTEXT_MIDDLEWARE, context_at), (EVENT_MIDDLEWARE, event_at)):
        if len(found) > 1:
            msg = DUPLICATE_MIDDLEWARE.format(middleware=path, count=len(found))
            messages.append(checks.Error(msg, hint=DUPLICATE_MIDDLEWARE_HINT, id=E009))
    if event_at and not context_at:
        messages.append(
            checks.Warning(
                EVENT_MIDDLEWARE_WITHOUT_CONTEXT,
                hint=EVENT_MIDDLEWARE_WITHOUT_CONTEXT_HINT,
                id=W001,
            )
        )
    elif event_at and min(event_at) < min(context_at):
        messages.append(
            checks.Error(
                EVENT_MIDDLEWARE_BEFORE_CONTEXT,
                hint=EVENT_MIDDLEWARE_BEFORE_CONTEXT_HINT,
                id=E008,
            )
        )
    return messages


def check_app_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when an event-tracking middleware is in ``MIDDLEWARE`` without the app."""
    if apps.is_installed("eventtracking.django"):
        return []
    resolved = _middleware_classes(getattr(settings, "MIDDLEWARE", None) or [])
    found = [path for path in (CONTEXT_MIDDLEWARE, EVENT_MIDDLEWARE) if _positions(resolved, path)]
    return [
        checks.Warning(
            APP_NOT_INSTALLED.format(middleware=path.rpartition(".")[2]),
            hint=APP_NOT_INSTALLED_HINT,
            id=W004,
        )
        for path in found
    ]
