"""MongoDB URIs and credentials: which servers they name, and how to show them safely.

A password often reaches :class:`~eventtracking.backends.mongodb.MongoBackend` inside
its URI, and the URI then shows up in error messages, ``repr()``, logs and Django's
system checks. Three rules keep the secret out of all of them (``docs/mongodb.rst``
tells users why): text shown to people goes through :func:`redact`, which hides
everything before the last ``@`` and the values of the options that hold secrets; a URI
with an ``@`` after its list of servers is refused before anything parses it; messages
from pymongo go through :func:`scrub`, which blanks the secrets it was given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from eventtracking.exceptions import ImproperlyConfigured

__all__ = [
    "DEFAULT_PORT",
    "SCHEMES",
    "client_options",
    "option_names",
    "redact",
    "resolve_target",
    "scrub",
    "secrets",
    "unacknowledged",
]

SCHEMES = ("mongodb://", "mongodb+srv://")
DEFAULT_PORT = 27017

# URI and client options whose values are secrets, lower-cased.
_SECRET_OPTIONS = frozenset(
    {"password", "tlscertificatekeyfilepassword", "authmechanismproperties"}
)
_HIDDEN = "***"
# Shorter secrets are not scrubbed from other text: it would blank ordinary words. The
# URI's own rendering never shows them (see redact).
_SCRUB_MIN_LENGTH = 3


def redact(text: str) -> str:
    """``text`` (a URI, or a host name) without its user info or secret option values."""
    scheme, separator, body = text.partition("://")
    prefix = f"{scheme}{separator}" if separator else ""
    if not separator:
        body = text
    if "@" in body:
        body = f"{_HIDDEN}@{body.rpartition('@')[2]}"
    main, question, query = body.partition("?")
    if question:
        query = "&".join(_redact_option(pair) for pair in re.split("[&;]", query))
    return f"{prefix}{main}{question}{query}"


def _redact_option(pair: str) -> str:
    name, equals, _value = pair.partition("=")
    if equals and name.strip().lower() in _SECRET_OPTIONS:
        return f"{name}={_HIDDEN}"
    return pair


def scrub(text: str, hidden: Iterable[str]) -> str:
    """``text`` with each of the ``hidden`` strings replaced by ``***``."""
    for secret in sorted(hidden, key=len, reverse=True):
        if len(secret) >= _SCRUB_MIN_LENGTH:
            text = text.replace(secret, _HIDDEN)
    return text


def secrets(target: str, password: str | None, extra: dict[str, Any]) -> set[str]:
    """The strings that must never be shown: the URI's user info and password (as
    written and decoded), the password option, and secret option values."""
    found: set[str] = set()
    if password:
        found.add(password)
    for key, value in extra.items():
        if key.lower() in _SECRET_OPTIONS and isinstance(value, str):
            found.add(value)
    if target.startswith(SCHEMES):
        body = target.split("://", 1)[1]
        if "@" in body:
            userinfo = body.rpartition("@")[0]
            found.add(userinfo)
            raw_password = userinfo.partition(":")[2]
            found.update({raw_password, unquote_plus(raw_password)})
        for name, value in _query_pairs(target):
            if name.lower() in _SECRET_OPTIONS:
                found.update({value, unquote_plus(value)})
    found.discard("")
    return found


def _query_pairs(target: str) -> list[tuple[str, str]]:
    if not target.startswith(SCHEMES) or "?" not in target:
        return []
    query = target.split("?", 1)[1]
    return parse_qsl(query.replace(";", "&"), keep_blank_values=True)


def option_names(target: str) -> set[str]:
    """The lower-cased option names in a URI's query string (empty for a host name)."""
    return {name.lower() for name, _ in _query_pairs(target)}


def _split(uri: str) -> tuple[str, str | None, str]:
    """The scheme, the user info (None without one) and the server list of ``uri``.

    Split as pymongo does: the query at the first ``?``, the database at the first
    ``/``, the user info at the last ``@`` of what is left. An ``@`` anywhere after the
    server list is refused (see the module docstring).
    """
    scheme = next(s for s in SCHEMES if uri.startswith(s))
    body = uri[len(scheme) :]
    host_part = re.split("[/?]", body, maxsplit=1)[0]
    if "@" in body[len(host_part) :]:
        msg = (
            f"uri {redact(uri)!r} has an '@' after its servers, so its user name or "
            "password is probably not percent-encoded: a '/', '?', '@' or ':' in them "
            "must be, for example with urllib.parse.quote_plus. An '@' in the database "
            "name or in an option value must be written %40."
        )
        raise ImproperlyConfigured(msg)
    if "@" in host_part:
        userinfo, _, hosts = host_part.rpartition("@")
        return scheme, userinfo, hosts
    return scheme, None, host_part


def uri_user(target: str) -> str | None:
    """The (decoded) user name in a URI, if it has one."""
    if not target.startswith(SCHEMES):
        return None
    _scheme, userinfo, _hosts = _split(target)
    if userinfo is None:
        return None
    return unquote_plus(userinfo.split(":", 1)[0])


