"""System checks: each id appears for a bad setting and is absent for a good one."""

from __future__ import annotations

import re
from typing import Any

import django_support
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from eventtracking.django import checks

pytestmark = pytest.mark.usefixtures("django_env")

# pytest finds fixtures by module attribute: these come from django_support.
django_env = django_support.django_env

MEMORY = "eventtracking.backends.memory.InMemoryBackend"
LOGGER = "eventtracking.backends.logger.LoggerBackend"
ROUTING = "eventtracking.backends.routing.RoutingBackend"
B = "EVENT_TRACKING_BACKENDS"
NOT_CALLABLE = 42


class NoSend:
    """Not a backend."""


class NotCallable:
    """Not a processor: instances cannot be called."""


def run_all() -> list[Any]:
    """Every eventtracking check's messages."""
    return [
        *checks.check_tracker_settings(),
        *checks.check_middleware(),
        *checks.check_middleware_settings(),
        *checks.check_async_routing(),
    ]


def ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def test_the_test_settings_pass_every_check() -> None:
    """The settings the other tests use raise nothing, and `manage.py check` agrees."""
    assert run_all() == []
    call_command("check", "--tag", checks.TAG, verbosity=0)


@pytest.mark.parametrize("value", [[{"ENGINE": MEMORY}], "memory", 3])
def test_e001_backends_not_a_dict(value: Any) -> None:
    """A backends setting that is not a dict is E001."""
    with override_settings(EVENT_TRACKING_BACKENDS=value):
        messages = checks.check_tracker_settings()
    assert ids(messages) == [checks.E001]
    assert messages[0].msg == checks.BACKENDS_NOT_A_DICT.format(
        setting=B, type_name=type(value).__name__
    )


def test_e002_processors_not_a_list() -> None:
    """A processors setting that is not a list or tuple is E002; a tuple is fine."""
    with override_settings(EVENT_TRACKING_PROCESSORS={"ENGINE": MEMORY}):
        messages = checks.check_tracker_settings()
    assert ids(messages) == [checks.E002]
    assert messages[0].msg == checks.PROCESSORS_NOT_A_LIST.format(
        setting="EVENT_TRACKING_PROCESSORS", type_name="dict"
    )
    upper = "eventtracking.processors.regex_filter.RegexFilter"
    with override_settings(EVENT_TRACKING_PROCESSORS=({"ENGINE": upper},)):
        assert checks.check_tracker_settings() == []


@pytest.mark.parametrize("entry", [{"OPTIONS": {}}, {"ENGINE": ""}, {"ENGINE": None}])
def test_e003_missing_or_empty_engine(entry: dict[str, Any]) -> None:
    """A backend without a usable ENGINE is E003, naming the entry."""
    with override_settings(EVENT_TRACKING_BACKENDS={"x": entry}):
        messages = checks.check_tracker_settings()
    assert ids(messages) == [checks.E003]
    assert messages[0].msg == checks.ENGINE_MISSING.format(where=f"{B}['x']")


def test_e003_processor_without_engine() -> None:
    """A processor without ENGINE is E003, naming its index."""
    with override_settings(EVENT_TRACKING_PROCESSORS=[{}]):
        messages = checks.check_tracker_settings()
    assert ids(messages) == [checks.E003]
    assert messages[0].msg == checks.ENGINE_MISSING.format(where="EVENT_TRACKING_PROCESSORS[0]")


@pytest.mark.parametrize(
    "engine", ["no_such_module.Backend", "eventtracking.backends.memory.Nope", "Backend"]
)
def test_e004_unknown_engine_path(engine: str) -> None:
    """An ENGINE that cannot be imported is E004, even nested deep in OPTIONS."""
    with override_settings(EVENT_TRACKING_BACKENDS={"x": {"ENGINE": engine}}):
        messages = checks.check_tracker_settings()
    assert ids(messages) == [checks.E004]
    assert messages[0].msg == checks.ENGINE_NOT_FOUND.format(where=f"{B}['x']", engine=engine)

    nested = {
        "route": {
            "ENGINE": ROUTING,
            "OPTIONS": {"backends": {"ok": {"ENGINE": MEMORY}, "bad": {"ENGINE": engine}}},
        }
    }
    with override_settings(EVENT_TRACKING_BACKENDS=nested):
        messages = checks.check_tracker_settings()
    assert ids(messages) == [checks.E004]
    assert messages[0].msg == checks.ENGINE_NOT_FOUND.format(
        where=f"{B}['route']['OPTIONS']['backends']['bad']", engine=engine
    )


