"""Tests for eventtracking.exceptions and eventtracking.processors.exceptions."""

from __future__ import annotations

from typing import Any

import pytest

from eventtracking import exceptions
from eventtracking.backends.logger import LoggerBackend
from eventtracking.exceptions import ImproperlyConfigured, ValidationError
from eventtracking.processors import exceptions as processor_exceptions
from eventtracking.processors.exceptions import (
    EventEmissionExit,
    NoBackendEnabled,
    NoTransformerImplemented,
)
from eventtracking.processors.regex_filter import RegexFilter


@pytest.mark.parametrize("exc", [ImproperlyConfigured, ValidationError])
def test_library_errors_are_value_errors(exc: type[Exception]) -> None:
    """The library's own errors are ValueErrors, so generic option checks catch them."""
    assert issubclass(exc, ValueError)


def test_improperly_configured_is_caught_as_value_error() -> None:
    """Configuration errors raised by components can be caught as ValueError."""
    with pytest.raises(ValueError, match="filter_type"):
        RegexFilter("sometimes")
    with pytest.raises(ValueError, match="level"):
        LoggerBackend(level="loud")


def test_routing_exceptions_are_distinct_exceptions() -> None:
    """EventEmissionExit, NoTransformerImplemented and NoBackendEnabled are separate
    Exception subclasses, so the router can tell a drop from a refusal."""
    classes = [EventEmissionExit, NoTransformerImplemented, NoBackendEnabled]
    for cls in classes:
        assert issubclass(cls, Exception)
        assert not issubclass(cls, ValueError)
        others = [other for other in classes if other is not cls]
        assert not any(issubclass(cls, other) for other in others)


@pytest.mark.parametrize("module", [exceptions, processor_exceptions])
def test_all_lists_every_exception(module: object) -> None:
    """Each module's __all__ names exactly its exception classes."""
    public = {
        name
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    assert set(module.__all__) == public  # type: ignore[attr-defined]


def _configuration_errors() -> list[tuple[str, Any, type[Exception]]]:
    """(what, a call that misconfigures something, the built-in 4.x raised for it)."""
    from eventtracking._util.engines import BACKEND, build
    from eventtracking.backends.memory import InMemoryBackend
    from eventtracking.backends.segment import SegmentBackend
    from eventtracking.processors.whitelist import NameWhitelistProcessor
    from eventtracking.routing import RoutingBackend
    from eventtracking.tracker import Tracker

    return [
        ("backend without send", lambda: RoutingBackend({"x": object()}), ValueError),
        ("processor not callable", lambda: RoutingBackend(processors=[1]), ValueError),
        ("whitelist is a string", lambda: NameWhitelistProcessor("abc"), TypeError),
        ("locator without get", lambda: Tracker(context_locator=object()), TypeError),
        ("bad ENGINE", lambda: build({"ENGINE": "no.such.Thing"}, "X", BACKEND), ValueError),
        ("max_events of 0", lambda: InMemoryBackend(max_events=0), ValueError),
        ("client without track", lambda: SegmentBackend(client=object()), TypeError),
        ("unknown filter type", lambda: RegexFilter("sometimes"), ValueError),
    ]


@pytest.mark.parametrize(
    ("make", "builtin"),
    [(make, builtin) for _, make, builtin in _configuration_errors()],
    ids=[what for what, _, _ in _configuration_errors()],
)
def test_every_configuration_error_is_improperly_configured(
    make: Any, builtin: type[Exception]
) -> None:
    """Each configuration error is an ImproperlyConfigured, and still the ValueError or
    TypeError that 4.x raised for the same mistake (ConfigurationTypeError for the
    latter)."""
    with pytest.raises(ImproperlyConfigured) as caught:
        make()
    assert isinstance(caught.value, builtin)
    if builtin is TypeError:
        assert isinstance(caught.value, exceptions.ConfigurationTypeError)


def test_django_setting_errors_are_both_improperly_configured() -> None:
    """A bad setting of the Django app raises an error that is the library's
    ImproperlyConfigured and Django's, so either except clause catches it."""
    from django.core.exceptions import ImproperlyConfigured as DjangoImproperlyConfigured

    from eventtracking.django._settings import SettingError

    assert issubclass(SettingError, ImproperlyConfigured)
    assert issubclass(SettingError, DjangoImproperlyConfigured)