def _seeds(uri: str) -> tuple[str, list[tuple[str, int | None]]]:
    """The scheme and the (host, port) pairs of a URI, without resolving anything."""
    scheme, _userinfo, hosts = _split(uri)
    seeds: list[tuple[str, int | None]] = []
    for entry in hosts.split(","):
        if not entry:
            continue
        if entry.startswith("["):
            name, _, port_text = entry[1:].partition("]")
            port_text = port_text.lstrip(":")
        else:
            name, _, port_text = entry.partition(":")
        if scheme == "mongodb+srv://":
            seeds.append((name.lower(), None))
            continue
        try:
            port = int(port_text) if port_text else DEFAULT_PORT
        except ValueError:
            # The entry comes from after the user info: it holds no secret.
            msg = f"uri {redact(uri)!r} has a port that is not a number in {entry!r}"
            raise ImproperlyConfigured(msg) from None
        seeds.append((name.lower(), port))
    if not seeds:
        msg = f"uri {redact(uri)!r} names no server"
        raise ImproperlyConfigured(msg)
    return scheme, seeds


def resolve_target(
    host: str | None, port: int | None, uri: str | None
) -> tuple[str, int | None, str]:
    """Return MongoClient's ``host`` and ``port`` arguments, and the servers' name.

    The name (``mongodb://db1:27017,db2:27017``) holds no credentials: it names spool
    streams, which status commands print.
    """
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        msg = f"port must be an int, got {port!r}"
        raise ImproperlyConfigured(msg)
    if host is not None and not isinstance(host, str):
        msg = f"host must be a string, got {type(host).__name__}"
        raise ImproperlyConfigured(msg)
    if host is not None and host.startswith(SCHEMES):
        # 4.x passed host straight to MongoClient, which accepts a URI there too.
        if uri is not None and uri != host:
            msg = (
                f"MongoBackend got two different URIs: host={redact(host)!r} and "
                f"uri={redact(uri)!r}. Pass the URI as uri only."
            )
            raise ImproperlyConfigured(msg)
        uri, host = host, None
    if uri is None:
        if host is not None and "@" in host:
            msg = (
                f"host {redact(host)!r} holds an '@': give a host name, and the credentials "
                "as user and password (or in uri)."
            )
            raise ImproperlyConfigured(msg)
        host = host or "localhost"
        port = port or DEFAULT_PORT
        return host, port, f"mongodb://{host.lower()}:{port}"
    if not isinstance(uri, str) or not uri.startswith(SCHEMES):
        shown = redact(uri) if isinstance(uri, str) else type(uri).__name__
        msg = f"uri must start with 'mongodb://' or 'mongodb+srv://', got {shown!r}"
        raise ImproperlyConfigured(msg)
    scheme, seeds = _seeds(uri)
    if (host is not None or port is not None) and not any(
        (host is None or host.lower() == seed_host) and (port is None or port == seed_port)
        for seed_host, seed_port in seeds
    ):
        given = ", ".join(
            f"{name}={redact(str(value))!r}"
            for name, value in (("host", host), ("port", port))
            if value
        )
        servers = ", ".join(f"{h}:{p}" if p else h for h, p in seeds)
        msg = (
            f"MongoBackend got uri={redact(uri)!r}, which names {servers}, and {given}, "
            "which the URI does not name. Pass only uri: it takes precedence over host "
            "and port."
        )
        raise ImproperlyConfigured(msg)
    names = ",".join(sorted(f"{h}:{p}" if p else h for h, p in seeds))
    return uri, None, f"{scheme}{names}"


def client_options(
    extra: dict[str, Any], target: str, user: str | None, password: str | None, database: str
) -> dict[str, Any]:
    """MongoClient keyword arguments from ``extra`` and the credentials.

    Messages name the options in conflict, never their values.
    """
    lowered = {key.lower(): key for key in extra}
    for forbidden in ("host", "port"):
        if forbidden in lowered:
            msg = (
                f"extra sets {lowered[forbidden]!r}; pass it as the {forbidden} option or "
                "in uri instead, not in extra"
            )
            raise ImproperlyConfigured(msg)
    options = dict(extra)
    if user is None and password is None:
        return options
    if user is None or password is None:
        msg = "user and password go together: pass both, or neither"
        raise ImproperlyConfigured(msg)
    for key, value in (("username", user), ("password", password)):
        if key in lowered and extra[lowered[key]] != value:
            msg = (
                f"extra sets {lowered[key]!r} to another value than the {key} option; "
                "set it in one place only"
            )
            raise ImproperlyConfigured(msg)
    in_uri = uri_user(target)
    if in_uri is not None and in_uri != user:
        msg = (
            "uri names one user and the user option another; set the credentials in one place only"
        )
        raise ImproperlyConfigured(msg)
    options["username"] = user
    options["password"] = password
    if "authsource" not in lowered and "authsource" not in option_names(target):
        # 4.x authenticated against the events database; keep that as the default.
        options["authSource"] = database
    return options


def unacknowledged(options: Mapping[str, Any], target: str) -> bool:
    """Whether the client ``options`` or the URI ``target`` ask for ``w=0``: writes
    that the server does not acknowledge."""
    lowered = {key.lower(): value for key, value in options.items()}
    in_uri = any(name.lower() == "w" and value == "0" for name, value in _query_pairs(target))
    return lowered.get("w") in (0, "0") or in_uri
