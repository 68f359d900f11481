"""The embedded Redis that broker tests run against: it answers, persists and restarts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis_support import RedisServer

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
