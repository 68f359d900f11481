"""Signing Celery messages, so that a worker can refuse those no web node wrote.

Anyone who can write to the broker can publish a ``send_events`` message, and a worker
delivers what it is given. With ``signing_keys`` set on an
:class:`~eventtracking.backends.async_routing.AsyncRoutingBackend`, every message it
publishes carries, in the message header :data:`HEADER`, an HMAC-SHA256 of the
message's canonical bytes (the backend name, then each entry text, each preceded by
its length) under the first key. A worker whose backend has keys checks it against
each of them, with :func:`hmac.compare_digest`, and keeps a message that carries no
signature (``unsigned``) or one that matches no key (``bad_signature``) as a counted
dead letter instead of delivering it. A worker without keys delivers every message,
signed or not, as before.

Rotation: give the new key first and keep the old one after it on every node
(``signing_keys=[new, old]``); once every web node runs with the new key and the
messages signed with the old one are delivered, drop the old one.

A 4.x message (``send_event``) is never signed: a worker with keys refuses it too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["HEADER", "normalise_keys", "refusal", "sign"]

#: The Celery message header that carries the signature.
HEADER = "eventtracking_signature"

_PREFIX = b"eventtracking.tasks.send_events/v1\n"


def normalise_keys(keys: Any) -> tuple[bytes, ...]:
    """``keys`` (None, or a list of str or bytes) as a tuple of bytes; ValueError says
    what is wrong. A key shorter than 16 bytes is refused: it could be guessed."""
    if keys is None:
        return ()
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        msg = (
            f"signing_keys must be a list of keys (str or bytes), newest first, got {keys!r}; "
            "write signing_keys=[key] for one key"
        )
        raise ValueError(msg)
    result: list[bytes] = []
    for index, key in enumerate(keys):
        raw = key.encode("utf-8") if isinstance(key, str) else key
        if not isinstance(raw, bytes) or len(raw) < 16:
            # The key itself is a secret: only its type and length are shown.
            size = len(raw) if isinstance(raw, bytes) else "no"
            msg = (
                f"signing_keys[{index}] must be a str or bytes of at least 16 bytes, "
                f"got a {type(key).__name__} of {size} bytes"
            )
            raise ValueError(msg)
        result.append(raw)
    return tuple(result)


def _digest(key: bytes, backend_name: str, entries: Sequence[Any]) -> str:
    mac = hmac.new(key, _PREFIX, hashlib.sha256)
    for part in (backend_name, *entries):
        data = (
            part.encode("utf-8", "surrogatepass") if isinstance(part, str) else repr(part).encode()
        )
        mac.update(b"%d:" % len(data))
        mac.update(data)
    return mac.hexdigest()


def sign(keys: Sequence[bytes], backend_name: str, entries: Sequence[str]) -> str:
    """The signature of a message under the first of ``keys`` (which must not be empty)."""
    return _digest(keys[0], backend_name, entries)


def _problem(keys: Sequence[bytes], backend_name: str, entries: Any, signature: Any) -> str | None:
    """None when the message may be delivered; else the dead letter kind."""
    if not keys:
        return None
    if not isinstance(signature, str) or not signature:
        return "unsigned"
    if entries is None or not isinstance(entries, (list, tuple)):
        return "bad_signature"
    given = signature.encode("ascii", "replace")
    for key in keys:
        if hmac.compare_digest(_digest(key, backend_name, entries).encode("ascii"), given):
            return None
    return "bad_signature"


def _header(request: Any) -> Any:
    headers = getattr(request, "headers", None)
    if isinstance(headers, dict) and HEADER in headers:
        return headers[HEADER]
    return getattr(request, HEADER, None)


def refusal(
    task: Any, backend_name: Any, body: Any, *, legacy: bool = False
) -> tuple[str, str] | None:
    """Why a task may not deliver its message, as ``(kind, reason)``, or None when it may.

    ``kind`` is ``unsigned`` or ``bad_signature``; the task keeps the message whole as
    a dead letter of that kind. ``body`` is the entries, or the event of a 4.x
    ``send_event`` message (``legacy``), which no signature covers.
    """
    from eventtracking.tracker import registered

    if not isinstance(backend_name, str):
        return None  # the task's own checks make it a malformed dead letter
    tracker = registered()
    backend = tracker.backends.get(backend_name) if tracker is not None else None
    keys = getattr(backend, "signing_keys", ())
    if not keys:
        return None
    kind = _problem(keys, backend_name, None if legacy else body, _header(task.request))
    if kind is None:
        return None
    reason = (
        "the message carries no signature, and this worker's backend has signing_keys: "
        "it was not published by a web node with the same keys"
        if kind == "unsigned"
        else "the message's signature matches none of this worker's signing_keys: it was "
        "changed, or signed with a key the worker does not have"
    )
    return kind, reason
