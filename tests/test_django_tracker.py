"""DjangoTracker, override_default_tracker and the app configuration (apps.py)."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import django_support
import pytest
from django.test import override_settings
from django_support import REPO_DIR, TESTS_DIR

from eventtracking import tracker
from eventtracking.backends.memory import InMemoryBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.locator import ContextVarLocator
from eventtracking.processors.regex_filter import RegexFilter

pytestmark = pytest.mark.usefixtures("django_env")

# pytest finds fixtures by module attribute: these come from django_support.
django_env = django_support.django_env

HERE = __name__
MEMORY = "eventtracking.backends.memory.InMemoryBackend"
MONGO = "eventtracking.backends.mongodb.MongoBackend"
ROUTING = "eventtracking.backends.routing.RoutingBackend"


class Recorder:
    """A backend that keeps its options, the events it gets, and whether it was closed."""

    mutates_events = False

    def __init__(self, option: Any = None, children: Any = None, **extra: Any) -> None:
        self.option = option
        self.children = children
        self.extra = extra
        self.events: list[dict[str, Any]] = []
        self.closed = False

    def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class Strict:
    """A backend whose constructor takes exactly one keyword."""

    def __init__(self, *, size: int) -> None:
        self.size = size

    def send(self, event: dict[str, Any]) -> None:
        """Accept and forget."""


class Exploding:
    """A backend whose constructor always fails."""

    def __init__(self) -> None:
        raise RuntimeError("cannot start")

    def send(self, event: dict[str, Any]) -> None:
        """Never reached."""


class NotABackend:
    """A class without send()."""


class Upper:
    """A processor that upper-cases the event name."""

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "name": event["name"].upper()}


def build(**overrides: Any) -> Any:
    from eventtracking.django import DjangoTracker

    with override_settings(**overrides):
        return DjangoTracker()


def test_backends_are_built_from_engine_and_options() -> None:
    """Each backend entry becomes an instance of ENGINE built with OPTIONS as keywords."""
    built = build(
        EVENT_TRACKING_BACKENDS={
            "memory": {"ENGINE": MEMORY, "OPTIONS": {"max_events": 3}},
            "recorder": {"ENGINE": f"{HERE}.Recorder"},
        }
    )
    assert list(built.backends) == ["memory", "recorder"]
    assert isinstance(built.get_backend("memory"), InMemoryBackend)
    assert built.get_backend("memory").max_events == 3
    assert built.get_backend("recorder").option is None
    built.emit("one", {"n": 1})
    assert [event["name"] for event in built.get_backend("recorder").events] == ["one"]


def test_nested_engines_are_built_inside_dicts_and_lists() -> None:
    """ENGINE dicts nested in OPTIONS, in plain dicts and in lists, are all built."""
    built = build(
        EVENT_TRACKING_BACKENDS={
            "outer": {
                "ENGINE": ROUTING,
                "OPTIONS": {
                    "backends": {
                        "inner": {"ENGINE": MEMORY},
                        "deeper": {
                            "ENGINE": ROUTING,
                            "OPTIONS": {
                                "backends": {"leaf": {"ENGINE": f"{HERE}.Recorder"}},
                                "processors": [{"ENGINE": f"{HERE}.Upper"}],
                            },
                        },
                    },
                    "processors": [
                        {
                            "ENGINE": "eventtracking.processors.regex_filter.RegexFilter",
                            "OPTIONS": {
                                "filter_type": "blocklist",
                                "regular_expressions": ["^debug"],
                            },
                        }
                    ],
                },
            },
            "tree": {
                "ENGINE": f"{HERE}.Recorder",
                "OPTIONS": {
                    "option": {"plain": {"ENGINE": MEMORY}, "kept": [1, "two"]},
                    "children": [{"ENGINE": f"{HERE}.Recorder", "OPTIONS": {"option": 7}}],
                },
            },
        }
    )
    outer = built.get_backend("outer")
    assert isinstance(outer, RoutingBackend)
    assert isinstance(outer.processors[0], RegexFilter)
    deeper = outer.backends["deeper"]
    assert isinstance(deeper, RoutingBackend)
    assert isinstance(deeper.processors[0], Upper)
    tree = built.get_backend("tree")
    assert isinstance(tree.option["plain"], InMemoryBackend)
    assert tree.option["kept"] == [1, "two"]
    assert tree.children[0].option == 7

    built.emit("debug.noise", {})
    built.emit("page.view", {})
    assert [e["name"] for e in outer.backends["inner"].events] == ["page.view"]
    assert [e["name"] for e in deeper.backends["leaf"].events] == ["PAGE.VIEW"]


def test_processors_are_built_in_order() -> None:
    """EVENT_TRACKING_PROCESSORS becomes the tracker's processors, in order, with options."""
    built = build(
        EVENT_TRACKING_BACKENDS={"memory": {"ENGINE": MEMORY}},
        EVENT_TRACKING_PROCESSORS=[
            {"ENGINE": f"{HERE}.Upper"},
            {
                "ENGINE": "eventtracking.processors.regex_filter.RegexFilter",
                "OPTIONS": {"filter_type": "allowlist", "regular_expressions": ["^KEEP"]},
            },
        ],
    )
    assert [type(p) for p in built.processors] == [Upper, RegexFilter]
    built.emit("keep.me", {})
    built.emit("drop.me", {})
    assert [e["name"] for e in built.get_backend("memory").events] == ["KEEP.ME"]


