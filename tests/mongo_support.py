"""A real MongoDB for tests: SecantusDB in a subprocess, which tests may kill and restart.

The server runs in its own process so that a test can SIGKILL it, as a crash would,
and restart it on the same storage directory and port. It speaks the MongoDB wire
protocol and stores to WiredTiger; only writes made with ``journal=True`` are sure to
survive a SIGKILL, so tests that kill it write with journaling.

Fixtures (imported into conftest.py):

* ``mongo_server``: one server for the session; ``mongo`` is the same server, checked
  to be running before and after each test (a test that killed it gets it restarted);
* ``mongo_auth_server``: a second server with authentication on, and the users in
  :data:`AUTH_USERS`;
* ``collection_name``: a collection name unique to the test.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "AUTH_DATABASE",
    "AUTH_USERS",
    "MongoServer",
    "collection_name",
    "mongo",
    "mongo_auth_server",
    "mongo_server",
]

#: The database the application user of the auth server may write to.
AUTH_DATABASE = "eventtracking_auth"

#: Users of ``mongo_auth_server``: role -> (user name, password, database defined in).
AUTH_USERS = {
    "root": ("root", "root-secret", "admin"),
    "writer": ("events-writer", "writer-secret", AUTH_DATABASE),
}

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0

# Runs in the server's process. It prints "READY <port>" once the socket listens, then
# serves until SIGTERM (a clean stop) or SIGKILL (a crash), or until its parent dies.
_SERVER_SCRIPT = r"""
import logging, os, signal, sys, threading
from secantus import SecantusDBServer

storage, port, auth = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
logging.basicConfig(level=logging.WARNING)
parent = os.getppid()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
server = SecantusDBServer(storage_path=storage, port=port, require_auth=auth)
server.start()
sys.stdout.write(f"READY {server.address[1]}\n")
sys.stdout.flush()
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
while not stop.wait(0.5):
    if os.getppid() != parent:
        break
server.stop()
"""


class MongoServer:
    """A SecantusDB server in a subprocess, on 127.0.0.1, storing in ``storage_path``.

    The first :meth:`start` picks a free port; later starts reuse it, so clients and
    backends configured with :attr:`uri` find the server again after :meth:`kill`.
    """

    def __init__(self, storage_path: Path, *, require_auth: bool = False) -> None:
        self.storage_path = Path(storage_path)
        self.require_auth = require_auth
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._clients: dict[str, Any] = {}

    @property
    def uri(self) -> str:
        """``mongodb://127.0.0.1:<port>/``; valid once started, and across restarts."""
        if not self.port:
            msg = "the server has never been started: call start() first"
            raise RuntimeError(msg)
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self.running:
            return
        self.storage_path.mkdir(parents=True, exist_ok=True)
        log = open(self.storage_path.parent / f"{self.storage_path.name}.log", "ab")  # noqa: SIM115
        with log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _SERVER_SCRIPT,
                    str(self.storage_path),
                    str(self.port),
                    "1" if self.require_auth else "0",
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        assert process.stdout is not None
        deadline = time.monotonic() + _START_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, left))
            chunk = os.read(process.stdout.fileno(), 256) if ready else b""
            if not chunk:
                process.kill()
                process.wait()
                msg = f"SecantusDB did not start within {_START_TIMEOUT:.0f} s; see its log"
                raise RuntimeError(msg)
            line += chunk
        process.stdout.close()
        match = re.match(rb"READY (\d+)", line)
        if match is None:
            process.kill()
            process.wait()
            msg = f"SecantusDB printed {line!r} instead of READY <port>"
            raise RuntimeError(msg)
        self.port = int(match.group(1))
        self._process = process

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and wait for it to be gone."""
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None

    def restart(self) -> None:
        """Start again on the same storage directory and port (kill first if running)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop cleanly (SIGTERM), so that everything written is kept."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        self._process = None

    def close(self) -> None:
        """Close the clients and kill the server: for the end of the session, when
        nothing it stores is needed any more (a clean stop takes seconds)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self.kill()

    def client(self, **options: Any) -> Any:
        """A MongoClient for this server, shared by callers passing the same options,
        and closed when the server stops. It reconnects by itself after a restart."""
        import pymongo

        options.setdefault("serverSelectionTimeoutMS", 10_000)
        key = repr(sorted(options.items()))
        if key not in self._clients:
            self._clients[key] = pymongo.MongoClient(self.uri, **options)
        return self._clients[key]


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A SecantusDB server for the whole session, in a subprocess."""
    server = MongoServer(tmp_path_factory.mktemp("secantus") / "data")
    server.start()
    yield server
    server.close()


@pytest.fixture
def mongo(mongo_server: MongoServer) -> Iterator[MongoServer]:
    """The session's server, running at the start of the test and again after it."""
    mongo_server.start()
    yield mongo_server
    mongo_server.start()


@pytest.fixture(scope="session")
def mongo_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """A SecantusDB server that requires authentication, with the users of AUTH_USERS."""
    server = MongoServer(tmp_path_factory.mktemp("secantus-auth") / "data")
    server.start()
    client = server.client()
    for user, password, database in AUTH_USERS.values():
        roles = ["root"] if database == "admin" else [{"role": "readWrite", "db": database}]
        client[database].command("createUser", user, pwd=password, roles=roles)
    server.stop()  # a clean stop, so that the users are kept
    server.require_auth = True
    server.start()
    yield server
    server.close()


_names = itertools.count(1)


@pytest.fixture
def collection_name(request: pytest.FixtureRequest) -> str:
    """A collection name unique to this test (and to each use within the session)."""
    base = re.sub(r"[^A-Za-z0-9]+", "_", request.node.name).strip("_")[:60]
    return f"{base}_{next(_names)}"
