"""Exceptions raised by the library itself."""

__all__ = ["ImproperlyConfigured", "ValidationError"]


class ImproperlyConfigured(ValueError):
    """A tracker, backend or processor was given settings it cannot work with.

    A :class:`ValueError`, so code that validates options generically catches it too.
    """


class ValidationError(ValueError):
    """An event did not match its documented type while validation was ``strict``."""
