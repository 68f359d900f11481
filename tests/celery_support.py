"""Celery for tests: apps on a real broker, in-process workers and worker subprocesses.

The brokers are the Redis of ``redis_support`` and the RabbitMQ of ``amqp_support``
(each started by the tests, or an external one named by an environment variable).

Each app gets names of its own (a Redis key prefix, a queue name), so tests sharing a
broker never see each other's messages; :func:`discard_app` removes them from the
broker when the test is done with the app.
"""

from __future__ import annotations

import faulthandler
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from amqp_support import AMQP_URL_ENV, DECLARED_QUEUES
from celery import Celery, signals

__all__ = [
    "AMQP_ENV",
    "Broker",
    "Reading",
    "WorkerProcess",
    "discard_app",
    "in_process_worker",
    "make_app",
    "wait_until",
]

#: The environment variable naming an external RabbitMQ to run the Celery tests against.
AMQP_ENV = AMQP_URL_ENV

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent

_names = itertools.count(1)


@signals.setup_logging.connect
def _keep_pytest_logging(**kwargs: Any) -> None:
    """With a receiver here, Celery's workers leave logging (and caplog) alone."""


#: How long at most an in-process worker's event loop sleeps in its poll (seconds).
LOOP_TICK = 0.05


def _nothing() -> None:
    """A timer entry whose only effect is to end the event loop's poll."""


@dataclass(frozen=True)
class Broker:
    """A broker URL and its kind (``redis`` or ``amqp``)."""

    kind: str
    url: str


def make_app(broker: Broker, *, visibility_timeout: float | None = None, **conf: Any) -> Celery:
    """A Celery app on ``broker`` with names of its own and the settings we recommend.

    ``visibility_timeout`` (Redis) sets how soon an unacknowledged message of a dead
    worker is handed out again, and makes the workers look for such messages every
    second.
    """
    tag = f"et{os.getpid()}-{next(_names)}-{uuid.uuid4().hex[:6]}"
    app = Celery(tag, broker=broker.url, set_as_current=True)
    options: dict[str, Any] = {}
    if broker.kind == "redis":
        options["global_keyprefix"] = f"{tag}:"
        # No read waits forever: a worker consuming from a Redis that was killed and
        # restarted could sit in a read of BRPOP's reply that never comes, and then
        # never see that it was asked to stop (seen under a busy make test). Longer
        # than kombu's BRPOP timeout (1 s), so a healthy wait is never cut short.
        options["socket_timeout"] = 10
        if visibility_timeout is not None:
            options.update(
                visibility_timeout=visibility_timeout,
                unacked_restore_interval=1,
                unacked_restore_throttle=1,
            )
    else:
        # A durable queue outlives the test on a shared broker: discard_app deletes it,
        # and the session checks that none is left.
        DECLARED_QUEUES.add(f"{tag}-events")
    app.conf.update(
        broker_transport_options=options,
        task_default_queue=f"{tag}-events",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        # No remote control: the tests never use it, and its broadcast channel is a
        # Redis pub/sub read that, after a Redis restart on a busy machine, was seen to
        # block a worker's only thread for good, so the worker never stopped.
        worker_enable_remote_control=False,
        **conf,
    )
    return app


def discard_app(app: Celery) -> None:
    """Close ``app`` and remove what it left on its broker: its queue (RabbitMQ), or
    the keys under its prefix (Redis). A broker that is gone (a test crashed it for
    good) is left alone; the session's check finds what this missed."""
    from kombu.exceptions import OperationalError

    try:
        if app.conf.broker_url.startswith("redis"):
            _delete_redis_keys(app)
        else:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=10)
                connection.default_channel.queue_delete(app.conf.task_default_queue)
    except (OperationalError, OSError):
        pass
    finally:
        app.close()


def _delete_redis_keys(app: Celery) -> None:
    import redis

    prefix = app.conf.broker_transport_options.get("global_keyprefix")
    if not prefix:
        return
    try:
        with redis.Redis.from_url(app.conf.broker_url, socket_timeout=10) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
    except redis.RedisError:
        pass  # a Redis the test killed: its data went with it


def app_settings(app: Celery) -> dict[str, Any]:
    """The settings a worker subprocess needs to rebuild ``app`` (JSON-ready)."""
    return {
        "broker_url": app.conf.broker_url,
        "broker_transport_options": dict(app.conf.broker_transport_options),
        "task_default_queue": app.conf.task_default_queue,
    }


