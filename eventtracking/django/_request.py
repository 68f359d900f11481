"""What the middleware reads from a request: the request context and its lazy fields.

The settings that shape it are parsed in :mod:`eventtracking.django._settings`, and
what is stored of paths, referers and queries is cleaned in
:mod:`eventtracking.django._redact`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils.crypto import salted_hmac
from django.utils.functional import LazyObject, empty

from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking.django._redact import clean_referer, redact_path
from eventtracking.django._settings import ContextConfig, Network

LOG = logging.getLogger("eventtracking.django.middleware")
RATE_LIMITED = RateLimitedLogger(LOG)

#: Fields read only when an event is emitted: reading them earlier would either cost a
#: session or user lookup, or miss what middleware ordered after ours sets up.
LAZY_FIELDS = frozenset({"user_id", "username", "session"})
#: A client-supplied request id is kept when it is 1 to 200 visible ASCII characters;
#: anything else (spaces, control characters, huge values) is replaced by a new one.
REQUEST_ID_PATTERN = re.compile(r"[!-~]{1,200}")
SESSION_SALT = "eventtracking.django.session"


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
        return str(request.get_host())
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
    return str(salted_hmac(SESSION_SALT, key, algorithm="sha256").hexdigest()[:32])


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
