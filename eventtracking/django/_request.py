"""What the middleware reads from a request, and the settings that shape it.

Every setting has a parser here that returns the ready-to-use value or raises Django's
ImproperlyConfigured naming the setting, the bad value and the fix. The middleware
calls the parsers once, when Django builds it; the system checks call the same parsers
so that ``manage.py check`` reports the same problems first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    ImproperlyConfigured,
    SuspiciousOperation,
    TooManyFieldsSent,
)
from django.http import HttpRequest
from django.utils.crypto import salted_hmac
from django.utils.functional import LazyObject, empty
from django.utils.module_loading import import_string

from eventtracking._ratelimit import RateLimitedLogger

LOG = logging.getLogger("eventtracking.django.middleware")
RATE_LIMITED = RateLimitedLogger(LOG)

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
#: Fields read only when an event is emitted: reading them earlier would either cost a
#: session or user lookup, or miss what middleware ordered after ours sets up.
LAZY_FIELDS = frozenset({"user_id", "username", "session"})
USER_FIELDS = frozenset({"user_id", "username"})

DEFAULT_CONTEXT_NAME = "django.request"
DEFAULT_EVENT_NAME = "django.request"
DEFAULT_REQUEST_ID_HEADER = "X-Request-ID"
#: A client-supplied request id is kept when it is 1 to 200 visible ASCII characters;
#: anything else (spaces, control characters, huge values) is replaced by a new one.
REQUEST_ID_PATTERN = re.compile(r"[!-~]{1,200}")
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
#: What a blanked value becomes.
BLANK = ""
#: Path expressions whose groups (or whole match, without groups) are redacted: the
#: token of Django's password-reset link (``reset/<uidb64>/<token>/``, where the token is
#: a base-36 timestamp, a dash and an HMAC in hex), and Open edX's password-reset and
#: account-activation links.
DEFAULT_REDACT_PATHS = (
    r"/reset/[0-9A-Za-z_\-]+/([0-9a-z]+-[0-9a-f]+)/",
    r"/password_reset_confirm/([^/]+)/",
    r"/activate/([^/]+)",
)
#: What a redacted part of a path becomes.
REDACTED = "<redacted>"
#: Query values longer than this are not read as JSON (a query is rarely this long).
MAX_JSON_VALUE = 65_536
#: Seconds that process exit may spend closing the tracker.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0

SESSION_SALT = "eventtracking.django.session"


# -- settings -------------------------------------------------------------------------


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _fail(name: str, value: Any, fix: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name} = {value!r} is invalid: {fix}")


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
    return value


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
    patterns = []
    for expression in _string_list(setting, value):
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
    patterns = []
    for expression in dict.fromkeys([*DEFAULT_REDACT_PATHS, *extra]):
        try:
            patterns.append(re.compile(expression))
        except re.error as error:
            fix = f"{expression!r} does not compile: {error}."
            raise _fail(setting, extra, fix) from None
    return tuple(patterns)


def shutdown_timeout() -> float:
    """``EVENT_TRACKING_SHUTDOWN_TIMEOUT``: seconds process exit may spend flushing."""
    setting = "EVENT_TRACKING_SHUTDOWN_TIMEOUT"
    value = _setting(setting, DEFAULT_SHUTDOWN_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise _fail(setting, value, "it must be a number of seconds, 0 or more.")
    return float(value)


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
        """Parse the settings; ImproperlyConfigured names the first bad one."""
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


# -- reading the request --------------------------------------------------------------


def _is_trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_ip(meta: Mapping[str, Any], proxies: tuple[Network, ...]) -> str:
    """The client's address: REMOTE_ADDR, unless it is a trusted proxy.

    When REMOTE_ADDR is in ``proxies``, X-Forwarded-For is read from the right, skipping
    trusted proxies; the first address that is not one is the client. Entries further
    left were written by the client and are not believed. If every entry is trusted, the
    leftmost is the client; an entry that is not an address stops the walk at the last
    trusted hop.
    """
    remote = str(meta.get("REMOTE_ADDR") or "")
    if not proxies or not _is_trusted(remote, proxies):
        return remote
    hops = [hop.strip() for hop in str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")]
    client = remote
    for hop in reversed([hop for hop in hops if hop]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client
        client = hop
        if not _is_trusted(hop, proxies):
            return hop
    return client


def request_id(meta: Mapping[str, Any], key: str) -> str:
    """The request id the client or a proxy sent in ``key``, or a new random one."""
    supplied = meta.get(key)
    if isinstance(supplied, str) and REQUEST_ID_PATTERN.fullmatch(supplied):
        return supplied
    return uuid.uuid4().hex


def _host(request: HttpRequest) -> str:
    try:
        return request.get_host()
    except DisallowedHost:
        # Still worth recording: it is what the client asked for.
        return str(request.META.get("HTTP_HOST") or request.META.get("SERVER_NAME") or "")


#: What :func:`loaded_user` returns for a user that is not loaded yet, when loading it
#: would block.
NOT_LOADED = object()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def loaded_user(request: HttpRequest, may_block: bool) -> Any:
    """The request's user; None without authentication middleware.

    Returns :data:`NOT_LOADED` when the user has not been loaded yet and ``may_block`` is
    false: on an event loop, loading it would mean a blocking session and database
    lookup.
    """
    attributes = request.__dict__
    # Django caches the loaded user under these names (auser() on Django 5).
    for cached in ("_cached_user", "_acached_user"):
        if cached in attributes:
            return attributes[cached]
    user = attributes.get("user")
    if isinstance(user, LazyObject):
        if user._wrapped is empty:
            if not may_block:
                return NOT_LOADED
            # Any attribute access makes the lazy object load the user.
            getattr(user, "is_authenticated", None)
        return user._wrapped
    return user


def user_fields(request: HttpRequest) -> tuple[Any, str]:
    """``(user_id, username)``: ``(None, '')`` for anonymous or not-yet-known users."""
    user = loaded_user(request, may_block=not _on_event_loop())
    if user is None or user is NOT_LOADED or not getattr(user, "is_authenticated", False):
        return None, ""
    get_username = getattr(user, "get_username", None)
    username = get_username() if callable(get_username) else getattr(user, "username", "")
    return getattr(user, "pk", None), str(username or "")


def session_field(request: HttpRequest) -> str:
    """A keyed hash of the session key ('' without a session); never the key itself."""
    session = request.__dict__.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    if not key:
        key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not key:
        return ""
    return salted_hmac(SESSION_SALT, key, algorithm="sha256").hexdigest()[:32]


class RequestContext(Mapping[str, Any]):
    """The request context: fixed fields read on entry, user and session read on use.

    The tracker reads it when the first event is emitted under it (and again whenever
    another context is entered or left), so the user is looked up only if an event is
    emitted, and middleware ordered after ours has already run by then.
    """

    __slots__ = ("_keys", "_request", "_values")

    def __init__(self, request: HttpRequest, keys: tuple[str, ...], values: dict[str, Any]):
        self._request = request
        self._keys = keys
        self._values = values

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            if key not in LAZY_FIELDS or key not in self._keys:
                raise
        try:
            if key == "session":
                return session_field(self._request)
            user_id, username = user_fields(self._request)
        except Exception:
            RATE_LIMITED.error(
                f"lazy:{key}", "Could not read %s for the request context", key, exc_info=True
            )
            return None if key == "user_id" else ""
        return user_id if key == "user_id" else username

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        fixed = {key: self._values[key] for key in self._keys if key in self._values}
        return f"<RequestContext {fixed} lazy={sorted(LAZY_FIELDS & set(self._keys))}>"


def build_context(request: HttpRequest, config: ContextConfig) -> RequestContext:
    """Read the request's fixed fields now and wrap them with the lazy ones."""
    meta = request.META
    fields = config.fields
    readers: dict[str, Callable[[], Any]] = {
        "ip": lambda: client_ip(meta, config.proxies),
        "agent": lambda: str(meta.get("HTTP_USER_AGENT") or ""),
        "host": lambda: _host(request),
        "path": lambda: redact_path(request.path, config.redactions),
        "method": lambda: request.method or "",
        "referer": lambda: clean_referer(meta.get("HTTP_REFERER"), config.redactions),
        "accept_language": lambda: str(meta.get("HTTP_ACCEPT_LANGUAGE") or ""),
        "request_id": lambda: request_id(meta, config.request_id_key),
    }
    values = {field: readers[field]() for field in fields if field not in LAZY_FIELDS}
    keys = fields
    if config.hook is not None:
        extra = config.hook(request)
        if extra:
            values.update(extra)
            keys = (*fields, *(key for key in extra if key not in fields))
    return RequestContext(request, keys, values)


