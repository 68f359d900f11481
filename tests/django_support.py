"""Fixtures and helpers shared by the tests/test_django_*.py modules.

Django is configured only when one of those modules asks for the ``django_env``
fixture: ``settings.configure()`` with tests/django_settings.py, ``django.setup()``
and an in-memory test database. Modules that never use Django are not affected, and
conftest.py's tracker reset still gives every test an empty tracker registry.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import django_settings
import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent

_state: dict[str, Any] = {}


def configure() -> None:
    """Configure Django for in-process tests, once per test session."""
    import django
    from django.conf import settings
    from django.test.utils import setup_databases, setup_test_environment

    if _state.get("configured"):
        return
    if not settings.configured:
        settings.configure(**django_settings.as_dict())
    django.setup()
    setup_test_environment()
    _state["databases"] = setup_databases(verbosity=0, interactive=False)
    _state["configured"] = True


@pytest.fixture(scope="session")
def django_env() -> Iterator[None]:
    """Django configured with tests/django_settings.py and a migrated test database."""
    configure()
    yield


@pytest.fixture
def memory(django_env: None) -> Any:
    """Register a fresh DjangoTracker from the settings; return its InMemoryBackend."""
    from eventtracking.django.django_tracker import override_default_tracker

    built = override_default_tracker()
    assert built is not None
    return built.get_backend("memory")


@pytest.fixture
def user(django_env: None) -> Any:
    """A user saved in the test database, deleted after the test."""
    from django.contrib.auth import get_user_model

    model = get_user_model()
    created = model.objects.create_user(username=f"ada{os.getpid()}", password="pw-not-real")
    yield created
    created.delete()


# -- real servers ----------------------------------------------------------------------


def server_env(events_dir: Path) -> dict[str, str]:
    """Environment for a server process: these settings, events written under events_dir."""
    env = dict(os.environ)
    paths = [str(TESTS_DIR), str(REPO_DIR)]
    if env.get("PYTHONPATH"):
        # Keep what the caller put first (a different Django, say) in front.
        paths = [env["PYTHONPATH"], *paths]
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        DJANGO_SETTINGS_MODULE="django_settings",
        EVENTTRACKING_TEST_EVENTS_DIR=str(events_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Server:
    """A server process listening on ``url``; its output goes to ``log``."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    events_dir: Path
    stopped: bool = field(default=False)

    def stop(self, timeout: float = 20.0) -> int:
        """Stop gracefully with SIGTERM, or kill after ``timeout``; return the exit code.

        uvicorn re-raises SIGTERM after its graceful shutdown, so it exits with -15.
        """
        if not self.stopped:
            self.stopped = True
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def output(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace")


def start_server(kind: str, tmp_path: Path) -> Server:
    """Start gunicorn (gthread, --preload) or uvicorn on a free 127.0.0.1 port.

    The test binds the listening socket itself and hands it to the server, so there is
    no race for the port, and the first request simply waits in the backlog until the
    server accepts it.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.set_inheritable(True)
    fd = listener.fileno()
    port = listener.getsockname()[1]
    if kind == "gunicorn":
        command = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"fd://{fd}",
            "--worker-class", "gthread", "--workers", "2", "--threads", "8",
            "--preload", "--graceful-timeout", "15", "--timeout", "60",
            # As for uvicorn below: keep-alive must outlast a slow machine's pauses.
            "--keep-alive", "60",
            "--log-level", "warning",
            "django.core.wsgi:get_wsgi_application()",
        ]  # fmt: skip
    elif kind == "uvicorn":
        command = [
            sys.executable, "-m", "uvicorn",
            "--fd", str(fd), "--factory", "--lifespan", "on",
            "--log-level", "warning", "--no-access-log",
            "--limit-concurrency", "2000", "--backlog", "1024",
            # A slow machine must not turn a pooled connection idle past the default 5 s,
            # which closes it under the client: that tests keep-alive, not contexts.
            "--timeout-keep-alive", "60",
            "eventtracking.django.asgi:get_asgi_application",
        ]  # fmt: skip
    else:
        msg = f"unknown server kind {kind!r}; use 'gunicorn' or 'uvicorn'"
        raise ValueError(msg)
    events_dir = tmp_path / f"{kind}-events"
    events_dir.mkdir()
    log = tmp_path / f"{kind}.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            command,
            env=server_env(events_dir),
            cwd=str(TESTS_DIR),
            pass_fds=(fd,),
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    listener.close()
    return Server(process, f"http://127.0.0.1:{port}", log, events_dir)


def read_events(events_dir: Path) -> list[dict[str, Any]]:
    """Every event the server processes wrote, across their files."""
    import json

    events = []
    for path in sorted(events_dir.glob("events-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            events.append(json.loads(line))
    return events
