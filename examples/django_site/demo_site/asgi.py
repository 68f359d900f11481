"""ASGI entry point: ``uvicorn demo_site.asgi:application``.

event-tracking's wrapper adds the lifespan protocol, so that uvicorn's shutdown flushes
the events still queued for MongoDB.
"""

import os

from eventtracking.django.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")

application = get_asgi_application()
