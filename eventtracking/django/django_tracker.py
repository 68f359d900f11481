"""A tracker whose backends and processors come from Django settings.

Its settings, ``EVENT_TRACKING_ENABLED``, ``EVENT_TRACKING_BACKENDS`` and
``EVENT_TRACKING_PROCESSORS`` (ENGINE/OPTIONS dicts, built recursively inside dicts and
lists, so that a :class:`~eventtracking.routing.RoutingBackend` can hold its own
backends and processors), are described in ``docs/django.rst`` (*The tracker*), and
``EVENT_TRACKING_VALIDATION`` in ``docs/metadata.rst``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from eventtracking import tracker
from eventtracking._util import engines as _engines
from eventtracking._util.delivery_api import close_all
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.locator import ContextVarLocator
from eventtracking.tracker import Tracker

__all__ = [
    "DJANGO_BACKEND_SETTING_NAME",
    "DJANGO_ENABLED_SETTING_NAME",
    "DJANGO_PROCESSOR_SETTING_NAME",
    "DjangoTracker",
    "override_default_tracker",
]

DJANGO_BACKEND_SETTING_NAME = "EVENT_TRACKING_BACKENDS"
DJANGO_PROCESSOR_SETTING_NAME = "EVENT_TRACKING_PROCESSORS"
DJANGO_ENABLED_SETTING_NAME = "EVENT_TRACKING_ENABLED"


class DjangoTracker(Tracker):
    """A :class:`~eventtracking.tracker.Tracker` configured from Django settings.

    It reads the backends from the setting named ``backends_settings_name`` (a dict of
    name -> ENGINE dict) and the processors from ``processors_settings_name`` (a list of
    ENGINE dicts); a missing setting means none. Contexts live in a
    :class:`~eventtracking.locator.ContextVarLocator`, so every thread and every
    asyncio task has its own.

    Raises :class:`~eventtracking.exceptions.ImproperlyConfigured` (a ValueError, as in
    4.x) naming the entry, when a setting has the wrong shape, an ENGINE cannot be
    used or a constructor rejects its OPTIONS (chained).
    """

    def __init__(
        self,
        backends_settings_name: str = DJANGO_BACKEND_SETTING_NAME,
        processors_settings_name: str = DJANGO_PROCESSOR_SETTING_NAME,
    ) -> None:
        # Processors first: they seldom hold resources, so a failure there leaves no
        # backend with a connection or a thread behind.
        processors = self.create_processors_from_settings(processors_settings_name)
        backends = self.create_backends_from_settings(backends_settings_name)
        try:
            super().__init__(backends, ContextVarLocator(), processors)
            # EVENT_TRACKING_VALIDATION: off (default), warn, strict or a dict; see
            # eventtracking.metadata.validation.configure. Read only when set, so that
            # projects without it never import the metadata package.
            validation = getattr(settings, "EVENT_TRACKING_VALIDATION", None)
            if validation is not None:
                from eventtracking.metadata import configure

                configure(self, validation, name="EVENT_TRACKING_VALIDATION")
        except Exception:
            close_all(backends.items(), timeout=1.0)
            raise

    def create_backends_from_settings(self, settings_name: str) -> dict[str, Any]:
        """Build the backends described by the dict setting ``settings_name``.

        Raises ImproperlyConfigured (a ValueError) when the setting is not a dict or an
        entry cannot be built. Backends built before a failing one are closed.
        """
        config = getattr(settings, settings_name, None)
        if config is None:
            return {}
        if not isinstance(config, dict):
            msg = (
                f"{settings_name} must be a dict of backend name -> {_engines.EXAMPLE}, "
                f"got {type(config).__name__}."
            )
            raise ImproperlyConfigured(msg)
        backends: dict[str, Any] = {}
        try:
            for name, node in config.items():
                where = f"{settings_name}[{name!r}]"
                backends[name] = _engines.build(node, where, _engines.BACKEND)
        except Exception:
            close_all(backends.items(), timeout=1.0)
            raise
        return backends

    def create_processors_from_settings(self, settings_name: str) -> list[Any]:
        """Build the processors described by the list setting ``settings_name``.

        Raises ImproperlyConfigured (a ValueError) when the setting is not a list or
        tuple, or an entry cannot be built.
        """
        config = getattr(settings, settings_name, None)
        if config is None:
            return []
        if not isinstance(config, (list, tuple)):
            msg = (
                f"{settings_name} must be a list of processors, each {_engines.EXAMPLE}, "
                f"got {type(config).__name__}."
            )
            raise ImproperlyConfigured(msg)
        return list(_engines.build(list(config), settings_name, _engines.PROCESSOR))


def override_default_tracker() -> DjangoTracker | None:
    """Register a :class:`DjangoTracker` as the default tracker if tracking is enabled.

    Does nothing unless the ``EVENT_TRACKING_ENABLED`` setting is true. Returns the
    registered tracker, or None. Raises what :class:`DjangoTracker` raises, and then
    leaves the previous default tracker in place.
    """
    if not getattr(settings, DJANGO_ENABLED_SETTING_NAME, False):
        return None
    built = DjangoTracker()
    tracker.register_tracker(built)
    return built
