"""Send events to Segment (segment.com) through its Python library.

:class:`SegmentBackend` keeps the 4.x field mapping. For an event with a ``name`` and a
``context['user_id']`` it calls ``analytics.track(user_id, name, properties,
context=...)``, where the properties are the whole event and Segment's context is built
from the event's context:

=============================  ==========================================
event context                  Segment context
=============================  ==========================================
``client_id``                  ``{'Google Analytics': {'clientId': ...}}``
``ip``                         ``ip``
``agent``                      ``userAgent``
``path``                       ``page.path``
``referer``                    ``page.referrer``
``page``                       ``page.url``
``host`` and ``path``          ``page.url`` = ``https://<host><path>``,
                               when ``page`` is absent
=============================  ==========================================

The library is segment-analytics-python 2.x (``segment.analytics``) or, failing that,
the older ``analytics`` module. Configure it as usual (``analytics.write_key``, and
``analytics.host`` for a proxy); the backend uses the module's default client.

Beyond 4.x:

* without either library, building the backend raises ImportError naming the extra
  (``pip install 'event-tracking[segment]'``), where 4.x silently sent nothing;
* the properties are the event encoded with the library's JSON rules
  (:mod:`eventtracking._json`), so a UUID, a set or a Decimal arrives as it does in the
  logs, where Segment's own cleaning dropped the value with a warning;
* every event that does not reach Segment's queue is counted in :meth:`SegmentBackend.stats`:
  skipped (no name, no user id), refused (Segment rejected the call: an id of the wrong
  type, a message over 32 KB) or dropped (Segment's queue was full);
* uploads that fail after Segment's own retries are counted too (``upload_failures``)
  when the library's ``on_error`` is still free when the backend is built (see
  :meth:`SegmentBackend.stats`);
* each event goes to Segment with a ``messageId`` made from its event id (the id it
  travelled with on a Celery worker, :data:`eventtracking._util.event_ids.current_event_id`;
  outside a delivery, Segment's client makes one, a UUID, as with 4.x), so a worker that
  delivers the same event again (a retry) sends the same ``messageId``, and Segment
  keeps one copy. Only Segment's own module and clients are given it: another client
  is called with 4.x's arguments;
* ``flush(timeout)`` runs at most one flush of a client at a time: Segment retries an
  upload for hours while its API is down, and each call used to leave a thread
  waiting on it.
"""

from __future__ import annotations

import json
import logging
import threading
import types
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlunsplit

from eventtracking import _json
from eventtracking._util import event_ids
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import Counters
from eventtracking.exceptions import ConfigurationTypeError
from eventtracking.typing import Event

__all__ = ["INSTALL_HINT", "SegmentBackend", "segment_context"]

LOG = logging.getLogger(__name__)

#: What to run when neither Segment library is installed.
INSTALL_HINT = "pip install 'event-tracking[segment]'"

# Batches Segment's client gave up on, reported through its on_error hook.
_UPLOADS = Counters("upload_failures", "upload_failed_events")
_hook_lock = threading.Lock()

# The flush running for each client (by id), so that a client has one at most; an
# entry is taken out by its thread when the flush returns.
_flushes: dict[int, threading.Event] = {}
_flushes_lock = threading.Lock()


def _find_analytics() -> Any:
    """``segment.analytics``, else ``analytics``, else None."""
    try:
        from segment import analytics as module
    except ImportError:
        pass
    else:
        return module
    try:
        import analytics as module
    except ImportError:
        return None
    return module


#: Segment's module, found at import, or None without segment-analytics-python. A
#: module attribute, as in 4.x: tests written for 4.x replace it with
#: ``patch('eventtracking.backends.segment.analytics')``, and a backend built while it
#: is replaced uses the replacement.
analytics: Any = _find_analytics()


def segment_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """Segment's ``context`` for an event's context (see the module's table)."""
    result: dict[str, Any] = {}
    client_id = context.get("client_id")
    if client_id is not None:
        result["Google Analytics"] = {"clientId": client_id}
    for key, segment_key in (("ip", "ip"), ("agent", "userAgent")):
        value = context.get(key)
        if value is not None:
            result[segment_key] = value
    path = context.get("path")
    referer = context.get("referer")
    page = context.get("page")
    host = context.get("host")
    if path and not page and host:
        # Segment reads the host and path out of the URL; the scheme is a guess.
        page = urlunsplit(("https", host, path, "", ""))
    page_info = {
        key: value
        for key, value in (("path", path), ("referrer", referer), ("url", page))
        if value is not None
    }
    if page_info:
        result["page"] = page_info
    return result


