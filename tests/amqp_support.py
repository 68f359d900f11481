"""A real RabbitMQ for tests: Debian's ``rabbitmq-server`` package, started by the tests.

Like the Redis of ``redis_support``, the broker runs as a child process on loopback,
on free ports, with every file it writes (data, logs, Erlang cookie) under one private
directory, so that a test can SIGKILL it as a crash would and start it again on the
same data. Each broker has an ``epmd`` of its own, on its own port, so that test runs
side by side never share one.

Where the broker comes from, in this order:

* ``EVENTTRACKING_TEST_AMQP_URL`` (:data:`AMQP_URL_ENV`): an external RabbitMQ, used
  as it is; the tests that crash the broker are skipped, with the reason shown;
* ``/usr/lib/rabbitmq/bin/rabbitmq-server`` (:data:`RABBITMQ_SERVER`), from Debian's
  ``rabbitmq-server`` package: one broker for the session, and brokers of their own for
  the tests that crash it;
* neither: the RabbitMQ cases are skipped, the reason naming the package; with
  ``EVENTTRACKING_TEST_REQUIRE_AMQP=1`` (set by ``.ci/run``) they fail instead.

Fixtures (imported into conftest.py):

* ``amqp_url``: the session's broker; at the end of the session it asserts that the
  broker holds none of the queues the tests declared (each test deletes its own, see
  ``celery_support.discard_app``);
* ``rabbitmq_factory``: starts brokers of the test's own; each is killed when the test
  ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from redis_support import free_port

__all__ = [
    "AMQP_URL_ENV",
    "DECLARED_QUEUES",
    "RABBITMQ_SERVER",
    "RabbitServer",
    "amqp_url",
    "leftover_queues",
    "rabbitmq_factory",
]

#: The environment variable naming an external RabbitMQ to run the tests against.
AMQP_URL_ENV = "EVENTTRACKING_TEST_AMQP_URL"
#: Set to 1 to fail, rather than skip, the RabbitMQ cases when no broker can be had.
REQUIRE_ENV = "EVENTTRACKING_TEST_REQUIRE_AMQP"
#: The server script of Debian's package; not /usr/sbin/rabbitmq-server, which
#: switches to the rabbitmq user and writes under /var.
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = RABBITMQ_SERVER.with_name("rabbitmqctl")

#: The queues the tests declared on the session's broker (by celery_support.make_app).
DECLARED_QUEUES: set[str] = set()

# A cold start logs in after about 3 s, a restart after a SIGKILL after about 5 s, on
# an idle machine; a liveness bound for a busy one.
_START_TIMEOUT = 120.0
_STOP_TIMEOUT = 30.0
_LOOPBACK = "-kernel inet_dist_use_interface {127,0,0,1}"


def _logs_in(url: str) -> bool:
    """Whether an AMQP login at ``url`` succeeds (a TCP connect is not enough: the
    port opens before the broker accepts logins)."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.connect()
            return True
    except Exception:
        return False


