"""The 4.x import path of the router: ``eventtracking.backends.routing.RoutingBackend``.

The router is part of the core, not a backend, and lives in :mod:`eventtracking.routing`.
This module keeps the path that settings (``'ENGINE':
'eventtracking.backends.routing.RoutingBackend'``) and 4.x code import, with the same
objects: ``RoutingBackend`` here *is* :class:`eventtracking.routing.RoutingBackend`, and
``LOG`` is its logger, still named ``eventtracking.backends.routing``.
"""

from eventtracking.routing import LOG, RoutingBackend

__all__ = ["LOG", "RoutingBackend"]
