"""The app's own settings, one parser each: the middleware's and the shutdown timeout.

Every setting has a parser here that returns the ready-to-use value or raises
:class:`SettingError` naming the setting, the bad value and the fix. The middleware
calls the parsers once, when Django builds it; the system checks call the same parsers
(:data:`PARSERS`) so that ``manage.py check`` reports the same problems first.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured as DjangoImproperlyConfigured
from django.http import HttpRequest
from django.utils.module_loading import import_string

from eventtracking._util.options import is_seconds
from eventtracking.exceptions import ImproperlyConfigured

#: The tag of the app's system checks: ``manage.py check --tag eventtracking``.
TAG = "eventtracking"

_Check = TypeVar("_Check", bound=Callable[..., list[checks.CheckMessage]])


def system_check(check: _Check) -> _Check:
    """Register ``check`` with Django's system checks under :data:`TAG`; return it as
    it is (Django's own decorator, untyped, would make it ``Any``)."""
    checks.register(check, TAG)
    return check


class SettingError(ImproperlyConfigured, DjangoImproperlyConfigured):
    """A setting of the app has a value it cannot work with.

    The library's :class:`~eventtracking.exceptions.ImproperlyConfigured`, and Django's
    own, which Django code and the system checks expect of a bad setting.
    """


#: Every field the request context can hold, in the order events show them.
FIELDS = (
    "user_id",
    "username",
    "session",
    "ip",
    "agent",
    "host",
    "path",
    "method",
    "referer",
    "accept_language",
    "request_id",
)
USER_FIELDS = frozenset({"user_id", "username"})

DEFAULT_CONTEXT_NAME = "django.request"
DEFAULT_EVENT_NAME = "django.request"
DEFAULT_REQUEST_ID_HEADER = "X-Request-ID"
#: Query keys that contain one of these (case-insensitively) have their values blanked.
DEFAULT_SECRET_KEYS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "signature",
    "csrf",
    "sessionid",
    "authorization",
    "credentials",
    "access_token",
)
#: Query keys that have one of these as a whole word (``reset_code``, ``apiKey``,
#: ``X-Auth-Token``; words split at punctuation and at camelCase) have their values
#: blanked. Inside a word they would blank ordinary keys: keyword, author, design.
DEFAULT_SECRET_WORDS = ("code", "key", "sig", "pass", "pwd", "auth", "jwt", "otp", "session", "sid")
#: Path expressions whose groups (or whole match, without groups) are redacted: the
#: token of Django's password-reset link (``reset/<uidb64>/<token>/``, where the token is
#: a base-36 timestamp, a dash and an HMAC in hex), and Open edX's password-reset and
#: account-activation links.
DEFAULT_REDACT_PATHS = (
    r"/reset/[0-9A-Za-z_\-]+/([0-9a-z]+-[0-9a-f]+)/",
    r"/password_reset_confirm/([^/]+)/",
    r"/activate/([^/]+)",
)
#: Seconds that process exit may spend closing the tracker.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0


# -- settings -------------------------------------------------------------------------


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _fail(name: str, value: Any, fix: str) -> SettingError:
    return SettingError(f"{name} = {value!r} is invalid: {fix}")


