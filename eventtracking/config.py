"""Feature switches read from Django settings.

:data:`SEND_TRACKING_EVENT_EMITTED_SIGNAL` is the switch of the Open edX event bus: while
it is off (the default), :class:`~eventtracking.backends.event_bus.EventBusRoutingBackend`
publishes nothing. It is on when the Django setting of the same name is true::

    SEND_TRACKING_EVENT_EMITTED_SIGNAL = True

event-tracking 4.x defined it as an edx-toggles ``SettingToggle``. When edx-toggles is
installed (it is in every Open edX deployment) it still is one, so toggle reports list
it; without edx-toggles it is a :class:`SettingToggle` of this module, with the same
``name``, ``default``, ``module_name`` and ``is_enabled()``. Either way the setting is
read on every call, so ``override_settings`` in tests takes effect at once.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SEND_TRACKING_EVENT_EMITTED_SIGNAL", "SettingToggle"]


class SettingToggle:
    """A switch that is on when the Django setting ``name`` is true.

    The stand-in for ``edx_toggles.toggles.SettingToggle`` when edx-toggles is not
    installed. Outside a configured Django project the switch reads ``default``: there
    are no settings to read, and a switch must never raise into the caller.
    """

    def __init__(self, name: str, default: bool = False, module_name: str = "") -> None:
        self.name = name
        self.default = default
        self.module_name = module_name

    def __repr__(self) -> str:
        return f"<SettingToggle {self.name} default={self.default!r}>"

    def is_enabled(self) -> bool:
        """Whether the setting is true (``default`` when it is not set)."""
        try:
            from django.conf import settings
        except ImportError:
            return bool(self.default)
        if not settings.configured:
            return bool(self.default)
        return bool(getattr(settings, self.name, self.default))


def _toggle_class() -> Any:
    try:
        from edx_toggles.toggles import SettingToggle as EdxSettingToggle
    except ImportError:
        return SettingToggle
    return EdxSettingToggle


# .. toggle_name: SEND_TRACKING_EVENT_EMITTED_SIGNAL
# .. toggle_implementation: SettingToggle
# .. toggle_default: False
# .. toggle_description: When True, EventBusRoutingBackend publishes the events named in
#   EVENT_BUS_TRACKING_LOGS to the Open edX event bus as TRACKING_EVENT_EMITTED.
# .. toggle_use_cases: opt_in
# .. toggle_creation_date: 2023-10-26
#: On when the Django setting ``SEND_TRACKING_EVENT_EMITTED_SIGNAL`` is true (default False).
SEND_TRACKING_EVENT_EMITTED_SIGNAL = _toggle_class()(
    "SEND_TRACKING_EVENT_EMITTED_SIGNAL", default=False, module_name=__name__
)
