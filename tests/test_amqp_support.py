"""The RabbitMQ that broker tests start: it answers, persists, restarts, and goes away."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from amqp_support import RabbitServer, leftover_queues
from celery_support import Broker, discard_app, make_app, wait_until
from kombu import Connection, Exchange, Queue
from kombu.exceptions import OperationalError

pytestmark = pytest.mark.slow


def _running(pid: int, group: bool = False) -> list[int]:
    """The processes (the group's, if ``group``) still running, zombies left out: a
    SIGKILLed beam.smp's wrapper is gone before init has reaped beam.smp."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgid = fields[0], int(fields[2])
        if state != "Z" and (pgid == pid if group else int(entry.name) == pid):
            found.append(int(entry.name))
    return found


def _gone(pid: int, group: bool = False) -> bool:
    """Whether the process (group) is gone within 10 s; fails the test otherwise."""
    return bool(wait_until(lambda: not _running(pid, group), timeout=10))


def test_a_persistent_message_survives_a_sigkill_and_nothing_outlives_close(
    rabbitmq_factory: Callable[..., RabbitServer],
) -> None:
    """A confirmed persistent message on a durable queue is there after a SIGKILL and a
    restart on the same data and port; close() leaves no process of the broker or its epmd."""
    server = rabbitmq_factory()
    port = server.port
    queue = Queue("kept", Exchange("kept"), "kept", durable=True)
    # Confirmed, as the library publishes: the broker answers once the message is on
    # disk (unconfirmed, a message published just before the kill was seen lost).
    with Connection(server.url, transport_options={"confirm_publish": True}) as connection:
        producer = connection.Producer()
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key="kept", declare=[queue])
    wrapper, epmd = server._server, server._epmd
    assert wrapper is not None and epmd is not None
    server.kill()
    assert _gone(wrapper.pid, group=True)  # beam.smp went with its wrapper
    server.start()
    assert server.port == port
    assert server.queues() == {"kept": 1}
    with Connection(server.url) as connection:
        message = connection.SimpleQueue(queue).get(timeout=10)
        assert message.payload == {"n": 1}
        message.ack()
    wrapper = server._server
    assert wrapper is not None
    server.close()
    assert _gone(wrapper.pid, group=True)
    assert _gone(epmd.pid)


def test_the_end_of_session_check_finds_a_queue_left_behind(
    rabbitmq_factory: Callable[..., RabbitServer],
) -> None:
    """What the session asserts at its end can fail: a queue an app declared and did not
    delete is found, by name and through rabbitmqctl; discard_app deletes it."""
    server = rabbitmq_factory()
    app = make_app(Broker("amqp", server.url))
    name = app.conf.task_default_queue
    with app.connection_for_write() as connection:
        app.amqp.queues[name](connection.default_channel).declare()
    assert leftover_queues(server.url, [name, "never-declared"]) == [name]
    assert name in server.queues()
    discard_app(app)
    assert leftover_queues(server.url, [name]) == []
    assert server.queues() == {}


def test_the_session_broker_answers(amqp_url: str) -> None:
    """The session's RabbitMQ (started by the tests, or named by
    EVENTTRACKING_TEST_AMQP_URL) accepts a login."""
    with Connection(amqp_url, connect_timeout=10) as connection:
        connection.connect()
        assert connection.connected


def test_a_broker_down_from_the_start_has_a_url_and_no_process(
    rabbitmq_factory: Callable[..., RabbitServer],
) -> None:
    """start=False: ports and URL are chosen, nothing runs, a login is refused."""
    server = rabbitmq_factory(False)
    assert not server.running
    refused = (OperationalError, OSError)
    with pytest.raises(refused), Connection(server.url, connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1)
