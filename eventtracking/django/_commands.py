"""Helpers shared by the ``manage.py eventtracking_*`` commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.core.management.base import CommandError

from eventtracking import tracker as tracker_module
from eventtracking.routing import is_router, walk


def configured_tracker(name: str = tracker_module.DEFAULT_TRACKER_NAME) -> tracker_module.Tracker:
    """The tracker registered as ``name``; CommandError saying how to configure one, or
    that the settings are broken (the default tracker then only drops events)."""
    from django.apps import apps

    config = apps.get_app_config("eventtracking_django")
    error = getattr(config, "startup_error", None)
    if error is not None and name == tracker_module.DEFAULT_TRACKER_NAME:
        msg = (
            f"Event tracking is off: the tracker could not be built from settings: {error} "
            "Run `manage.py check` for details."
        )
        raise CommandError(msg)
    try:
        return tracker_module.get_tracker(name)
    except KeyError:
        msg = (
            f"No tracker is registered as {name!r}. Set EVENT_TRACKING_ENABLED = True and "
            "EVENT_TRACKING_BACKENDS, and run `manage.py check` for problems."
        )
        raise CommandError(msg) from None


def walk_backends(
    backends: Any, into: Callable[[Any], bool] = is_router
) -> Iterator[tuple[str, Any]]:
    """Every backend in a tree of routing backends, with its dotted name (``route.mongo``),
    going into the nested backends of those ``into`` accepts (all routers by default)."""
    for node in walk(backends, into=into):
        yield ".".join(node.path), node.backend


def select_backends(
    tracker: tracker_module.Tracker,
    accept: Callable[[Any], bool],
    wanted: list[str] | None,
    kind: str,
) -> list[tuple[str, Any]]:
    """The backends of ``tracker`` that ``accept`` takes, limited to ``wanted`` names.

    Raises CommandError when none is configured or a wanted name is not one of them.
    """
    found = [
        (name, backend) for name, backend in walk_backends(tracker.backends) if accept(backend)
    ]
    if not found:
        msg = f"No {kind} is configured in EVENT_TRACKING_BACKENDS."
        raise CommandError(msg)
    if not wanted:
        return found
    names = [name for name, _ in found]
    unknown = [name for name in wanted if name not in names]
    if unknown:
        msg = f"Unknown backend {', '.join(unknown)}; the {kind}s are: {', '.join(names)}."
        raise CommandError(msg)
    return [(name, backend) for name, backend in found if name in wanted]
