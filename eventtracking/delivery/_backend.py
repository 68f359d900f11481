"""How a backend that delivers in the background sets up its spool and its delivery.

MongoBackend, AsyncRoutingBackend and EventBusRoutingBackend take the same options for
it (``spool_dir``, ``spool_max_bytes``, ``durable``, ``batch_size``,
``flush_interval``, ``max_queue_size``, ``exit_timeout``) and promise the same things
about them: a bad value raises ImproperlyConfigured naming the option, and an unsafe
spool directory is refused while the backend is built, in the caller's hands (Django
reports it at start-up), rather than at the first spooled event. Nothing here starts a
thread or contacts a server.
"""

from __future__ import annotations

import os
from typing import Any

from eventtracking._util.options import is_count
from eventtracking.delivery import BatchDelivery, Sink
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.spool import Spool, default_spool_dir

__all__ = ["make_delivery", "open_spool", "spooled_delivery"]


def open_spool(spool_dir: str | os.PathLike[str] | None, spool_max_bytes: int | None) -> Spool:
    """The spool in ``spool_dir`` (:func:`~eventtracking.spool.default_spool_dir` when
    None), holding at most ``spool_max_bytes`` (None: no limit).

    Raises ImproperlyConfigured for a limit that is not a positive int, and
    :class:`~eventtracking.spool.UnsafeSpoolError` (one of them) for a directory or file
    that another user could read or change. Creates nothing.
    """
    if spool_max_bytes is not None and not is_count(spool_max_bytes):
        msg = (
            "spool_max_bytes must be a positive int (bytes) or None for no limit, got "
            f"{spool_max_bytes!r}"
        )
        raise ImproperlyConfigured(msg)
    spool = Spool(
        spool_dir if spool_dir is not None else default_spool_dir(), max_bytes=spool_max_bytes
    )
    spool.check()
    return spool


def make_delivery(
    sink: Sink, *, name: str, spool: Spool, stream: str, **options: Any
) -> BatchDelivery:
    """A :class:`~eventtracking.delivery.BatchDelivery` of ``sink``'s items that keeps what
    it cannot deliver in ``stream`` of ``spool``; ``options`` are its other keyword
    arguments. Raises ImproperlyConfigured for an option out of range."""
    try:
        return BatchDelivery(sink, name=name, spool=spool, stream=stream, **options)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


def spooled_delivery(
    sink: Sink,
    *,
    name: str,
    stream: str,
    spool_dir: str | os.PathLike[str] | None,
    spool_max_bytes: int | None,
    **options: Any,
) -> tuple[Spool, BatchDelivery]:
    """:func:`open_spool`, then :func:`make_delivery` with it; returns both."""
    spool = open_spool(spool_dir, spool_max_bytes)
    return spool, make_delivery(sink, name=name, spool=spool, stream=stream, **options)