@pytest.mark.parametrize(
    ("setting", "value", "where", "engine"),
    [
        (B, {"x": {"ENGINE": f"{__name__}.NoSend"}}, f"{B}['x']", f"{__name__}.NoSend"),
        (B, {"x": {"ENGINE": f"{__name__}.NOT_CALLABLE"}}, f"{B}['x']", f"{__name__}.NOT_CALLABLE"),
        (
            "EVENT_TRACKING_PROCESSORS",
            [{"ENGINE": f"{__name__}.NotCallable"}],
            "EVENT_TRACKING_PROCESSORS[0]",
            f"{__name__}.NotCallable",
        ),
    ],
)
def test_e005_engine_of_the_wrong_kind(setting: str, value: Any, where: str, engine: str) -> None:
    """A backend class without send, a non-callable or a non-callable processor is E005."""
    with override_settings(**{setting: value}):
        messages = checks.check_tracker_settings()
    assert ids(messages) == [checks.E005]
    assert messages[0].msg == checks.ENGINE_WRONG_KIND.format(where=where, engine=engine)


@pytest.mark.parametrize(
    ("engine", "options"),
    [(MEMORY, {"max_event": 3}), (MEMORY, {"max_events": 3, "extra": 1}), (LOGGER, ["name"])],
)
def test_e006_options_the_signature_rejects(engine: str, options: Any) -> None:
    """OPTIONS that are not a dict or do not bind to the constructor are E006."""
    with override_settings(EVENT_TRACKING_BACKENDS={"x": {"ENGINE": engine, "OPTIONS": options}}):
        messages = checks.check_tracker_settings()
    assert ids(messages) == [checks.E006]
    assert messages[0].msg == checks.OPTIONS_REJECTED.format(where=f"{B}['x']", engine=engine)
    with override_settings(
        EVENT_TRACKING_BACKENDS={"x": {"ENGINE": MEMORY, "OPTIONS": {"max_events": 3}}}
    ):
        assert checks.check_tracker_settings() == []


def test_e006_options_the_constructor_rejects_at_start_up() -> None:
    """A constructor that refuses its OPTIONS at start-up is reported as E006."""
    from django.apps import apps

    config = apps.get_app_config("eventtracking_django")
    bad = {"x": {"ENGINE": LOGGER, "OPTIONS": {"max_events": 1}}}
    try:
        with override_settings(EVENT_TRACKING_BACKENDS=bad):
            config.ready()
            messages = checks.check_tracker_settings()
        assert ids(messages) == [checks.E006]
        assert messages[0].msg == checks.OPTIONS_REJECTED.format(where=f"{B}['x']", engine=LOGGER)
        assert "max_events" in messages[0].hint
    finally:
        config.startup_error = None
    assert checks.check_tracker_settings() == []


def test_e007_tracker_not_built_for_another_reason() -> None:
    """A start-up failure the static checks cannot see is E007, with the error as hint."""
    from django.apps import apps

    config = apps.get_app_config("eventtracking_django")
    try:
        with override_settings(EVENT_TRACKING_BACKENDS={"x": "not a backend"}):
            config.ready()
            messages = checks.check_tracker_settings()
        assert ids(messages) == [checks.E007]
        assert messages[0].msg == checks.TRACKER_NOT_BUILT
        assert 'does not have a callable "send" method' in messages[0].hint
    finally:
        config.startup_error = None


SESSION = "django.contrib.sessions.middleware.SessionMiddleware"


def test_e008_event_middleware_before_context_middleware() -> None:
    """The event middleware placed before the context middleware is E008."""
    with override_settings(
        MIDDLEWARE=[checks.EVENT_MIDDLEWARE, SESSION, checks.CONTEXT_MIDDLEWARE]
    ):
        messages = checks.check_middleware()
    assert ids(messages) == [checks.E008]
    assert messages[0].msg == checks.EVENT_MIDDLEWARE_BEFORE_CONTEXT
    with override_settings(
        MIDDLEWARE=[checks.CONTEXT_MIDDLEWARE, SESSION, checks.EVENT_MIDDLEWARE]
    ):
        assert checks.check_middleware() == []


