"""eventtracking.config: the event-bus switch, read from Django settings."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import django_support
import pytest
from django.test import override_settings

from eventtracking import config

pytestmark = pytest.mark.usefixtures("django_env")

# pytest finds fixtures by module attribute: these come from django_support.
django_env = django_support.django_env


def test_off_by_default_and_follows_the_setting() -> None:
    """SEND_TRACKING_EVENT_EMITTED_SIGNAL is off unless the setting is true, read at
    every call."""
    toggle = config.SEND_TRACKING_EVENT_EMITTED_SIGNAL
    assert toggle.is_enabled() is False
    with override_settings(SEND_TRACKING_EVENT_EMITTED_SIGNAL=True):
        assert toggle.is_enabled() is True
    with override_settings(SEND_TRACKING_EVENT_EMITTED_SIGNAL=0):
        assert toggle.is_enabled() is False


def test_it_is_an_edx_toggles_setting_toggle_when_installed() -> None:
    """With edx-toggles installed it is one of its SettingToggles, with the 4.x name,
    default and module, so toggle reports list it."""
    from edx_toggles.toggles import SettingToggle

    toggle = config.SEND_TRACKING_EVENT_EMITTED_SIGNAL
    assert isinstance(toggle, SettingToggle)
    assert (toggle.name, toggle.default, toggle.module_name) == (
        "SEND_TRACKING_EVENT_EMITTED_SIGNAL",
        False,
        "eventtracking.config",
    )
    assert toggle in SettingToggle.get_instances()


def test_own_toggle_reads_the_setting() -> None:
    """The stand-in used without edx-toggles has the same surface and reads the same
    setting."""
    toggle = config.SettingToggle("SOME_SWITCH", default=True, module_name="here")
    assert (toggle.name, toggle.default, toggle.module_name) == ("SOME_SWITCH", True, "here")
    assert toggle.is_enabled() is True
    with override_settings(SOME_SWITCH=False):
        assert toggle.is_enabled() is False


WITHOUT_TOGGLES = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "edx_toggles":
                raise ImportError("blocked by the test")
            return None

    sys.meta_path.insert(0, Block())
    from eventtracking.config import SEND_TRACKING_EVENT_EMITTED_SIGNAL as toggle, SettingToggle
    assert type(toggle) is SettingToggle
    # No Django settings configured: the default, not an exception.
    print(toggle.is_enabled())
    from django.conf import settings
    settings.configure(SEND_TRACKING_EVENT_EMITTED_SIGNAL=True)
    print(toggle.is_enabled())
    """
)


def test_without_edx_toggles_the_switch_still_works() -> None:
    """Without edx-toggles the switch is the module's own SettingToggle: it reads the
    default outside a configured project, and the setting inside one."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TOGGLES],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