def test_missing_settings_mean_no_backends_and_no_processors() -> None:
    """Without the settings the tracker has no backends and no processors."""
    built = build(EVENT_TRACKING_BACKENDS=None, EVENT_TRACKING_PROCESSORS=None)
    assert dict(built.backends) == {}
    assert built.processors == []


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"OPTIONS": {}}, "must be a dict with an ENGINE key"),
        ({"ENGINE": ""}, "ENGINE must be a dotted path"),
        ({"ENGINE": None}, "ENGINE must be a dotted path"),
        ({"ENGINE": 42}, "ENGINE must be a dotted path"),
        ({"ENGINE": "BarBackend"}, "has no module part"),
        ({"ENGINE": "no_such_package.BarBackend"}, "cannot import module 'no_such_package'"),
        ({"ENGINE": f"{HERE}.NoSuchClass"}, "has no attribute 'NoSuchClass'"),
    ],
)
def test_bad_engine_raises_value_error_naming_the_entry(entry: Any, fragment: str) -> None:
    """A missing, empty, non-string or unimportable ENGINE raises ValueError naming it."""
    with pytest.raises(ValueError, match="EVENT_TRACKING_BACKENDS\\['bad'\\]") as caught:
        build(EVENT_TRACKING_BACKENDS={"bad": entry})
    assert fragment in str(caught.value)


def test_processor_without_engine_raises_value_error() -> None:
    """A processor entry without ENGINE raises ValueError naming its index."""
    with pytest.raises(ValueError, match=r"EVENT_TRACKING_PROCESSORS\[1\]"):
        build(EVENT_TRACKING_PROCESSORS=[{"ENGINE": f"{HERE}.Upper"}, {}])


def test_class_without_send_is_rejected() -> None:
    """An ENGINE class without send() is refused as a backend with ValueError."""
    with pytest.raises(ValueError, match="is not a backend: class NotABackend has no send"):
        build(EVENT_TRACKING_BACKENDS={"odd": {"ENGINE": f"{HERE}.NotABackend"}})
    with pytest.raises(ValueError, match='does not have a callable "send" method'):
        build(EVENT_TRACKING_BACKENDS={"odd": "not a backend"})


def test_a_mock_class_as_engine_is_built_and_receives_events() -> None:
    """ENGINE ``unittest.mock.MagicMock``, as tests written for 4.x configure it, is
    built: a class whose instances make attributes on demand is checked on the
    instance, and the mock's send() gets the event."""
    built = build(
        EVENT_TRACKING_BACKENDS={
            "router": {
                "ENGINE": "eventtracking.backends.routing.RoutingBackend",
                "OPTIONS": {"backends": {"mocked": {"ENGINE": "unittest.mock.MagicMock"}}},
            }
        }
    )
    built.emit("mocked.event", {"n": 1})
    mocked = built.backends["router"].backends["mocked"]
    assert mocked.send.call_count == 1
    assert mocked.send.call_args.args[0]["name"] == "mocked.event"