class RabbitServer:
    """A RabbitMQ broker (and its epmd) on 127.0.0.1, keeping its data in ``directory``.

    The first :meth:`start` picks free ports; later starts reuse them, so clients given
    :attr:`url` find the broker again after :meth:`kill`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.port = 0
        self.epmd_port = 0
        self.dist_port = 0
        self._epmd: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:<port>//`` (guest may log in on loopback)."""
        if not self.port:
            msg = "the broker has never been started: call start() first"
            raise RuntimeError(msg)
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def running(self) -> bool:
        """Whether the broker's server process is alive."""
        return self._server is not None and self._server.poll() is None

    def env(self) -> dict[str, str]:
        """The environment of the server and of ``rabbitmqctl`` aimed at it."""
        env = dict(os.environ)
        env.update(
            HOME=str(self.directory / "home"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_NODENAME="rabbit@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=_LOOPBACK,
            RABBITMQ_CTL_ERL_ARGS=_LOOPBACK,
            RABBITMQ_MNESIA_BASE=str(self.directory / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.directory / "log"),
            RABBITMQ_LOGS="-",
            RABBITMQ_PID_FILE=str(self.directory / "rabbit.pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.directory / "enabled_plugins"),
        )
        env.pop(AMQP_URL_ENV, None)
        return env

    def reserve_ports(self) -> None:
        """Pick the free ports (once), so that :attr:`url` is known before a start."""
        if not self.port:
            self.port, self.epmd_port, self.dist_port = free_port(), free_port(), free_port()

    def start(self) -> None:
        """Start epmd (once) and the broker; wait until an AMQP login succeeds.

        RuntimeError, naming the log, if it does not within the start timeout.
        """
        if self.running:
            return
        self.reserve_ports()
        for sub in ("home", "mnesia", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        (self.directory / "enabled_plugins").write_text("[].\n")  # no plugins
        env = self.env()
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = subprocess.Popen(
                ["epmd", "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        log_path = self.directory / "log" / "server.log"
        with open(log_path, "ab") as log:
            # A session of its own: the wrapper script, beam.smp and its helpers form
            # one process group, killed together.
            self._server = subprocess.Popen(
                [str(RABBITMQ_SERVER)],
                env=env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while not _logs_in(self.url):
            if self._server.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = log_path.read_text(errors="replace")[-3000:]
                msg = (
                    f"RabbitMQ did not accept a login on port {self.port} within "
                    f"{_START_TIMEOUT:.0f} s; {log_path} ends with:\n{tail}"
                )
                raise RuntimeError(msg)
            time.sleep(0.1)

    def _signal_group(self, signum: int) -> None:
        if self._server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._server.pid, signum)

    def kill(self) -> None:
        """SIGKILL the broker (beam.smp and its wrapper), as a crash would; epmd stays."""
        if self._server is None:
            return
        self._signal_group(signal.SIGKILL)
        self._server.wait()
        self._server = None

    def restart(self) -> None:
        """Start again on the same data and ports (kill first if running)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM to the wrapper), or kill it if it hangs."""
        if self._server is None:
            return
        if self._server.poll() is None:
            self._server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._server.wait(_STOP_TIMEOUT)
        # Whatever of the group outlived the wrapper (beam.smp, erl_child_setup).
        self._signal_group(signal.SIGKILL)
        self._server.wait()
        self._server = None

    def close(self) -> None:
        """Stop the broker and its epmd."""
        try:
            self.stop()
        finally:
            if self._epmd is not None:
                if self._epmd.poll() is None:
                    self._epmd.kill()
                self._epmd.wait()
                self._epmd = None

    def queues(self) -> dict[str, int]:
        """Every queue on the broker's default vhost, with its message count
        (``rabbitmqctl list_queues``)."""
        result = subprocess.run(
            [str(RABBITMQCTL), "list_queues", "-q", "--no-table-headers", "name", "messages"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        queues: dict[str, int] = {}
        for line in result.stdout.splitlines():
            name, _, count = line.rpartition("\t")
            if name:
                queues[name] = int(count)
        return queues


def _no_broker(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: RabbitMQ cases must run)")
    pytest.skip(reason)


def _server_or_skip() -> None:
    if not (RABBITMQ_SERVER.exists() and shutil.which("epmd")):
        _no_broker(
            f"no RabbitMQ to test against: install Debian's 'rabbitmq-server' package "
            f"({RABBITMQ_SERVER}), or set {AMQP_URL_ENV} to an amqp:// URL"
        )


def leftover_queues(url: str, names: Iterable[str]) -> list[str]:
    """Those of the queues ``names`` that the broker at ``url`` still holds (passive
    declares: an external broker may have no management API or rabbitmqctl we can
    reach)."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    left = []
    with Connection(url, connect_timeout=10) as connection:
        for name in sorted(names):
            channel = connection.channel()
            try:
                channel.queue_declare(name, passive=True)
            except NotFound:
                continue  # the broker closed the channel: the queue is gone
            else:
                left.append(name)
                channel.close()
    return left


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The URL of the session's RabbitMQ: the external one, or one started for the
    session. At the end it asserts that the broker holds none of the tests' queues."""
    external = os.environ.get(AMQP_URL_ENV)
    if external:
        yield external
        left = leftover_queues(external, DECLARED_QUEUES)
        assert left == [], f"the tests left these queues on {AMQP_URL_ENV}'s broker: {left}"
        return
    _server_or_skip()
    directory = Path(tempfile.mkdtemp(prefix="et-amqp-"))
    server = RabbitServer(directory)
    try:
        server.start()
        yield server.url
        # Every test deletes the queues it declared: the broker must hold none.
        left = server.queues()
        assert left == {}, f"the tests left these queues (name: messages) on RabbitMQ: {left}"
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def rabbitmq_factory() -> Iterator[Callable[..., RabbitServer]]:
    """Start RabbitMQ brokers of the test's own (to crash them); each is killed, with
    its epmd, when the test ends. Skipped against an external broker.

    ``start=False`` gives one whose ports and URL are chosen but that is not running
    (a broker down from the start), to be started by the test.
    """
    if os.environ.get(AMQP_URL_ENV):
        pytest.skip(f"crashes a broker: needs a RabbitMQ of its own, not {AMQP_URL_ENV}'s")
    _server_or_skip()
    servers: list[RabbitServer] = []

    def make(start: bool = True) -> RabbitServer:
        server = RabbitServer(Path(tempfile.mkdtemp(prefix="et-amqp-")))
        servers.append(server)
        server.reserve_ports()
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.close()
        shutil.rmtree(server.directory, ignore_errors=True)
