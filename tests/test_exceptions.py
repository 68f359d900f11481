"""Tests for eventtracking.exceptions and eventtracking.processors.exceptions."""

from __future__ import annotations

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