def test_e009_middleware_listed_twice() -> None:
    """A tracking middleware listed twice is E009."""
    context = checks.CONTEXT_MIDDLEWARE
    with override_settings(MIDDLEWARE=[context, SESSION, context]):
        messages = checks.check_middleware()
    assert ids(messages) == [checks.E009]
    assert messages[0].msg == checks.DUPLICATE_MIDDLEWARE.format(middleware=context, count=2)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("EVENT_TRACKING_REQUEST_CONTEXT_NAME", ""),
        ("EVENT_TRACKING_REQUEST_CONTEXT_FIELDS", ["path", "shoe_size"]),
        ("EVENT_TRACKING_REQUEST_CONTEXT_FIELDS", "path"),
        ("EVENT_TRACKING_REQUEST_CONTEXT_HOOK", "no_such_module.hook"),
        ("EVENT_TRACKING_REQUEST_CONTEXT_HOOK", 12),
        ("EVENT_TRACKING_REQUEST_ID_HEADER", None),
        ("EVENT_TRACKING_TRUSTED_PROXIES", ["10.0.0.0/33"]),
        ("EVENT_TRACKING_REQUEST_EVENT_NAME", 5),
        ("EVENT_TRACKING_REQUEST_EVENT_SKIP", ["(unclosed"]),
        ("EVENT_TRACKING_REQUEST_EVENT_SECRET_KEYS", [1]),
        ("EVENT_TRACKING_REQUEST_REDACT_PATHS", ["(unclosed"]),
        ("EVENT_TRACKING_REQUEST_REDACT_PATHS", "/reset/"),
        ("EVENT_TRACKING_SHUTDOWN_TIMEOUT", -1),
    ],
)
def test_e010_invalid_middleware_or_shutdown_setting(setting: str, value: Any) -> None:
    """Each middleware and shutdown setting with a bad value is E010, naming it."""
    with override_settings(**{setting: value}):
        messages = checks.check_middleware_settings()
    assert ids(messages) == [checks.E010]
    assert messages[0].msg == checks.INVALID_SETTING.format(setting=setting)
    assert repr(value) in messages[0].hint


def test_w001_event_middleware_without_context_middleware() -> None:
    """The event middleware alone is a warning: its events have no request context."""
    with override_settings(MIDDLEWARE=[SESSION, checks.EVENT_MIDDLEWARE]):
        messages = checks.check_middleware()
    assert ids(messages) == [checks.W001]
    assert messages[0].msg == checks.EVENT_MIDDLEWARE_WITHOUT_CONTEXT


def test_manage_py_check_fails_on_errors() -> None:
    """`manage.py check` stops with the eventtracking error ids in its report."""
    with (
        override_settings(EVENT_TRACKING_BACKENDS={"x": {"ENGINE": "nope.Nope"}}),
        pytest.raises(SystemCheckError, match=re.escape(checks.E004)),
    ):
        call_command("check", "--tag", checks.TAG, verbosity=0)


# -- AsyncRoutingBackend --------------------------------------------------------------

ASYNC = "eventtracking.backends.async_routing.AsyncRoutingBackend"


def async_backend(backend_name: str | None, **options: Any) -> dict[str, Any]:
    """An AsyncRoutingBackend entry, as edx-event-routing-backends configures one."""
    if backend_name is not None:
        options["backend_name"] = backend_name
    options.setdefault("backends", {"memory": {"ENGINE": MEMORY}})
    return {"ENGINE": ASYNC, "OPTIONS": options}


@pytest.mark.parametrize("backend_name", ["event_transformer", "", None])
def test_an_async_backend_named_by_its_own_key_passes(backend_name: str | None) -> None:
    """backend_name equal to the backend's key, or empty (its key is used), is fine."""
    with override_settings(
        EVENT_TRACKING_BACKENDS={"event_transformer": async_backend(backend_name)}
    ):
        assert checks.check_async_routing() == []
        assert checks.check_tracker_settings() == []


