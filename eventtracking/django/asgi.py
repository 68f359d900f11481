"""Django's ASGI application, plus the lifespan protocol to flush events at shutdown.

Use :func:`get_asgi_application` from here instead of ``django.core.asgi``'s, with
``uvicorn --lifespan on`` (or ``auto``, the default): ``docs/django.rst`` ("ASGI and
uvicorn") shows how, and why events queued at shutdown are lost without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from eventtracking.django import apps

__all__ = ["TrackerLifespan", "get_asgi_application"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TrackerLifespan:
    """Wrap an ASGI app: answer lifespan events, and close the trackers at shutdown.

    Every other scope goes to the wrapped app. Closing runs in a worker thread, bounded
    by ``EVENT_TRACKING_SHUTDOWN_TIMEOUT``, so the event loop is never blocked.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await asyncio.to_thread(apps.close_trackers)
                except Exception as error:
                    await send({"type": "lifespan.shutdown.failed", "message": str(error)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return


def get_asgi_application() -> TrackerLifespan:
    """Set Django up and return its ASGI application wrapped in :class:`TrackerLifespan`."""
    from django.core.asgi import get_asgi_application as django_asgi_application

    return TrackerLifespan(django_asgi_application())