def test_options_the_constructor_rejects_raise_value_error() -> None:
    """OPTIONS not matching the signature, or a failing constructor, raise ValueError."""
    with pytest.raises(ValueError) as caught:
        build(EVENT_TRACKING_BACKENDS={"s": {"ENGINE": f"{HERE}.Strict", "OPTIONS": {"sise": 1}}})
    assert str(caught.value) == (
        "EVENT_TRACKING_BACKENDS['s']: Strict has no option 'sise' (did you mean 'size'?); "
        "its options are size."
    )
    with pytest.raises(ValueError) as caught:
        build(EVENT_TRACKING_BACKENDS={"s": {"ENGINE": f"{HERE}.Strict"}})
    assert str(caught.value) == "EVENT_TRACKING_BACKENDS['s']: Strict needs the option(s) 'size'."
    with pytest.raises(ValueError, match="must be a dict of keyword arguments"):
        build(EVENT_TRACKING_BACKENDS={"s": {"ENGINE": f"{HERE}.Strict", "OPTIONS": [1]}})
    with pytest.raises(ValueError, match="raised RuntimeError: cannot start") as caught:
        build(EVENT_TRACKING_BACKENDS={"x": {"ENGINE": f"{HERE}.Exploding"}})
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_a_misspelled_mongo_option_names_it_and_the_valid_ones_without_the_signature() -> None:
    """A misspelled MongoBackend option is named with the closest valid one and the list
    of valid options, not the constructor's whole signature with its type hints."""
    with pytest.raises(ValueError) as caught:
        build(EVENT_TRACKING_BACKENDS={"m": {"ENGINE": MONGO, "OPTIONS": {"hots": "db"}}})
    message = str(caught.value)
    assert message.startswith(
        "EVENT_TRACKING_BACKENDS['m']: MongoBackend has no option 'hots' (did you mean "
        "'host'?); its options are host, port, user, password, database, collection, extra, "
    )
    assert "str | None" not in message


def test_a_misspelled_logger_option_gets_a_did_you_mean() -> None:
    """A misspelled LoggerBackend option is named with the closest valid one and the
    list of valid options, in the same words as MongoBackend's."""
    logger = "eventtracking.backends.logger.LoggerBackend"
    with pytest.raises(ValueError) as caught:
        build(EVENT_TRACKING_BACKENDS={"l": {"ENGINE": logger, "OPTIONS": {"nmae": "t"}}})
    assert str(caught.value).endswith(
        "LoggerBackend has no option 'nmae' (did you mean 'name'?); its options are name, "
        "max_event_size, level, encoder."
    )


@pytest.mark.parametrize(
    ("engine", "guess"),
    [
        ("eventtracking.backends.loger.LoggerBackend", "eventtracking.backends.logger"),
        ("eventtraking.backends.logger.LoggerBackend", "eventtracking.backends.logger"),
        ("eventtracking.backends.logger.LogerBackend", "eventtracking.backends.logger"),
        ("eventtracking.processors.whitelst.NameWhitelistProcessor", "eventtracking.processors"),
    ],
)
def test_a_misspelled_engine_gets_a_did_you_mean(engine: str, guess: str) -> None:
    """A misspelt module or class in ENGINE is named with the closest path that exists."""
    with pytest.raises(ValueError) as caught:
        build(EVENT_TRACKING_BACKENDS={"x": {"ENGINE": engine}})
    match = re.search(r"Did you mean '([\w.]+)'\?", str(caught.value))
    assert match is not None, str(caught.value)
    assert match.group(1).startswith(guess)
    module_name, _, attribute = match.group(1).rpartition(".")
    assert hasattr(importlib.import_module(module_name), attribute)