def test_e020_backend_name_that_names_no_top_level_backend() -> None:
    """A typo in backend_name is E030; the hint lists the top-level keys and the fix."""
    setting = {"event_transformer": async_backend("event_transfomer"), "logger": {"ENGINE": LOGGER}}
    with override_settings(EVENT_TRACKING_BACKENDS=setting):
        messages = checks.check_async_routing()
    assert ids(messages) == [checks.E030]
    assert messages[0].msg == checks.ASYNC_BACKEND_NAME_UNKNOWN.format(
        where=f"{B}['event_transformer']", name="event_transfomer"
    )
    assert "'event_transformer', 'logger'" in messages[0].hint
    assert "its own key, 'event_transformer'" in messages[0].hint


def test_e020_nested_async_backend_without_a_name() -> None:
    """A nested AsyncRoutingBackend has no key of its own for workers to find: E030."""
    nested = {"ENGINE": ROUTING, "OPTIONS": {"backends": {"inner": async_backend("")}}}
    with override_settings(EVENT_TRACKING_BACKENDS={"outer": nested}):
        messages = checks.check_async_routing()
    assert ids(messages) == [checks.E030]
    assert "['OPTIONS']['backends']['inner']" in messages[0].msg


def test_w020_backend_name_that_names_another_top_level_backend() -> None:
    """Naming another backend delivers to its nested backends instead: a warning."""
    setting = {"first": async_backend("second"), "second": async_backend("second")}
    with override_settings(EVENT_TRACKING_BACKENDS=setting):
        messages = checks.check_async_routing()
    assert ids(messages) == [checks.W030]
    assert messages[0].msg == checks.ASYNC_BACKEND_NAME_ELSEWHERE.format(
        where=f"{B}['first']", name="second"
    )


def test_e021_async_backend_without_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Celery installed, an AsyncRoutingBackend is E031 naming the extra."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "celery" else real(name, *a)
    )
    with override_settings(EVENT_TRACKING_BACKENDS={"async": async_backend("async")}):
        messages = checks.check_async_routing()
    assert ids(messages) == [checks.E031]
    assert "pip install 'event-tracking[celery]'" in messages[0].hint
    with override_settings(EVENT_TRACKING_BACKENDS={"memory": {"ENGINE": MEMORY}}):
        assert checks.check_async_routing() == []


@pytest.mark.parametrize(
    ("accept", "formats"),
    [
        (["json", "pickle"], "pickle"),
        (["application/x-yaml", "json"], "YAML"),
        (["pickle", "yaml"], "pickle and YAML"),
    ],
)
def test_w031_a_celery_app_that_accepts_pickle_or_yaml(accept: list[str], formats: str) -> None:
    """A worker app that accepts pickle or YAML runs code a broker writer sends: W031
    names the formats and the fix; Celery's default (JSON only) passes."""
    from celery import Celery

    unsafe = Celery("w031-unsafe", set_as_current=False)
    unsafe.conf.accept_content = accept
    safe = Celery("w031-safe", set_as_current=False)
    setting = {"async": async_backend("async", app=unsafe), "safe": async_backend("safe", app=safe)}
    with override_settings(EVENT_TRACKING_BACKENDS=setting):
        messages = checks.check_async_routing()
    assert ids(messages) == [checks.W031]
    assert messages[0].msg == checks.ASYNC_UNSAFE_CONTENT.format(
        where=f"{B}['async']", formats=formats
    )
    assert "accept_content = ['json']" in messages[0].hint


def test_async_checks_run_with_manage_py_check() -> None:
    """The AsyncRoutingBackend checks are registered with the eventtracking tag."""
    with (
        override_settings(EVENT_TRACKING_BACKENDS={"a": async_backend("b")}),
        pytest.raises(SystemCheckError, match=re.escape(checks.E030)),
    ):
        call_command("check", "--tag", checks.TAG, verbosity=0)


def run_new() -> list[Any]:
    """The messages of the checks that look at what the settings built."""
    return [
        *checks.check_logger_backends(),
        *checks.check_enabled_setting(),
        *checks.check_app_installed(),
    ]


class NeedsAMissingPackage:
    """A backend whose constructor finds its optional dependency missing."""

    def __init__(self) -> None:
        raise ImportError("NeedsAMissingPackage needs foo: pip install 'thing[foo]'")

    def send(self, event: dict[str, Any]) -> None:
        """Never reached."""


