"""Django settings for the Django tests, in-process and in the servers they start.

In-process, ``django_support.configure()`` passes these values to
``settings.configure()``; the servers import this module as ``DJANGO_SETTINGS_MODULE``.
With ``EVENTTRACKING_TEST_EVENTS_DIR`` set (the servers), events go to
:class:`BufferedFileBackend` under that directory instead of to memory.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from eventtracking.backends.logger import DateTimeJSONEncoder

DEBUG = False
SECRET_KEY = "eventtracking-tests-only"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "django_urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "eventtracking.django",
]
# The authentication middleware comes after ours on purpose: the user is still found,
# because the context reads it only when an event is emitted.
MIDDLEWARE = [
    "eventtracking.django.middleware.TrackRequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "eventtracking.django.middleware.TrackRequestEventMiddleware",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING_CONFIG = None

EVENT_TRACKING_ENABLED = True
EVENT_TRACKING_BACKENDS: dict[str, Any] = {
    "memory": {"ENGINE": "eventtracking.backends.memory.InMemoryBackend"},
}
EVENT_TRACKING_REQUEST_EVENT_SKIP = [r"/ping/$", r"/flush/$"]


class BufferedFileBackend:
    """Hold events in memory; write them as JSON lines only on flush() or close().

    Writing only then makes the server tests prove that the app flushes the tracker at
    exit. Each process writes its own file, ``events-<pid>.jsonl``.
    """

    mutates_events = False

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.lock = threading.Lock()
        self.pending: list[str] = []

    def send(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, cls=DateTimeJSONEncoder)
        with self.lock:
            self.pending.append(line)

    def flush(self, timeout: float | None = None) -> bool:
        with self.lock:
            lines, self.pending = self.pending, []
            if lines:
                path = self.directory / f"events-{os.getpid()}.jsonl"
                with path.open("a", encoding="utf-8") as stream:
                    stream.write("".join(line + "\n" for line in lines))
        return True

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)


_EVENTS_DIR = os.environ.get("EVENTTRACKING_TEST_EVENTS_DIR")
if _EVENTS_DIR:
    EVENT_TRACKING_BACKENDS = {
        "file": {
            "ENGINE": "django_settings.BufferedFileBackend",
            "OPTIONS": {"directory": _EVENTS_DIR},
        },
    }


def as_dict() -> dict[str, Any]:
    """Every setting defined here, for ``settings.configure(**as_dict())``."""
    return {
        name: value
        for name, value in globals().items()
        if name.isupper() and not name.startswith("_")
    }