def test_an_engine_like_no_other_gets_no_guess() -> None:
    """An ENGINE whose module resembles nothing importable gets the plain advice."""
    with pytest.raises(ValueError) as caught:
        build(EVENT_TRACKING_BACKENDS={"x": {"ENGINE": "qwzx.Nope"}})
    assert "Did you mean" not in str(caught.value)
    assert "Check the spelling" in str(caught.value)


def test_a_missing_optional_dependency_names_the_extra_to_install() -> None:
    """A backend whose optional dependency is missing fails with a message naming the
    extra, as a DEPENDENCY error rather than one about its options."""
    from eventtracking._util import engines as _engines

    result = _run_python(
        """
        import sys
        sys.modules["pymongo"] = None
        from eventtracking._util import engines as _engines
        try:
            _engines.build({"ENGINE": "eventtracking.backends.mongodb.MongoBackend"},
                           "EVENT_TRACKING_BACKENDS['mongo']", _engines.BACKEND)
        except _engines.EngineError as error:
            print(error.kind)
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    kind, message = result.stdout.splitlines()
    assert kind == _engines.DEPENDENCY
    assert "needs a package that is not installed" in message
    assert "pip install 'event-tracking[mongo]'" in message


def test_settings_of_the_wrong_shape_raise_value_error() -> None:
    """A backends setting that is not a dict, or processors that are not a list, fail."""
    with pytest.raises(ValueError, match="EVENT_TRACKING_BACKENDS must be a dict"):
        build(EVENT_TRACKING_BACKENDS=[{"ENGINE": MEMORY}])
    with pytest.raises(ValueError, match="EVENT_TRACKING_PROCESSORS must be a list"):
        build(EVENT_TRACKING_PROCESSORS={"ENGINE": f"{HERE}.Upper"})


def test_backends_built_before_a_failure_are_closed() -> None:
    """When a later backend fails, the ones already built are closed, not leaked."""
    created: list[Recorder] = []
    original = Recorder.__init__

    def remember(self: Recorder, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(self)

    Recorder.__init__ = remember  # type: ignore[method-assign]
    try:
        with pytest.raises(ValueError):
            build(
                EVENT_TRACKING_BACKENDS={
                    "a": {"ENGINE": f"{HERE}.Recorder"},
                    "b": {"ENGINE": f"{HERE}.Exploding"},
                }
            )
    finally:
        Recorder.__init__ = original  # type: ignore[method-assign]
    assert len(created) == 1
    assert created[0].closed


def test_custom_setting_names() -> None:
    """The constructor reads the settings it is told to read."""
    from eventtracking.django import DjangoTracker

    with override_settings(
        OTHER_BACKENDS={"rec": {"ENGINE": f"{HERE}.Recorder", "OPTIONS": {"option": "x"}}},
        OTHER_PROCESSORS=[{"ENGINE": f"{HERE}.Upper"}],
    ):
        built = DjangoTracker("OTHER_BACKENDS", "OTHER_PROCESSORS")
    assert built.get_backend("rec").option == "x"
    assert isinstance(built.processors[0], Upper)


def test_override_default_tracker_registers_only_when_enabled() -> None:
    """override_default_tracker registers a DjangoTracker iff EVENT_TRACKING_ENABLED."""
    from eventtracking.django import DjangoTracker
    from eventtracking.django.django_tracker import override_default_tracker

    with override_settings(EVENT_TRACKING_ENABLED=False):
        assert override_default_tracker() is None
    assert tracker.DEFAULT_TRACKER_NAME not in tracker.TRACKERS

    with override_settings(EVENT_TRACKING_ENABLED=True):
        built = override_default_tracker()
    assert isinstance(built, DjangoTracker)
    assert tracker.get_tracker() is built


def test_contexts_are_isolated_between_threads_and_tasks() -> None:
    """The ContextVarLocator keeps each thread's and each task's contexts apart."""
    built = build(EVENT_TRACKING_BACKENDS={"memory": {"ENGINE": MEMORY}})
    assert isinstance(built.context_locator, ContextVarLocator)

    async def task(n: int, gate: asyncio.Event) -> None:
        with built.context("task", {"n": n}):
            await gate.wait()
            built.emit("task.event", {"n": n})

    async def main() -> None:
        gate = asyncio.Event()
        running = [asyncio.create_task(task(n, gate)) for n in range(20)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*running)

    asyncio.run(main())

    barrier = threading.Barrier(8, timeout=10)

    def worker(n: int) -> None:
        with built.context("thread", {"t": n}):
            barrier.wait()
            built.emit("thread.event", {"t": n})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    events = built.get_backend("memory").events
    tasks = [e for e in events if e["name"] == "task.event"]
    by_thread = [e for e in events if e["name"] == "thread.event"]
    assert len(tasks) == 20
    assert len(by_thread) == 8
    assert all(e["context"] == {"n": e["data"]["n"]} for e in tasks)
    assert all(e["context"] == {"t": e["data"]["t"]} for e in by_thread)


def test_app_ready_registers_tracker_and_checks() -> None:
    """ready() registers the default DjangoTracker and the eventtracking checks."""
    from django.apps import apps
    from django.core import checks as django_checks

    from eventtracking.django import DjangoTracker
    from eventtracking.django.checks import TAG

    config = apps.get_app_config("eventtracking_django")
    config.ready()
    assert isinstance(tracker.get_tracker(), DjangoTracker)
    assert config.startup_error is None
    assert TAG in django_checks.registry.registry.tags_available()


def test_app_ready_with_tracking_off_leaves_no_default_tracker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under the app, EVENT_TRACKING_ENABLED off means no tracker at all: get_tracker()
    raises KeyError as in 4.x and emit() drops and counts, never printing the events as a
    script without configuration would."""
    from django.apps import apps

    config = apps.get_app_config("eventtracking_django")
    tracker.set_fallback(tracker.console_tracker)
    with override_settings(EVENT_TRACKING_ENABLED=False):
        config.ready()
    before = tracker.stats()["dropped"].get("no_tracker", 0)
    with pytest.raises(KeyError):
        tracker.get_tracker()
    tracker.emit("not.printed")
    assert tracker.stats()["dropped"]["no_tracker"] == before + 1
    assert tracker.TRACKERS == {}
    assert capsys.readouterr().out == ""


def test_app_ready_with_bad_settings_logs_and_registers_a_dropping_tracker(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a server process, a broken configuration is logged at ERROR in one line, with
    its check id and without a traceback, and kept for the checks; the default tracker
    registered only drops events."""
    from django.apps import apps

    monkeypatch.setattr(sys, "argv", ["gunicorn", "--workers", "2", "site.wsgi"])
    config = apps.get_app_config("eventtracking_django")
    with (
        caplog.at_level(logging.ERROR, logger="eventtracking.django"),
        override_settings(EVENT_TRACKING_BACKENDS={"bad": {"ENGINE": "nope.Nope"}}),
    ):
        config.ready()
    try:
        assert list(tracker.TRACKERS) == [tracker.DEFAULT_TRACKER_NAME]
        assert list(tracker.get_tracker().backends) == ["dropped"]
        assert isinstance(config.startup_error, ValueError)
        assert "nope" in str(config.startup_error)
        (record,) = [r for r in caplog.records if "Event tracking is off" in r.getMessage()]
        assert "(eventtracking.E004)" in record.getMessage()
        assert not record.exc_info
    finally:
        config.startup_error = None


def test_in_a_management_command_the_checks_and_the_first_drop_report_the_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `manage.py <command>` ready() logs nothing, since the system checks print the
    error; the first event dropped for want of a tracker gives it, once."""
    from django.apps import apps

    monkeypatch.setattr(sys, "argv", ["manage.py", "shell"])
    monkeypatch.setattr(tracker, "_warned_no_tracker", False)
    config = apps.get_app_config("eventtracking_django")
    with (
        caplog.at_level(logging.WARNING),
        override_settings(EVENT_TRACKING_BACKENDS={"bad": {"ENGINE": "nope.Nope"}}),
    ):
        config.ready()
        assert caplog.records == []
        tracker.emit("first")
        tracker.emit("second")
    try:
        (record,) = caplog.records
        message = record.getMessage()
        assert message.startswith("Event 'first' dropped: the tracker drops every event")
        assert "(eventtracking.E004)" in message
        assert "'nope'" in message
    finally:
        config.startup_error = None


def test_with_a_misspelled_engine_views_that_enter_contexts_keep_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a misspelled ENGINE, a view written as the docs show
    (``with tracker.get_tracker().context(...)``) answers 200 through the WSGI handler;
    its event is dropped and counted, and names nobody configured still raise KeyError."""
    from django.apps import apps
    from django.test import Client

    monkeypatch.setattr(sys, "argv", ["gunicorn", "site.wsgi"])
    config = apps.get_app_config("eventtracking_django")
    typo = {"logger": {"ENGINE": "eventtracking.backends.loger.LoggerBackend"}}
    with override_settings(EVENT_TRACKING_BACKENDS=typo):
        config.ready()
    try:
        before = tracker.stats()["dropped"].get("no_tracker", 0)
        response = Client().get("/emit/", {"rid": "typo"})
        assert response.status_code == 200
        assert response.content == b"ok"
        # The view's event, and the per-request event of TrackRequestEventMiddleware.
        after_request = tracker.stats()["dropped"]["no_tracker"]
        assert after_request == before + 2
        tracker.emit("bare.emit")
        assert tracker.stats()["dropped"]["no_tracker"] == after_request + 1
        with pytest.raises(KeyError):
            tracker.get_tracker("nobody.configured")
    finally:
        config.startup_error = None


def test_the_emit_command_says_the_settings_are_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """`manage.py eventtracking_emit` with a broken configuration fails, naming the
    error, rather than reporting the dropping tracker's backend."""
    from django.apps import apps
    from django.core.management import call_command
    from django.core.management.base import CommandError

    config = apps.get_app_config("eventtracking_django")
    with override_settings(EVENT_TRACKING_BACKENDS={"bad": {"ENGINE": "nope.Nope"}}):
        config.ready()
    try:
        with pytest.raises(CommandError, match=r"could not be built from settings.*'nope'"):
            call_command("eventtracking_emit")
    finally:
        config.startup_error = None


def _misspelled_engine_site(tmp_path: Path) -> dict[str, str]:
    """A settings module with a misspelled ENGINE; the environment to run it."""
    (tmp_path / "typo_settings.py").write_text(
        textwrap.dedent(
            """
            SECRET_KEY = "tests-only"
            DEBUG = True
            ALLOWED_HOSTS = ["127.0.0.1"]
            INSTALLED_APPS = ["eventtracking.django"]
            EVENT_TRACKING_ENABLED = True
            EVENT_TRACKING_BACKENDS = {
                "logger": {"ENGINE": "eventtracking.backends.loger.LoggerBackend"},
            }
            """
        )
    )
    return {
        "PYTHONPATH": f"{tmp_path}:{REPO_DIR}",
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "typo_settings",
        "PYTHONUNBUFFERED": "1",
    }


def test_manage_py_check_prints_a_misspelled_engine_once_without_a_traceback(
    tmp_path: Path,
) -> None:
    """`manage.py check` with a misspelled ENGINE prints E004 with its hint, once, and no
    traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_misspelled_engine_site(tmp_path),
        cwd=str(tmp_path),
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert output.count("eventtracking.E004") == 1, output
    assert output.count("cannot import module 'eventtracking.backends.loger'") == 1, output
    assert "Traceback" not in output


@pytest.mark.slow
def test_runserver_prints_a_misspelled_engine_once(tmp_path: Path) -> None:
    """runserver, with its autoreloader's two processes, prints the E004 error once."""
    log = tmp_path / "runserver.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", "127.0.0.1:0"],
            env=_misspelled_engine_site(tmp_path),
            cwd=str(tmp_path),
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "System check identified" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    output = log.read_text(errors="replace")
    assert output.count("eventtracking.E004") == 1, output
    assert "Event tracking is off" not in output


def _run_python(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": f"{TESTS_DIR}:{REPO_DIR}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(TESTS_DIR),
        check=False,
    )


def test_process_exit_flushes_the_tracker(tmp_path: Any) -> None:
    """Events held by a buffering backend are written when the process exits."""
    result = _run_python(
        f"""
        import django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS=["eventtracking.django"],
            EVENT_TRACKING_ENABLED=True,
            EVENT_TRACKING_SHUTDOWN_TIMEOUT=5,
            EVENT_TRACKING_BACKENDS={{"file": {{
                "ENGINE": "django_settings.BufferedFileBackend",
                "OPTIONS": {{"directory": {str(tmp_path)!r}}},
            }}}},
        )
        django.setup()
        from eventtracking import tracker
        tracker.emit("at.exit", {{"n": 1}})
        tracker.emit("at.exit", {{"n": 2}})
        """
    )
    assert result.returncode == 0, result.stderr
    lines = [
        json.loads(line)
        for path in tmp_path.glob("events-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert [(e["name"], e["data"]["n"]) for e in lines] == [("at.exit", 1), ("at.exit", 2)]


def test_core_imports_without_django_and_app_needs_no_optional_packages() -> None:
    """`import eventtracking` works with Django hidden; the app needs no celery/openedx."""
    result = _run_python(
        """
        import sys
        sys.modules["django"] = None
        import eventtracking, eventtracking.tracker, eventtracking.locator
        print("core-ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "core-ok" in result.stdout

    result = _run_python(
        """
        import sys
        for name in ("celery", "openedx_events", "crum", "waffle"):
            sys.modules[name] = None
        import django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS=["eventtracking.django"],
            EVENT_TRACKING_ENABLED=True,
            EVENT_TRACKING_BACKENDS={
                "m": {"ENGINE": "eventtracking.backends.memory.InMemoryBackend"}},
        )
        django.setup()
        import eventtracking.django.middleware, eventtracking.django.checks
        from eventtracking import tracker
        tracker.emit("x", {})
        print(len(tracker.get_tracker().get_backend("m").events))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


@pytest.mark.parametrize(
    "settings",
    [
        {"EVENT_TRACKING_BACKENDS": ["not", "a", "dict"]},
        {"EVENT_TRACKING_PROCESSORS": {"not": "a list"}},
        {"EVENT_TRACKING_BACKENDS": {"bad": {"ENGINE": "no.such.Backend"}}},
    ],
    ids=["backends-not-a-dict", "processors-not-a-list", "engine-not-found"],
)
def test_setting_errors_are_improperly_configured_and_value_errors(
    settings: dict[str, Any],
) -> None:
    """A DjangoTracker refusing its settings raises the library's ImproperlyConfigured,
    which is the ValueError that 4.x raised."""
    from eventtracking.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured) as caught:
        build(**settings)
    assert isinstance(caught.value, ValueError)


def test_the_w002_fix_is_printed_once_when_the_checks_and_an_event_both_meet_it(
    tmp_path: Path,
) -> None:
    """`manage.py eventtracking_emit` with a LoggerBackend whose logger writes nothing:
    the system check prints W002 with the LOGGING that fixes it, and the warning of the
    first dropped event refers to it instead of printing it again; the drop is counted."""
    (tmp_path / "silent_settings.py").write_text(
        textwrap.dedent(
            """
            SECRET_KEY = "tests-only"
            INSTALLED_APPS = ["eventtracking.django"]
            EVENT_TRACKING_ENABLED = True
            EVENT_TRACKING_BACKENDS = {
                "logger": {
                    "ENGINE": "eventtracking.backends.logger.LoggerBackend",
                    "OPTIONS": {"name": "tracking"},
                },
            }
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "django", "eventtracking_emit"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PYTHONPATH": f"{tmp_path}:{REPO_DIR}",
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "silent_settings",
        },
        cwd=str(tmp_path),
        check=False,
    )
    output = result.stdout + result.stderr
    assert "(eventtracking.W002)" in output
    assert output.count("'disable_existing_loggers': False") == 1, output
    assert "LoggerBackend writes nothing" in output.split("HINT:", 1)[1]
    assert "backends.logger.dropped_not_enabled: +1" in output
