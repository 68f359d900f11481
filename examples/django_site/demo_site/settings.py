"""Settings of the demo site: the event-tracking app, its middleware, MongoDB storage.

MongoDB is found through ``EVENTTRACKING_MONGO_URI`` (default: a local mongod), so that
``examples/django_demo.py`` can point the site at the embedded SecantusDB it starts.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["eventtracking.django"]

MIDDLEWARE = [
    # First, so that every event of the request carries its context.
    "eventtracking.django.middleware.TrackRequestContextMiddleware",
    "django.middleware.common.CommonMiddleware",
    # One 'django.request' event per request, with the request context.
    "eventtracking.django.middleware.TrackRequestEventMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"
DATABASES: dict = {}
USE_TZ = True

EVENT_TRACKING_ENABLED = True
EVENT_TRACKING_BACKENDS = {
    "mongo": {
        "ENGINE": "eventtracking.backends.mongodb.MongoBackend",
        "OPTIONS": {
            "uri": os.environ.get("EVENTTRACKING_MONGO_URI", "mongodb://localhost:27017/"),
            "database": "eventtracking_demo",
            "collection": "events",
        },
    },
}
if os.environ.get("EVENTTRACKING_SPOOL_DIR"):
    # Where events wait while MongoDB is unreachable (default: ~/.cache/eventtracking).
    EVENT_TRACKING_BACKENDS["mongo"]["OPTIONS"]["spool_dir"] = os.environ["EVENTTRACKING_SPOOL_DIR"]
# Requests whose paths match these expressions emit no request event.
EVENT_TRACKING_REQUEST_EVENT_SKIP = [r"/favicon\.ico$"]
# Behind a reverse proxy, list it so that the client's address is read from
# X-Forwarded-For:
# EVENT_TRACKING_TRUSTED_PROXIES = ["10.0.0.0/8"]
