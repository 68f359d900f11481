"""Exceptions raised by the library itself.

:class:`ImproperlyConfigured` is the base of every configuration error: a tracker,
router, backend, processor or setting given something it cannot work with, reported
when it is built. Catch it to catch them all. Each keeps the built-in base that 4.x
raised for the same mistake, so code written for 4.x still catches it:

* :class:`ImproperlyConfigured` itself is a :class:`ValueError`, which 4.x raised for a
  backend without ``send``, a processor that is not callable and a bad ENGINE setting;
* :class:`ConfigurationTypeError` is also a :class:`TypeError`, which 4.x raised for a
  ``NameWhitelistProcessor`` whitelist that is a single string.
"""

__all__ = ["ConfigurationTypeError", "ImproperlyConfigured", "ValidationError"]


class ImproperlyConfigured(ValueError):
    """A tracker, backend or processor was given settings it cannot work with.

    The base of the library's configuration errors, and a :class:`ValueError`, so code
    that validates options generically catches it too.
    """


class ConfigurationTypeError(ImproperlyConfigured, TypeError):
    """A configuration value of the wrong kind, where 4.x raised :class:`TypeError`.

    For example a whitelist that is a string rather than a collection of names, or a
    ``context_locator`` that is not a locator. Caught by ``except TypeError`` as in 4.x,
    and by ``except ImproperlyConfigured`` with every other configuration error.
    """


class ValidationError(ValueError):
    """An event did not match its documented type while validation was ``strict``."""