# -- what is stored of paths, referers and queries ------------------------------------


def _redact_groups(match: re.Match[str]) -> str:
    """The match with each group's text (or, without groups, all of it) redacted."""
    if not match.re.groups:
        return REDACTED
    text, offset = match.group(0), match.start(0)
    pieces, position = [], 0
    for group in range(1, match.re.groups + 1):
        start, end = match.span(group)
        if start < 0 or start - offset < position:
            # A group that did not take part, or one nested in a group already redacted.
            continue
        pieces += [text[position : start - offset], REDACTED]
        position = end - offset
    pieces.append(text[position:])
    return "".join(pieces)


def redact_path(path: str, redactions: tuple[re.Pattern[str], ...]) -> str:
    """``path`` with the parts matched by ``redactions`` replaced by ``<redacted>``."""
    for pattern in redactions:
        path = pattern.sub(_redact_groups, path)
    return path


def clean_referer(value: Any, redactions: tuple[re.Pattern[str], ...]) -> str:
    """The Referer's scheme, host and redacted path: no query, fragment or credentials.

    A password-reset link's token is often in its query; a browser never sends
    credentials, but a client may. An unparseable value is stored as ``''``.
    """
    if not value:
        return ""
    try:
        parts = urlsplit(str(value))
    except ValueError:
        return ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, redact_path(parts.path, redactions), "", ""))


