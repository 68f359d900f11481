"""The eight options of every backend that delivers in the background.

MongoBackend, AsyncRoutingBackend and EventBusRoutingBackend take them as keywords (the
4.x ones and ours), or whole as ``delivery_options=DeliveryOptions(...)``. They are
checked once, here, when built: a bad value raises ImproperlyConfigured naming it.
An unsafe spool directory is refused while the backend is built, in the caller's hands
(Django reports it at start-up), rather than at the first spooled event. Nothing here
starts a thread or contacts a server.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from eventtracking._util.options import check_count, check_seconds
from eventtracking.delivery import BatchDelivery, Sink
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.spool import DEFAULT_MAX_BYTES, Spool, default_spool_dir

__all__ = ["DeliveryOptions"]


@dataclasses.dataclass(frozen=True)
class DeliveryOptions:
    """How a backend delivers in the background, checked when made (ImproperlyConfigured
    names a bad field); each field is also a keyword of the backends.

    ``batch_size`` (500) items per batch, sent at the latest ``flush_interval`` (1.0 s)
    after the first; ``max_queue_size`` (10,000) items held in memory, more go to the
    spool; ``exit_timeout`` (5.0 s): how long exit, and ``close()`` without a timeout,
    deliver before spooling the rest; ``spool_dir`` (None:
    :func:`~eventtracking.spool.default_spool_dir`), ``spool_stream`` (None: the
    backend's own) and ``spool_max_bytes`` (1 GiB; None for no limit): where items wait
    while the destination is down; ``durable`` (False): each item is on the spool
    before ``send()`` returns. A DeliveryOptions given whole is used as it is, even by
    the backends whose own defaults differ.
    """

    batch_size: int = 500
    flush_interval: float = 1.0
    max_queue_size: int = 10_000
    exit_timeout: float = 5.0
    spool_dir: str | os.PathLike[str] | None = None
    spool_stream: str | None = None
    spool_max_bytes: int | None = DEFAULT_MAX_BYTES
    durable: bool = False

    def __post_init__(self) -> None:
        check_count("batch_size", self.batch_size)
        check_count("max_queue_size", self.max_queue_size)
        check_seconds("flush_interval", self.flush_interval)
        check_seconds("exit_timeout", self.exit_timeout, allow_zero=True)
        none = "or None for no limit"
        check_count("spool_max_bytes", self.spool_max_bytes, unit="bytes", or_none=none)

    @classmethod
    def merge(
        cls, given: DeliveryOptions | None, defaults: DeliveryOptions, values: Mapping[str, Any]
    ) -> DeliveryOptions:
        """The options of a backend given ``delivery_options=given`` and its keywords
        (read from ``values``, its constructor's ``locals()``): ``given`` (a keyword
        beside it that is not at its default would be ignored: ImproperlyConfigured),
        else ``defaults`` with the keywords."""
        keywords = {field.name: values[field.name] for field in dataclasses.fields(cls)}
        if given is None:
            return dataclasses.replace(defaults, **keywords)
        if not isinstance(given, DeliveryOptions):
            msg = f"delivery_options must be a DeliveryOptions, got {given!r}"
            raise ImproperlyConfigured(msg)
        beside = [name for name, value in keywords.items() if value != getattr(defaults, name)]
        if beside:
            msg = f"pass {', '.join(beside)} inside delivery_options, not beside it (used whole)"
            raise ImproperlyConfigured(msg)
        return given

    def open_spool(self) -> Spool:
        """The spool in ``spool_dir``. Raises :class:`~eventtracking.spool.UnsafeSpoolError`
        (an ImproperlyConfigured) for a directory or file another user could read or
        change. Creates nothing."""
        directory = self.spool_dir if self.spool_dir is not None else default_spool_dir()
        spool = Spool(directory, max_bytes=self.spool_max_bytes)
        spool.check()
        return spool

    def delivery(
        self, sink: Sink, *, name: str, spool: Spool, stream: str, **more: Any
    ) -> BatchDelivery:
        """A delivery of ``sink``'s items with these options, spooling to ``stream`` of
        ``spool``; ``more`` are other :class:`~eventtracking.delivery.BatchDelivery`
        keywords (``catch_up_batches``)."""
        return BatchDelivery(
            sink, name=name, spool=spool, stream=stream, durable=self.durable,
            batch_size=self.batch_size, flush_interval=self.flush_interval,
            max_queue_size=self.max_queue_size, exit_timeout=self.exit_timeout, **more,
        )  # fmt: skip