def _string_list(name: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _fail(name, value, "it must be a list of strings.")
    items = list(value)
    bad = [item for item in items if not isinstance(item, str)]
    if bad:
        raise _fail(name, value, f"every entry must be a string; {bad!r} are not.")
    return items


def _name(setting: str, default: str) -> str:
    value = _setting(setting, default)
    if not isinstance(value, str) or not value.strip():
        raise _fail(setting, value, "it must be a non-empty string.")
    return value


def context_name() -> str:
    """``EVENT_TRACKING_REQUEST_CONTEXT_NAME``: the name the request context is entered as."""
    return _name("EVENT_TRACKING_REQUEST_CONTEXT_NAME", DEFAULT_CONTEXT_NAME)


def context_fields() -> tuple[str, ...]:
    """``EVENT_TRACKING_REQUEST_CONTEXT_FIELDS``: the fields to record, all by default."""
    setting = "EVENT_TRACKING_REQUEST_CONTEXT_FIELDS"
    value = _setting(setting, None)
    if value is None:
        return FIELDS
    fields = _string_list(setting, value)
    unknown = [field for field in fields if field not in FIELDS]
    if unknown:
        raise _fail(setting, value, f"unknown fields {unknown}; choose from {list(FIELDS)}.")
    # Keep the canonical order, so events look the same whatever order was configured.
    return tuple(field for field in FIELDS if field in fields)


def context_hook() -> Callable[[HttpRequest], Mapping[str, Any] | None] | None:
    """``EVENT_TRACKING_REQUEST_CONTEXT_HOOK``: a callable (or its dotted path) or None."""
    setting = "EVENT_TRACKING_REQUEST_CONTEXT_HOOK"
    value = _setting(setting, None)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as error:
            raise _fail(setting, value, f"it cannot be imported ({error}).") from error
    if not callable(value):
        raise _fail(setting, value, "it must be a callable taking the request.")
    hook: Callable[[Any], Mapping[str, Any] | None] = value
    return hook


def request_id_meta_key() -> str:
    """``EVENT_TRACKING_REQUEST_ID_HEADER`` as a ``request.META`` key."""
    header = _name("EVENT_TRACKING_REQUEST_ID_HEADER", DEFAULT_REQUEST_ID_HEADER)
    return "HTTP_" + header.strip().upper().replace("-", "_")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies() -> tuple[Network, ...]:
    """``EVENT_TRACKING_TRUSTED_PROXIES``: addresses or networks whose X-Forwarded-For counts."""
    setting = "EVENT_TRACKING_TRUSTED_PROXIES"
    value = _setting(setting, ())
    networks = []
    for entry in _string_list(setting, value):
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as error:
            fix = f"{entry!r} is not an address or network: {error}."
            raise _fail(setting, value, fix) from None
    return tuple(networks)


def event_name() -> str:
    """``EVENT_TRACKING_REQUEST_EVENT_NAME``: the name of the per-request event."""
    return _name("EVENT_TRACKING_REQUEST_EVENT_NAME", DEFAULT_EVENT_NAME)


def skip_patterns() -> tuple[re.Pattern[str], ...]:
    """``EVENT_TRACKING_REQUEST_EVENT_SKIP``: path regexes (``re.match``) that emit nothing."""
    setting = "EVENT_TRACKING_REQUEST_EVENT_SKIP"
    value = _setting(setting, ())
    return _compiled(setting, value, _string_list(setting, value))


def _compiled(setting: str, value: Any, expressions: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """``expressions`` compiled; SettingError for ``setting`` (``value``) naming one that
    does not compile."""
    patterns = []
    for expression in expressions:
        try:
            patterns.append(re.compile(expression))
        except re.error as error:
            raise _fail(setting, value, f"{expression!r} does not compile: {error}.") from None
    return tuple(patterns)


_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


@dataclass(frozen=True)
class SecretKeys:
    """Which keys look secret: ``fragments`` anywhere in the key, ``words`` as a word."""

    fragments: tuple[str, ...]
    words: frozenset[str]

    def match(self, key: str) -> bool:
        """Whether the value of ``key`` must be blanked."""
        lowered = key.lower()
        if any(fragment in lowered for fragment in self.fragments):
            return True
        return any(word.lower() in self.words for word in _WORDS.findall(key))


def secret_keys() -> SecretKeys:
    """The default secret key fragments and words, plus
    ``EVENT_TRACKING_REQUEST_EVENT_SECRET_KEYS`` (fragments)."""
    setting = "EVENT_TRACKING_REQUEST_EVENT_SECRET_KEYS"
    extra = _string_list(setting, _setting(setting, ()))
    fragments = tuple(dict.fromkeys([*DEFAULT_SECRET_KEYS, *(key.lower() for key in extra)]))
    return SecretKeys(fragments, frozenset(DEFAULT_SECRET_WORDS))


def redact_paths() -> tuple[re.Pattern[str], ...]:
    """The default path redactions plus ``EVENT_TRACKING_REQUEST_REDACT_PATHS``."""
    setting = "EVENT_TRACKING_REQUEST_REDACT_PATHS"
    extra = _string_list(setting, _setting(setting, ()))
    return _compiled(setting, extra, dict.fromkeys([*DEFAULT_REDACT_PATHS, *extra]))


def shutdown_timeout() -> float:
    """``EVENT_TRACKING_SHUTDOWN_TIMEOUT``: seconds process exit may spend flushing."""
    setting = "EVENT_TRACKING_SHUTDOWN_TIMEOUT"
    value = _setting(setting, DEFAULT_SHUTDOWN_TIMEOUT)
    if not is_seconds(value, allow_zero=True):
        raise _fail(setting, value, "it must be a number of seconds, 0 or more.")
    return float(value)


def metrics() -> Any:
    """``EVENT_TRACKING_METRICS``: see :mod:`eventtracking.django._metrics`."""
    from eventtracking.django import _metrics

    return _metrics.parse(_setting(_metrics.SETTING, None), _fail)


#: Every parser, by setting name, for the system checks.
PARSERS: dict[str, Callable[[], Any]] = {
    "EVENT_TRACKING_REQUEST_CONTEXT_NAME": context_name,
    "EVENT_TRACKING_REQUEST_CONTEXT_FIELDS": context_fields,
    "EVENT_TRACKING_REQUEST_CONTEXT_HOOK": context_hook,
    "EVENT_TRACKING_REQUEST_ID_HEADER": request_id_meta_key,
    "EVENT_TRACKING_TRUSTED_PROXIES": trusted_proxies,
    "EVENT_TRACKING_REQUEST_EVENT_NAME": event_name,
    "EVENT_TRACKING_REQUEST_EVENT_SKIP": skip_patterns,
    "EVENT_TRACKING_REQUEST_EVENT_SECRET_KEYS": secret_keys,
    "EVENT_TRACKING_REQUEST_REDACT_PATHS": redact_paths,
    "EVENT_TRACKING_SHUTDOWN_TIMEOUT": shutdown_timeout,
    "EVENT_TRACKING_METRICS": metrics,
}


@dataclass(frozen=True)
class ContextConfig:
    """The request-context settings, parsed once per middleware instance."""

    name: str
    fields: tuple[str, ...]
    hook: Callable[[HttpRequest], Mapping[str, Any] | None] | None
    request_id_key: str
    proxies: tuple[Network, ...]
    redactions: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def from_settings(cls) -> ContextConfig:
        """Parse the settings; :class:`SettingError` names the first bad one."""
        return cls(
            name=context_name(),
            fields=context_fields(),
            hook=context_hook(),
            request_id_key=request_id_meta_key(),
            proxies=trusted_proxies(),
            redactions=redact_paths(),
        )

    @property
    def wants_user(self) -> bool:
        """Whether any user field is recorded."""
        return not USER_FIELDS.isdisjoint(self.fields)