def _blank_json(value: Any, secrets: SecretKeys, depth: int = 0) -> tuple[Any, bool]:
    """``value`` with secret-looking keys blanked at any depth, and whether any was."""
    changed = False
    if depth > 100:
        return value, changed
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if secrets.match(key):
                result[key], changed = BLANK, True
            else:
                result[key], inner = _blank_json(item, secrets, depth + 1)
                changed = changed or inner
        return result, changed
    if isinstance(value, list):
        items = []
        for item in value:
            cleaned, inner = _blank_json(item, secrets, depth + 1)
            items.append(cleaned)
            changed = changed or inner
        return items, changed
    return value, changed


def _blank_value(value: str, secrets: SecretKeys) -> str:
    """A query value, with the secrets blanked inside it when it holds a JSON document."""
    if not value.lstrip().startswith(("{", "[")) or len(value) > MAX_JSON_VALUE:
        return value
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):
        return value
    cleaned, changed = _blank_json(document, secrets)
    return json.dumps(cleaned, ensure_ascii=False) if changed else value


def blank_secrets(params: Any, secrets: SecretKeys) -> dict[str, Any]:
    """Query parameters as a dict (lists for repeated keys), secret-looking ones blanked.

    Values that are JSON documents have their secret-looking keys blanked too.
    """
    result: dict[str, Any] = {}
    for key, values in params.lists():
        if secrets.match(key):
            values = [BLANK] * len(values)
        else:
            values = [_blank_value(value, secrets) for value in values]
        result[key] = values[0] if len(values) == 1 else values
    return result


def query_data(request: HttpRequest, secrets: SecretKeys) -> tuple[dict[str, Any], str | None]:
    """The request's query for its event, and why it was left out (None when it was not).

    Django refuses to parse a query with more than ``DATA_UPLOAD_MAX_NUMBER_FIELDS``
    fields: the event then has an empty query and ``query_omitted='too_many_fields'``.
    """
    try:
        return blank_secrets(request.GET, secrets), None
    except TooManyFieldsSent:
        return {}, "too_many_fields"
    except SuspiciousOperation:
        return {}, "unreadable"