def test_the_test_settings_pass_the_new_checks_too() -> None:
    """With the test settings built, W002-W004 find nothing."""
    from eventtracking.django.django_tracker import override_default_tracker

    override_default_tracker()
    assert run_new() == []


def test_e011_a_missing_optional_package_is_named_with_the_install_command() -> None:
    """A constructor that cannot import its dependency is E011, not E006 about OPTIONS,
    and the hint carries the backend's own install command."""
    from django.apps import apps

    config = apps.get_app_config("eventtracking_django")
    engine = f"{__name__}.NeedsAMissingPackage"
    try:
        with override_settings(EVENT_TRACKING_BACKENDS={"x": {"ENGINE": engine}}):
            config.ready()
            messages = checks.check_tracker_settings()
        assert ids(messages) == [checks.E011]
        assert messages[0].msg == checks.DEPENDENCY_MISSING.format(where=f"{B}['x']", engine=engine)
        assert "pip install 'thing[foo]'" in messages[0].hint
    finally:
        config.startup_error = None


def silent_logger_backends(logger_name: str) -> dict[str, Any]:
    """A LoggerBackend on ``logger_name``, nested in a router as sites often do."""
    return {
        "tracking_logs": {
            "ENGINE": ROUTING,
            "OPTIONS": {
                "backends": {"logger": {"ENGINE": LOGGER, "OPTIONS": {"name": logger_name}}}
            },
        }
    }


def test_w002_logger_backend_whose_logger_is_not_enabled() -> None:
    """A LoggerBackend whose logger is not enabled for INFO (Python's default: the root
    logger is at WARNING) is W002, naming the backend and the logger, with the LOGGING
    snippet that fixes it; once the logger takes INFO and has a handler, it is gone."""
    import logging

    from eventtracking.django.django_tracker import override_default_tracker

    name = "tracking.w002.not_enabled"
    logger = logging.getLogger(name)
    with override_settings(EVENT_TRACKING_BACKENDS=silent_logger_backends(name)):
        override_default_tracker()
        messages = checks.check_logger_backends()
    assert ids(messages) == [checks.W002]
    assert messages[0].msg == (
        f"{B}['tracking_logs.logger']: LoggerBackend writes nothing: logger {name!r} is not "
        "enabled for INFO: its effective level is WARNING."
    )
    assert f"'loggers': {{\n        {name!r}: {{'handlers': ['tracking'], 'level': 'INFO'" in (
        messages[0].hint
    )
    handler = logging.NullHandler()
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        assert checks.check_logger_backends() == []
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_w002_logger_backend_whose_logger_has_no_handler() -> None:
    """A logger enabled for INFO but with no handler on the way up is W002 too: Python
    discards INFO records that reach no handler."""
    import logging

    from eventtracking.django.django_tracker import override_default_tracker

    name = "tracking.w002.no_handler"
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with override_settings(EVENT_TRACKING_BACKENDS=silent_logger_backends(name)):
            override_default_tracker()
            messages = checks.check_logger_backends()
        assert ids(messages) == [checks.W002]
        assert f"logger {name!r} has no handler for INFO records" in messages[0].msg
    finally:
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def test_w003_backends_without_the_enabled_setting() -> None:
    """Backends configured with EVENT_TRACKING_ENABLED missing is W003; set to False on
    purpose, it is not."""
    from django.conf import settings

    with override_settings():
        del settings.EVENT_TRACKING_ENABLED
        messages = checks.check_enabled_setting()
    assert ids(messages) == [checks.W003]
    assert messages[0].msg == checks.ENABLED_MISSING
    with override_settings(EVENT_TRACKING_ENABLED=False):
        assert checks.check_enabled_setting() == []


def hide_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Django report 'eventtracking.django' as not installed, for this test."""
    from django.apps import apps

    installed = apps.is_installed

    def is_installed(name: str) -> bool:
        return name != "eventtracking.django" and installed(name)

    monkeypatch.setattr(apps, "is_installed", is_installed)


def test_w004_middleware_without_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tracking middleware in MIDDLEWARE while the app is not installed is W004."""
    hide_the_app(monkeypatch)
    messages = checks.check_app_installed()
    assert ids(messages) == [checks.W004, checks.W004]
    assert messages[0].msg == checks.APP_NOT_INSTALLED.format(
        middleware="TrackRequestContextMiddleware"
    )
    assert "INSTALLED_APPS" in messages[0].hint
    with override_settings(MIDDLEWARE=[SESSION]):
        assert checks.check_app_installed() == []