class SegmentBackend:
    """Call Segment's ``track`` for each event that has a name and a user id.

    ``client`` is what to call ``track`` on: by default the ``segment.analytics`` module
    (or ``analytics``), whose settings the application sets; any object with the same
    ``track(user_id, event, properties, context=...)`` works, such as a
    ``segment.analytics.Client`` of your own. Raises ImportError, naming the extra,
    when no client is given and neither library is installed, and
    :class:`~eventtracking.exceptions.ConfigurationTypeError` for a client without
    ``track``.

    ``send`` never raises: what Segment does not accept is logged at a limited rate and
    counted.
    """

    mutates_events = False

    def __init__(self, client: Any = None) -> None:
        module = None
        if client is None:
            module = analytics
            if module is None:
                msg = (
                    "SegmentBackend needs segment-analytics-python, which is not "
                    f"installed. Install it with: {INSTALL_HINT}"
                )
                raise ImportError(msg)
            client = module
        track = getattr(client, "track", None)
        if not callable(track):
            msg = f"client {client!r} has no track() method; pass segment.analytics or a Client"
            raise ConfigurationTypeError(msg)
        self.client = client
        self._message_ids = _is_segments(client)
        self._counters = Counters("sent", groups=("skipped", "refused", "dropped"))
        self._log = RateLimitedLogger(LOG)
        self._counts_uploads = module is not None and _hook_upload_errors(module)

    def __repr__(self) -> str:
        return f"<SegmentBackend client={getattr(self.client, '__name__', self.client)!r}>"

    def send(self, event: Event) -> None:
        """Queue ``event`` with Segment's client; skipped without a name or a user id."""
        if not isinstance(event, Mapping):
            self._counters.incr("refused", "not_an_event")
            return
        context = event.get("context") or {}
        name = event.get("name")
        user_id = context.get("user_id") if isinstance(context, Mapping) else None
        if name is None or user_id is None:
            reason = "no_name" if name is None else "no_user_id"
            self._counters.incr("skipped", reason)
            return
        try:
            properties = json.loads(_json.dumps(event))
            options: dict[str, Any] = {"context": segment_context(context)}
            if self._message_ids:
                # None outside a delivery: Segment's client then makes one of its own.
                options["message_id"] = event_ids.current_event_id.get()
            result = self.client.track(user_id, name, properties, **options)
        except Exception as exc:
            # Segment's checks raise AssertionError for an id or a name of the wrong
            # type and RuntimeError for a message over 32 KB.
            self._counters.incr("refused", type(exc).__name__)
            self._log.error(
                f"refused:{type(exc).__name__}",
                "Segment refused event %r: %s: %s",
                name,
                type(exc).__name__,
                exc,
            )
            return
        if isinstance(result, tuple) and result and result[0] is False:
            # Segment's client returns (False, msg) when its queue is full.
            self._counters.incr("dropped", "queue_full")
            self._log.error(
                "queue-full", "Segment's queue is full; event %r was dropped by it", name
            )
            return
        self._counters.incr("sent")

    def flush(self, timeout: float | None = None) -> bool:
        """Ask Segment's client to upload what it holds.

        Segment's ``flush`` has no time limit: it waits until the queue is empty, which
        includes its retries while the API is unreachable. It runs here only when
        ``timeout`` is None; with a timeout, it runs in a thread, and False is returned
        if it has not finished in time. A call made while an earlier flush of the same
        client is still running waits for that one instead of starting another.
        """
        flush = getattr(self.client, "flush", None)
        if not callable(flush):
            return True
        if timeout is None:
            flush()
            return True
        key = id(self.client)
        with _flushes_lock:
            done = _flushes.get(key)
            if done is None:
                _flushes[key] = done = threading.Event()
                thread = threading.Thread(
                    target=_run_flush,
                    args=(flush, key, done),
                    name="eventtracking-segment-flush",
                    daemon=True,
                )
                thread.start()
        return done.wait(max(0.0, timeout))

    def stats(self) -> dict[str, Any]:
        """``sent`` to Segment's queue; ``skipped``, ``refused`` and ``dropped`` by reason.

        ``upload_failures`` and ``upload_failed_events`` count the batches (and their
        events) Segment's client gave up on after its retries, in this process; they
        are None when they cannot be known, because the application set its own
        ``analytics.on_error`` or used the client before the backend was built.
        """
        result = self._counters.snapshot()
        if self._counts_uploads:
            result.update(_UPLOADS.snapshot())
        else:
            result.update(upload_failures=None, upload_failed_events=None)
        return result


def _run_flush(flush: Any, key: int, done: threading.Event) -> None:
    """The flush thread: run Segment's ``flush``, then let the next call start one."""
    try:
        flush()
    except Exception as exc:  # Segment's flush only joins its queue; log, never raise
        LOG.error("Flushing Segment's client failed: %s: %s", type(exc).__name__, exc)
    finally:
        with _flushes_lock:
            _flushes.pop(key, None)
        done.set()


def _is_segments(client: Any) -> bool:
    """Whether ``client`` is Segment's module or one of its clients, which take a
    ``message_id``; another object keeps 4.x's call (a test's fake asserts on it)."""
    if isinstance(client, types.ModuleType):
        return callable(getattr(client, "Client", None))
    module = analytics if isinstance(analytics, types.ModuleType) else _find_analytics()
    client_class = getattr(module, "Client", None)
    return isinstance(client_class, type) and isinstance(client, client_class)


def _hook_upload_errors(module: Any) -> bool:
    """Count the batches Segment's client gives up on; False when that cannot be done.

    Only the module's ``on_error`` setting is used, and only while it is free and no
    client exists yet: the application's own hook and client are left as they are.
    """
    with _hook_lock:
        hook = getattr(module, "on_error", None)
        if hook is _record_upload_error:
            return True
        if hook is not None or getattr(module, "default_client", None) is not None:
            LOG.info(
                "Segment's on_error is set or its client exists already: batches it gives "
                "up on are reported there, not counted by SegmentBackend"
            )
            return False
        module.on_error = _record_upload_error
        return True


def _record_upload_error(error: Any, batch: Any) -> None:
    """Segment's ``on_error`` hook: count and log a batch its client gave up on."""
    size = len(batch) if hasattr(batch, "__len__") else 1
    _UPLOADS.incr("upload_failures")
    _UPLOADS.incr("upload_failed_events", amount=size)
    LOG.error("Segment gave up uploading %d event(s): %s", size, error)
