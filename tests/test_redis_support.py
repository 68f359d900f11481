"""The embedded Redis that broker tests run against: it answers, persists and restarts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from redis_support import RedisServer, server_port

pytestmark = pytest.mark.slow


def test_session_server_answers_and_starts_empty(redis_url: str, redis_server: RedisServer):
    """The per-test URL points at a running server whose databases were flushed."""
    with redis_server.client() as client:
        assert client.ping()
        assert client.dbsize() == 0
        client.set("left-behind", "1")
    assert redis_url == redis_server.url


def test_acknowledged_writes_survive_sigkill_and_restart(
    redis_factory: Callable[[], RedisServer],
):
    """Every write Redis acknowledged before a SIGKILL is there after a restart on the same
    directory and port (append-only file, fsync on every write)."""
    server = redis_factory()
    port = server.port
    with server.client() as client:
        for index in range(200):
            client.xadd("stream", {"n": str(index)})
    server.kill()
    assert not server.running
    server.start()
    assert server.port == port
    with server.client() as client:
        assert client.xlen("stream") == 200


def test_paused_server_answers_nothing_until_resumed(redis_factory: Callable[[], RedisServer]):
    """A SIGSTOPped server keeps the port but times out clients: the hang case."""
    import redis

    server = redis_factory()
    server.pause()
    with (
        server.client(socket_timeout=0.2, socket_connect_timeout=0.2) as client,
        pytest.raises(redis.exceptions.TimeoutError),
    ):
        client.ping()
    server.resume()
    with server.client() as client:
        assert client.ping()


def test_an_external_redis_is_emptied_in_its_own_database_only(
    redis_factory: Callable[[], RedisServer],
):
    """EVENTTRACKING_TEST_REDIS_URL's database is emptied before a test; the site's
    other databases keep their keys."""
    from redis_support import ExternalRedis

    server = redis_factory()
    with server.client(0) as site, server.client(5) as ours:
        site.set("site", "kept")
        ours.set("left-by-a-test", "1")
        external = ExternalRedis(server.url_for(5))
        external.empty()
        assert ours.dbsize() == 0
        assert site.get("site") == b"kept"
    with pytest.raises(ValueError, match="names database 5"):
        external.client(0)


def test_a_restart_on_a_port_another_redis_took_fails_clearly(
    redis_factory: Callable[[], RedisServer], tmp_path: Path
):
    """While a server is down another process may take its port; start() then says so,
    instead of returning while the other process's Redis answers the server's URL (a
    worker so reached another test run's Redis, which that run killed and paused)."""
    server = redis_factory()
    server.kill()
    other = RedisServer(tmp_path / "other", binary=server.binary)
    other.port = server.port
    other.start()
    try:
        with pytest.raises(RuntimeError, match=f"port {server.port} is held by another"):
            server.start()
        assert not server.running
        assert other.running
    finally:
        other.kill()


def test_servers_listen_below_the_ephemeral_port_range(redis_factory: Callable[[], RedisServer]):
    """No bind(0) and no outgoing connection of any process can take a server's port
    while a test has it down: it lies below the kernel's ephemeral range."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {redis_factory().port for _ in range(3)}
    assert all(1024 <= port < low for port in ports), (ports, low)


def test_server_ports_are_never_handed_out_twice_on_one_machine() -> None:
    """Two test runs side by side drew the same port for servers they restart (the
    ``random`` module is seeded by tests): each port is now drawn from the system's
    random source and locked for the process that got it."""
    import random
    import subprocess
    import sys

    random.seed(1)
    first = server_port()
    random.seed(1)
    second = server_port()
    code = (
        "import random, sys; sys.path.insert(0, 'tests'); random.seed(1); "
        "from redis_support import server_port; "
        "print(' '.join(str(server_port()) for _ in range(20)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    others = {int(port) for port in other.stdout.split()}
    assert first != second
    assert len(others) == 20
    assert not others & {first, second}