def test_w004_is_registered_by_the_middleware_module() -> None:
    """The app cannot register W004, so the middleware module does: `manage.py check`
    runs it whenever the middleware was imported."""
    from django.core.checks import registry

    import eventtracking.django.middleware  # noqa: F401

    assert checks.check_app_installed in registry.registry.get_checks()


def test_building_the_middleware_without_the_app_warns_once_and_prints_nothing(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Django building the middleware without the app logs W004 once per process, and
    the events it emits are dropped and counted, not printed by the fallback tracker."""
    import logging

    from eventtracking import tracker
    from eventtracking.django import middleware

    hide_the_app(monkeypatch)
    monkeypatch.setattr(middleware, "_app_missing_warned", False)
    tracker.set_fallback(tracker.console_tracker)
    with caplog.at_level(logging.WARNING, logger="eventtracking.django"):
        middleware.TrackRequestContextMiddleware(lambda request: None)
        middleware.TrackRequestEventMiddleware(lambda request: None)
    warnings = [r for r in caplog.records if checks.W004 in r.getMessage()]
    assert len(warnings) == 1
    before = tracker.stats()["dropped"].get("no_tracker", 0)
    tracker.emit("django.request")
    assert tracker.stats()["dropped"]["no_tracker"] == before + 1
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("engine", "expected", "install"),
    [
        ("eventtracking.backends.event_bus.EventBusRoutingBackend", checks.E020, "eventbus"),
        ("eventtracking.backends.async_routing.AsyncRoutingBackend", checks.E031, "celery"),
        ("eventtracking.backends.mongodb.MongoBackend", checks.E011, "mongo"),
    ],
)
def test_a_missing_extra_is_reported_once(
    tmp_path: Any, engine: str, expected: str, install: str
) -> None:
    """A backend whose extra is missing gets one error naming the extra to install: the
    event bus and the Celery backend their own E020 and E031 (not E011 too), MongoBackend
    the generic E011."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "extras_settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "tests-only"
            INSTALLED_APPS = ["eventtracking.django"]
            EVENT_TRACKING_ENABLED = True
            EVENT_TRACKING_BACKENDS = {{"b": {{"ENGINE": {engine!r}}}}}
            """
        )
    )
    script = textwrap.dedent(
        """
        import sys
        for name in ("openedx_events", "celery", "kombu", "pymongo", "bson"):
            sys.modules[name] = None
        from django.core.management import execute_from_command_line
        execute_from_command_line(["manage.py", "check"])
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{tmp_path}:{django_support.REPO_DIR}",
        "DJANGO_SETTINGS_MODULE": "extras_settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    reported = [line for line in result.stderr.splitlines() if line.startswith("?: (")]
    assert [line.split(")")[0] for line in reported] == [f"?: ({expected}"], result.stderr
    assert "EVENT_TRACKING_BACKENDS['b']" in reported[0]
    assert f"pip install 'event-tracking[{install}]'" in result.stderr


def test_every_check_id_is_in_the_docs_table_and_every_check_is_registered() -> None:
    """docs/django.rst lists each id the checks module exports, and each check function
    it exports is registered with Django under the app's tag."""
    from pathlib import Path

    from django.core.checks import registry

    table = (Path(__file__).parent.parent / "docs" / "django.rst").read_text()
    ids = [getattr(checks, name) for name in checks.__all__ if re.fullmatch(r"[EW]\d{3}", name)]
    assert len(ids) == 23
    assert [check_id for check_id in ids if f"``{check_id}``  " not in table] == []
    registered = registry.registry.get_checks()
    functions = [getattr(checks, name) for name in checks.__all__ if name.startswith("check_")]
    functions.remove(checks.check_id_of)
    assert [f.__name__ for f in functions if f not in registered] == []
    assert all(checks.TAG in f.tags for f in functions)
