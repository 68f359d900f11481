"""Write each event as one line of JSON to a text stream: standard output by default.

It is the backend of the tracker that :func:`eventtracking.tracker.get_tracker` makes
when nothing was configured, so that a first script prints its events. It also suits
processes whose standard output is collected as their log (containers, systemd)::

    EVENT_TRACKING_BACKENDS = {
        'stdout': {'ENGINE': 'eventtracking.backends.stream.StreamBackend'},
    }

Lines follow the JSON rules of ``LoggerBackend`` (:ref:`json-rules`),
with no size limit.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from eventtracking._json import dumps
from eventtracking._util.stats import FastCounter
from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.typing import Event

__all__ = ["StreamBackend"]

_NAMED = ("stdout", "stderr")


class StreamBackend:
    """Write every event as a JSON line to ``stream``.

    ``stream`` is a text file object, or ``'stdout'`` or ``'stderr'`` (the default is
    ``'stdout'``). A named stream is looked up in :mod:`sys` at every write, so a
    redirection made later (pytest's capture, ``contextlib.redirect_stdout``) is
    followed. Anything else raises
    :class:`~eventtracking.exceptions.ImproperlyConfigured`. Lines from several threads
    never interleave.
    """

    mutates_events = False

    def __init__(self, stream: TextIO | str = "stdout") -> None:
        if isinstance(stream, str):
            if stream not in _NAMED:
                msg = (
                    f"StreamBackend stream {stream!r} is not a stream; use 'stdout', "
                    "'stderr' or an open text file object."
                )
                raise ImproperlyConfigured(msg)
        elif not callable(getattr(stream, "write", None)):
            msg = (
                f"StreamBackend stream must be 'stdout', 'stderr' or an open text file "
                f"object, got {type(stream).__name__}: {stream!r}."
            )
            raise ImproperlyConfigured(msg)
        self.stream = stream
        self._lock = threading.Lock()
        self._sent = FastCounter()

    def _target(self) -> TextIO:
        stream = self.stream
        if isinstance(stream, str):
            target: TextIO = getattr(sys, stream)
            return target
        return stream

    def send(self, event: Event) -> None:
        """Write ``event`` as one JSON line."""
        line = dumps(event) + "\n"
        target = self._target()
        with self._lock:
            target.write(line)
        self._sent.incr()

    def flush(self, timeout: float | None = None) -> bool:
        """Flush the stream; True once it is flushed."""
        flush = getattr(self._target(), "flush", None)
        if callable(flush):
            flush()
        return True

    def stats(self) -> dict[str, Any]:
        """``sent``: lines written."""
        return {"sent": self._sent.value}

    def __repr__(self) -> str:
        return f"StreamBackend(stream={self.stream!r})"