@contextmanager
def in_process_worker(app: Celery) -> Iterator[Any]:
    """A solo worker for ``app`` in a thread of this process, stopped on exit.

    Stopping it may take long on a busy machine: it is waited for (120 s at most, a
    liveness bound). Celery's helper asks a worker to stop through a module-level flag
    that it clears only once the worker stopped in time; left set, every later worker
    would stop before it started and its test would wait forever. So the flag is
    cleared here before each start.

    Each worker gets an event loop (kombu hub) of its own. Celery's worker takes the
    process's current loop when there is one (``kombu.asynchronous.get_event_loop``, a
    module global), so a second worker started beside a running one drove the first
    one's loop from another thread: two threads read one Redis connection (a reply
    read half by each: ``InvalidResponse: Protocol Error``), and the second worker's
    stop closed the loop under the first (``I/O operation on closed epoll object``).
    A real worker is one per process and never meets this.
    """
    from celery.contrib.testing.worker import TestWorkController, start_worker
    from celery.worker import state
    from kombu.asynchronous import get_event_loop, set_event_loop

    class TickingWorkController(TestWorkController):
        """Wakes its event loop every LOOP_TICK seconds.

        kombu's hub runs the callbacks queued with ``call_soon`` just before it
        polls, and does not end its poll for one queued from its own thread meanwhile.
        On RabbitMQ a solo worker reads a message's frames in such callbacks, so the
        task runs in one, and the acknowledgement it queues waits until the poll
        returns: up to 10 s (the hub's longest poll) when nothing else arrives. With
        ``worker_prefetch_multiplier=1`` the broker sends nothing more until then, so
        queued messages went one per 10 s. This worker has no other timer that ends
        the poll sooner. See celery#7718 and kombu pull request 1587.
        """

        def on_consumer_ready(self, consumer: Any) -> None:
            # Called in the worker's thread, before its event loop starts.
            if consumer.hub is not None:
                consumer.hub.call_repeatedly(LOOP_TICK, _nothing)
            super().on_consumer_ready(consumer)

    state.should_terminate = None
    outer_loop = get_event_loop()
    set_event_loop(None)  # the worker builds its own and makes it current
    try:
        with start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            shutdown_timeout=120,
            loglevel="WARNING",
            WorkController=TickingWorkController,
        ) as worker:
            yield worker
    except RuntimeError:
        # The worker did not stop: show where every thread is, for the report.
        faulthandler.dump_traceback(all_threads=True)
        raise
    finally:
        set_event_loop(outer_loop)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a true value, which is returned; fail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout:.0f} s: {predicate}")
        time.sleep(interval)


class WorkerProcess:
    """A Celery worker in a subprocess, running ``tests/celery_worker_app.py``.

    ``config`` is written to a JSON file the worker module reads at import: the app's
    settings, the MongoDB to store to, the spool directory and the leaves' behaviour.
    ``stats()`` asks the worker, through a file, for its counters.
    """

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path = self.directory / "worker.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = self.directory / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Exit statuses of the times the worker ended on its own (see revive()).
        self.exits: list[int] = []
        self._ended_by_test = False

    def start(self) -> None:
        """Start the worker and wait until it consumes (it writes a ready file)."""
        self.starts += 1
        self._ended_by_test = False
        ready = self.directory / f"ready-{self.starts}"
        env = dict(os.environ)
        env["EVENTTRACKING_TEST_WORKER_CONFIG"] = str(self.config_path)
        env["EVENTTRACKING_TEST_WORKER_READY"] = str(ready)
        env["EVENTTRACKING_TEST_WORKER_START"] = str(self.starts)
        # Dead letters of unknown backend names go to the default spool: keep it here.
        env["XDG_CACHE_HOME"] = str(self.directory / "cache")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS_DIR), str(REPO_DIR), env.get("PYTHONPATH", "")]
        )
        queue = json.loads(self.config_path.read_text())["app"]["task_default_queue"]
        with open(self.log_path, "ab") as log:
            command = [sys.executable, "-m", "celery", "-A", "celery_worker_app", "worker"]
            command += ["--pool=solo", "--without-gossip", "--without-mingle"]
            command += ["--without-heartbeat", "--loglevel=INFO", "-Q", queue]
            self.process = subprocess.Popen(
                command,
                cwd=self.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the worker did not start; see {self.log_path}:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        """The worker's log so far (its last 6,000 characters)."""
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def revive(self) -> bool:
        """Start the worker again if it ended on its own, as a supervisor (systemd,
        Kubernetes) would; True if it did. Its exit status is kept in :attr:`exits`.

        Celery's worker can exit when Redis is SIGKILLed under it: kombu, closing the
        broken connection, raised ``AttributeError: 'NoneType' object has no
        attribute 'hostname'`` from ``restore_unacked`` (seen once in a make test
        run), which Celery treats as unrecoverable. docs/scale.rst asks for a
        supervisor that restarts workers; the fault tests keep one.
        """
        if self.process is None or self._ended_by_test or self.process.poll() is None:
            return False
        self.exits.append(self.process.returncode)
        print(f"worker {self.directory.name} exited ({self.process.returncode}); restarted")
        self.start()
        return True

    def kill(self) -> None:
        """SIGKILL the worker, as a crash or the OOM killer would."""
        self._ended_by_test = True
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM): the worker finishes its task and exits."""
        self._ended_by_test = True
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def stats(self, timeout: float = 30.0) -> dict[str, Any]:
        """The worker's counters, as it reports them through ``stats-request``."""
        request = self.directory / "stats-request"
        answer = self.directory / "stats.json"
        answer.unlink(missing_ok=True)
        request.write_text("1")
        wait_until(answer.exists, timeout)
        # Written to a temporary name, then renamed: never read half-written.
        result: dict[str, Any] = json.loads(answer.read_text())
        return result


class Reading:
    """A leaf that promises to leave events alone (``mutates_events = False``) and keeps
    what it is sent."""

    mutates_events = False

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)
