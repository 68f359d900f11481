"""TrackRequestContextMiddleware and TrackRequestEventMiddleware, through Django's clients."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections import OrderedDict
from typing import Any

import django_support
import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext

from eventtracking import tracker
from eventtracking.django.middleware import (
    TrackRequestContextMiddleware,
    TrackRequestEventMiddleware,
)

pytestmark = pytest.mark.usefixtures("django_env")

# pytest finds fixtures by module attribute: these come from django_support.
django_env = django_support.django_env
memory = django_support.memory
user = django_support.user

CONTEXT_MW = "eventtracking.django.middleware.TrackRequestContextMiddleware"
EVENT_MW = "eventtracking.django.middleware.TrackRequestEventMiddleware"
SESSION_MW = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH_MW = "django.contrib.auth.middleware.AuthenticationMiddleware"
ALL_FIELDS = {
    "user_id",
    "username",
    "session",
    "ip",
    "agent",
    "host",
    "path",
    "method",
    "referer",
    "accept_language",
    "request_id",
}


def named(memory: Any, name: str) -> list[dict[str, Any]]:
    """The stored events called ``name``."""
    return [event for event in memory.snapshot() if event["name"] == name]


def only(memory: Any, name: str) -> dict[str, Any]:
    """The one stored event called ``name``."""
    found = named(memory, name)
    assert len(found) == 1, [event["name"] for event in memory.snapshot()]
    return found[0]


def stack_depth() -> int:
    """How many contexts are entered on this thread for the default tracker."""
    return len(tracker.get_tracker().context_locator.get_stack())


# -- the request context ---------------------------------------------------------------


def test_anonymous_request_context_has_every_field(memory: Any) -> None:
    """An anonymous request's events carry all eleven fields, read from the request."""
    response = Client().get(
        "/emit/?rid=r1",
        HTTP_USER_AGENT="probe/1.0",
        HTTP_REFERER="http://example.test/from",
        HTTP_ACCEPT_LANGUAGE="fr-CH, fr;q=0.9",
        HTTP_X_REQUEST_ID="req-123",
    )
    assert response.status_code == 200
    event = only(memory, "test.emit")
    context = event["context"]
    assert set(context) >= ALL_FIELDS
    assert context["user_id"] is None
    assert context["username"] == ""
    assert context["session"] == ""
    assert context["ip"] == "127.0.0.1"
    assert context["agent"] == "probe/1.0"
    assert context["host"] == "testserver"
    assert context["path"] == "/emit/"
    assert context["method"] == "GET"
    assert context["referer"] == "http://example.test/from"
    assert context["accept_language"] == "fr-CH, fr;q=0.9"
    assert context["request_id"] == "req-123"
    # The view's nested context is merged in, and the request context is left after.
    assert context["view"] == "emit"
    assert context["rid_seen"] == "r1"
    assert stack_depth() == 0


def test_request_id_is_generated_when_missing_or_unusable(memory: Any) -> None:
    """Without a usable X-Request-ID each request gets its own new random id."""
    client = Client()
    client.get("/emit/?rid=a")
    client.get("/emit/?rid=b")
    client.get("/emit/?rid=c", HTTP_X_REQUEST_ID="has spaces\nand a newline")
    client.get("/emit/?rid=d", HTTP_X_REQUEST_ID="x" * 201)
    ids = [event["context"]["request_id"] for event in named(memory, "test.emit")]
    assert len(ids) == 4
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)
    assert len(set(ids)) == 4


def test_request_id_header_name_is_configurable(memory: Any) -> None:
    """EVENT_TRACKING_REQUEST_ID_HEADER names the header the id is read from."""
    with override_settings(EVENT_TRACKING_REQUEST_ID_HEADER="X-Correlation-ID"):
        Client().get("/emit/", HTTP_X_CORRELATION_ID="corr-9", HTTP_X_REQUEST_ID="ignored")
    assert only(memory, "test.emit")["context"]["request_id"] == "corr-9"


def test_logged_in_user_is_found_with_auth_middleware_after_ours(memory: Any, user: Any) -> None:
    """user_id and username come from request.user even though auth runs after us."""
    from django.conf import settings

    assert settings.MIDDLEWARE.index(CONTEXT_MW) < settings.MIDDLEWARE.index(AUTH_MW)
    client = Client()
    client.force_login(user)
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    client.get("/emit/?rid=u")
    context = only(memory, "test.emit")["context"]
    assert context["user_id"] == user.pk
    assert context["username"] == user.username
    # The session is recorded as a keyed hash, never as the key itself.
    assert re.fullmatch(r"[0-9a-f]{32}", context["session"])
    assert session_key not in json.dumps([e["context"] for e in memory.snapshot()])


def test_user_and_session_cost_nothing_until_an_event_is_emitted(memory: Any, user: Any) -> None:
    """A request that emits nothing runs no query for the user; an anonymous one none."""
    client = Client()
    client.force_login(user)
    with override_settings(MIDDLEWARE=[CONTEXT_MW, SESSION_MW, AUTH_MW]):
        with CaptureQueriesContext(connection) as silent:
            assert client.get("/ping/").status_code == 200
        with CaptureQueriesContext(connection) as emitting:
            assert client.get("/emit/").status_code == 200
        with CaptureQueriesContext(connection) as anonymous:
            assert Client().get("/emit/").status_code == 200
    assert len(silent.captured_queries) == 0
    # Emitting loaded the session and the user.
    assert len(emitting.captured_queries) >= 1
    assert len(anonymous.captured_queries) == 0
    assert only_user_ids(memory) == [user.pk, None]


def only_user_ids(memory: Any) -> list[Any]:
    """user_id of each test.emit event, in order."""
    return [event["context"]["user_id"] for event in named(memory, "test.emit")]


def test_user_who_logs_in_during_the_request_is_seen_by_later_contexts(
    memory: Any, user: Any
) -> None:
    """The user is read when events are emitted, so a login mid-request shows."""
    response = Client().get(f"/login-then-emit/?username={user.username}")
    assert response.status_code == 200
    assert only(memory, "test.after_login")["context"]["user_id"] == user.pk


def test_context_is_left_when_the_view_raises(memory: Any) -> None:
    """An exception in the view still leaves the request context."""
    client = Client(raise_request_exception=False)
    response = client.get("/boom/?rid=b1", HTTP_X_REQUEST_ID="boom-1")
    assert response.status_code == 500
    assert only(memory, "test.boom")["context"]["request_id"] == "boom-1"
    assert stack_depth() == 0
    request_event = only(memory, "django.request")
    assert request_event["data"]["status"] == 500
    assert request_event["context"]["request_id"] == "boom-1"


def test_contexts_a_view_forgets_to_leave_are_discarded(
    memory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A context the view entered and never left does not outlive the request."""
    client = Client()
    with caplog.at_level(logging.WARNING, logger="eventtracking.django.middleware"):
        client.get("/leak/?rid=l1")
    assert stack_depth() == 0
    client.get("/emit/?rid=after")
    assert only(memory, "test.leak")["context"]["leaked_from"] == "l1"
    assert "leaked_from" not in only(memory, "test.emit")["context"]
    assert any("leaky" in record.getMessage() for record in caplog.records)


def hook(request: Any) -> dict[str, Any]:
    """A context hook: adds the tenant from a header."""
    return {"tenant": request.headers.get("X-Tenant", "none")}


def broken_hook(request: Any) -> dict[str, Any]:
    """A context hook that always fails."""
    raise RuntimeError("hook is broken")


def test_fields_can_be_dropped_and_added_by_a_hook(memory: Any) -> None:
    """EVENT_TRACKING_REQUEST_CONTEXT_FIELDS keeps only its fields; the hook adds more."""
    with override_settings(
        EVENT_TRACKING_REQUEST_CONTEXT_FIELDS=["method", "path"],
        EVENT_TRACKING_REQUEST_CONTEXT_HOOK=f"{__name__}.hook",
    ):
        Client().get("/emit/", HTTP_X_TENANT="acme", HTTP_USER_AGENT="private")
    context = only(memory, "test.emit")["context"]
    assert {key: context[key] for key in ("method", "path", "tenant")} == {
        "method": "GET",
        "path": "/emit/",
        "tenant": "acme",
    }
    assert not (ALL_FIELDS - {"method", "path"}) & set(context)


def test_context_name_is_configurable(memory: Any) -> None:
    """EVENT_TRACKING_REQUEST_CONTEXT_NAME is the name the context is entered under."""
    seen: list[list[str]] = []

    def view(request: Any) -> HttpResponse:
        seen.append(list(tracker.get_tracker().located_context))
        return HttpResponse("ok")

    with override_settings(EVENT_TRACKING_REQUEST_CONTEXT_NAME="web"):
        middleware = TrackRequestContextMiddleware(view)
    from django.test import RequestFactory

    middleware(RequestFactory().get("/x/"))
    assert seen == [["web"]]


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "expected"),
    [
        ([], "10.0.0.1", "203.0.113.9", "10.0.0.1"),
        (["10.0.0.0/8"], "10.0.0.1", "203.0.113.9", "203.0.113.9"),
        (["10.0.0.0/8"], "10.0.0.1", "198.51.100.7, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
        (["10.0.0.0/8"], "192.0.2.1", "203.0.113.9", "192.0.2.1"),
        (["10.0.0.0/8"], "10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),
        (["10.0.0.0/8"], "10.0.0.1", "", "10.0.0.1"),
        (["10.0.0.0/8"], "10.0.0.1", "garbage, 10.0.0.2", "10.0.0.2"),
        (["10.0.0.5", "2001:db8::/32"], "2001:db8::1", "2001:db8::2, 198.51.100.1", "198.51.100.1"),
    ],
)
def test_ip_honours_only_trusted_proxies(
    memory: Any, proxies: list[str], remote: str, forwarded: str, expected: str
) -> None:
    """X-Forwarded-For counts only from trusted proxies, read from the right."""
    with override_settings(EVENT_TRACKING_TRUSTED_PROXIES=proxies):
        Client().get("/emit/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert only(memory, "test.emit")["context"]["ip"] == expected


def test_failure_in_middleware_is_logged_and_request_served_without_debug(
    memory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With DEBUG false a broken hook is logged; the request succeeds without context."""
    with (
        override_settings(DEBUG=False, EVENT_TRACKING_REQUEST_CONTEXT_HOOK=broken_hook),
        caplog.at_level(logging.ERROR, logger="eventtracking.django.middleware"),
    ):
        response = Client().get("/emit/?rid=x")
    assert response.status_code == 200
    assert "request_id" not in only(memory, "test.emit")["context"]
    assert any(
        record.exc_info and "hook is broken" in str(record.exc_info[1]) for record in caplog.records
    )


def test_failure_in_middleware_is_raised_with_debug(memory: Any) -> None:
    """With DEBUG true the same failure reaches the developer."""
    with override_settings(DEBUG=True, EVENT_TRACKING_REQUEST_CONTEXT_HOOK=broken_hook):
        with pytest.raises(RuntimeError, match="hook is broken"):
            Client().get("/emit/")
        response = Client(raise_request_exception=False).get("/emit/")
    assert response.status_code == 500
    assert named(memory, "test.emit") == []


def test_bad_setting_fails_when_the_middleware_is_built() -> None:
    """A bad middleware setting raises ImproperlyConfigured naming it and the choices."""
    with (
        override_settings(EVENT_TRACKING_REQUEST_CONTEXT_FIELDS=["path", "shoe_size"]),
        pytest.raises(ImproperlyConfigured, match="shoe_size") as caught,
    ):
        TrackRequestContextMiddleware(lambda request: HttpResponse())
    assert "accept_language" in str(caught.value)


def test_without_a_tracker_the_middleware_stays_out_of_the_way() -> None:
    """With no tracker registered requests are served as usual."""
    assert tracker.TRACKERS == {}
    with override_settings(MIDDLEWARE=[CONTEXT_MW, SESSION_MW, AUTH_MW, EVENT_MW]):
        response = Client().get("/missing/")
    assert response.status_code == 404


class LegacyLocator:
    """A 4.x-style locator: only get(), returning a dict the tracker edits in place."""

    def __init__(self) -> None:
        self.local = threading.local()

    def get(self) -> OrderedDict[str, Any]:
        if not hasattr(self.local, "contexts"):
            self.local.contexts = OrderedDict()
        return self.local.contexts  # type: ignore[no-any-return]


def test_trackers_with_a_4x_style_locator_get_the_context_too() -> None:
    """A custom tracker whose locator only has get() still gets the request context."""
    from eventtracking.backends.memory import InMemoryBackend

    locator = LegacyLocator()
    store = InMemoryBackend()
    tracker.register_tracker(tracker.Tracker({"memory": store}, locator))
    with override_settings(MIDDLEWARE=[CONTEXT_MW, SESSION_MW, AUTH_MW]):
        Client().get("/emit/?rid=legacy", HTTP_X_REQUEST_ID="legacy-1")
    (event,) = store.snapshot()
    assert event["context"]["request_id"] == "legacy-1"
    assert event["context"]["rid_seen"] == "legacy"
    assert locator.get() == OrderedDict()


# -- the request event -----------------------------------------------------------------


def test_one_request_event_per_request_with_method_status_duration(memory: Any) -> None:
    """The event middleware emits one event with method, path, status and duration."""
    client = Client()
    client.post("/emit/?rid=p", data={"password": "x"}, HTTP_X_REQUEST_ID="post-1")
    client.get("/missing/", HTTP_X_REQUEST_ID="get-404")
    events = named(memory, "django.request")
    assert [(e["data"]["method"], e["data"]["path"], e["data"]["status"]) for e in events] == [
        ("POST", "/emit/", 200),
        ("GET", "/missing/", 404),
    ]
    assert [e["context"]["request_id"] for e in events] == ["post-1", "get-404"]
    assert all(
        isinstance(e["data"]["duration_ms"], float) and e["data"]["duration_ms"] >= 0
        for e in events
    )


def test_request_event_blanks_secrets_and_keeps_the_rest(memory: Any) -> None:
    """Query values whose keys look secret are blanked; repeated keys become lists."""
    with override_settings(EVENT_TRACKING_REQUEST_EVENT_SECRET_KEYS=["pin"]):
        Client().get(
            "/emit/",
            {
                "q": "shoes",
                "Password": "hunter2",
                "access_token": "abc",
                "card_PIN": "1234",
                "tag": ["a", "b"],
                "api_key": ["k1", "k2"],
            },
        )
    query = only(memory, "django.request")["data"]["query"]
    assert query == {
        "q": "shoes",
        "Password": "",
        "access_token": "",
        "card_PIN": "",
        "tag": ["a", "b"],
        "api_key": ["", ""],
    }


#: Keys real sites use for secrets, each with the value it must not store.
WIDENED_SECRETS = {
    "code": "oauth-code-1",
    "key": "k-2",
    "sig": "sig-3",
    "pass": "pass-4",
    "pwd": "pwd-5",
    "auth": "auth-6",
    "jwt": "eyJhbGciOi.jwt-7",
    "otp": "123456",
    "session": "sess-8",
    "sid": "sid-9",
    "credentials": "cred-10",
    "access_token": "at-11",
    "apiKey": "camel-12",
    "X-Auth-Token": "hdr-13",
    "reset_code": "rc-14",
    "user.pwd": "dot-15",
}


def test_request_event_blanks_every_widened_secret_key_and_keeps_the_rest(memory: Any) -> None:
    """Each secret-looking key is blanked, as a word of the key (``apiKey``, ``reset_code``)
    or as part of it; ordinary keys that merely contain those letters are kept."""
    ordinary = {
        "q": "shoes",
        "keyword": "boots",
        "author": "ada",
        "design": "flat",
        "side": "left",
        "passage": "3",
        "monkey": "no",
        "zipcode": "90210",
    }
    Client().get("/emit/", {**WIDENED_SECRETS, **ordinary})
    query = only(memory, "django.request")["data"]["query"]
    assert query == {**dict.fromkeys(WIDENED_SECRETS, ""), **ordinary}
    text = json.dumps(query)
    assert not [value for value in WIDENED_SECRETS.values() if value in text]


def test_secrets_inside_json_valued_query_parameters_are_blanked(memory: Any) -> None:
    """A query value holding JSON has its secret-looking keys blanked at any depth."""
    state = {"token": "t-1", "q": "shoes", "inner": {"password": "p-2", "page": 2}}
    items = [{"apiKey": "k-3", "id": 1}]
    Client().get("/emit/", {"state": json.dumps(state), "items": json.dumps(items), "q": "x"})
    query = only(memory, "django.request")["data"]["query"]
    assert query["q"] == "x"
    assert json.loads(query["state"]) == {
        "token": "",
        "q": "shoes",
        "inner": {"password": "", "page": 2},
    }
    assert json.loads(query["items"]) == [{"apiKey": "", "id": 1}]
    for secret in ("t-1", "p-2", "k-3"):
        assert secret not in json.dumps(query)


def test_referer_is_stored_without_its_query_fragment_or_credentials(memory: Any) -> None:
    """The Referer keeps scheme, host and path only: a reset link's token is in its query."""
    Client().get(
        "/emit/",
        HTTP_REFERER="https://ada:pw@learn.example.org/account/reset/?token=s3cr3t&u=1#frag",
    )
    assert only(memory, "test.emit")["context"]["referer"] == (
        "https://learn.example.org/account/reset/"
    )


def test_password_reset_paths_are_redacted_by_default(memory: Any) -> None:
    """Django's password-reset URL keeps its shape, without the token, in the context,
    the request event and the Referer."""
    client = Client()
    client.get(
        "/reset/MQ/c3x4kg-7f0e3b1cdb2a8e0c5c1f4a9d8e7b6a5c/",
        HTTP_REFERER="https://learn.example.org/reset/MQ/c3x4kg-0123456789abcdef0123/",
    )
    event = only(memory, "django.request")
    assert event["data"]["path"] == "/reset/MQ/<redacted>/"
    assert event["context"]["path"] == "/reset/MQ/<redacted>/"
    assert event["context"]["referer"] == "https://learn.example.org/reset/MQ/<redacted>/"
    assert "7f0e3b1c" not in json.dumps(event, default=str)
    client.get("/reset/MQ/set-password/")
    assert named(memory, "django.request")[-1]["data"]["path"] == "/reset/MQ/set-password/"


def test_more_paths_can_be_redacted(memory: Any) -> None:
    """EVENT_TRACKING_REQUEST_REDACT_PATHS adds expressions; a group's text, or the whole
    match without groups, is replaced."""
    with override_settings(
        EVENT_TRACKING_REQUEST_REDACT_PATHS=[r"^/invite/([^/]+)/", r"/[0-9a-f]{32}(?=/)"]
    ):
        client = Client()
        client.get("/invite/zq9x/accept/")
        client.get("/files/0123456789abcdef0123456789abcdef/view/")
        client.get("/reset/MQ/c3x4kg-7f0e3b1cdb2a8e0c/")
    paths = [event["data"]["path"] for event in named(memory, "django.request")]
    assert paths == [
        "/invite/<redacted>/accept/",
        "/files<redacted>/view/",
        "/reset/MQ/<redacted>/",
    ]


def test_a_redaction_that_does_not_compile_is_reported() -> None:
    """A bad expression raises ImproperlyConfigured naming the setting and the expression."""
    with override_settings(EVENT_TRACKING_REQUEST_REDACT_PATHS=["(unclosed"]):
        with pytest.raises(ImproperlyConfigured, match=r"REDACT_PATHS.*'\(unclosed'"):
            TrackRequestContextMiddleware(lambda request: HttpResponse())
        with pytest.raises(ImproperlyConfigured, match="REDACT_PATHS"):
            TrackRequestEventMiddleware(lambda request: HttpResponse())


def test_too_many_query_fields_still_give_a_request_event(memory: Any) -> None:
    """Over DATA_UPLOAD_MAX_NUMBER_FIELDS, the event is emitted with the query left out
    and a flag saying so (Django refuses to parse such a query)."""
    with override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=5):
        response = Client().get("/emit/", {f"f{number}": number for number in range(10)})
    assert response.status_code == 400
    event = only(memory, "django.request")
    assert event["data"]["query"] == {}
    assert event["data"]["query_omitted"] == "too_many_fields"
    assert event["data"]["status"] == 400
    assert event["data"]["path"] == "/emit/"


def test_request_event_name_and_skip_patterns_are_configurable(memory: Any) -> None:
    """EVENT_TRACKING_REQUEST_EVENT_NAME renames the event; SKIP patterns silence paths."""
    with override_settings(
        EVENT_TRACKING_REQUEST_EVENT_NAME="web.hit",
        EVENT_TRACKING_REQUEST_EVENT_SKIP=[r"/emit/$"],
    ):
        client = Client()
        client.get("/emit/")
        client.get("/leak/")
    hits = named(memory, "web.hit")
    assert [event["data"]["path"] for event in hits] == ["/leak/"]
    assert named(memory, "django.request") == []


# -- ASGI ------------------------------------------------------------------------------


def test_mode_is_detected_from_get_response() -> None:
    """Both middleware are coroutine functions exactly when get_response is one."""

    def sync_view(request: Any) -> HttpResponse:
        return HttpResponse()

    async def async_view(request: Any) -> HttpResponse:
        return HttpResponse()

    for cls in (TrackRequestContextMiddleware, TrackRequestEventMiddleware):
        assert cls.sync_capable and cls.async_capable
        assert not iscoroutinefunction(cls(sync_view))
        assert iscoroutinefunction(cls(async_view))


def test_async_view_events_carry_the_request_context(memory: Any) -> None:
    """Under ASGI, events from an async view and from a worker thread have the context."""

    async def go() -> Any:
        return await AsyncClient().get(
            "/aemit/?rid=a1&group=solo&size=1", headers={"X-Request-ID": "async-1"}
        )

    response = async_to_sync(go)()
    assert response.status_code == 200
    names = ["test.aemit.before", "test.aemit.after", "test.aemit.thread", "django.request"]
    for name in names:
        assert only(memory, name)["context"]["request_id"] == "async-1", name
    assert only(memory, "test.aemit.thread")["context"]["rid_seen"] == "a1"


def test_async_view_sees_the_logged_in_user(memory: Any, user: Any) -> None:
    """The user is loaded off the event loop before an async view runs."""
    client = Client()
    client.force_login(user)

    async def go() -> Any:
        async_client = AsyncClient()
        async_client.cookies = client.cookies
        return await async_client.get("/aemit/?rid=u&group=user&size=1")

    assert async_to_sync(go)().status_code == 200
    assert only(memory, "test.aemit.before")["context"]["user_id"] == user.pk
    assert only(memory, "test.aemit.before")["context"]["username"] == user.username


def test_async_view_that_raises_leaves_the_context(memory: Any) -> None:
    """Under ASGI the context is left and a 500 request event is emitted on error."""

    async def go() -> Any:
        client = AsyncClient(raise_request_exception=False)
        return await client.get("/aboom/?rid=x", headers={"X-Request-ID": "aboom-1"})

    assert async_to_sync(go)().status_code == 500
    assert only(memory, "test.aboom")["context"]["request_id"] == "aboom-1"
    assert only(memory, "django.request")["data"]["status"] == 500
    assert stack_depth() == 0


def test_async_failure_in_middleware_follows_debug(memory: Any) -> None:
    """Under ASGI too, a middleware failure is swallowed without DEBUG, raised with it."""

    async def go() -> Any:
        return await AsyncClient(raise_request_exception=False).get("/aemit/?group=dbg&size=1")

    with override_settings(DEBUG=False, EVENT_TRACKING_REQUEST_CONTEXT_HOOK=broken_hook):
        assert async_to_sync(go)().status_code == 200
    with override_settings(DEBUG=True, EVENT_TRACKING_REQUEST_CONTEXT_HOOK=broken_hook):
        assert async_to_sync(go)().status_code == 500


def test_interleaved_async_requests_keep_their_own_context(memory: Any) -> None:
    """Requests interleaving on one event loop never see each other's context."""
    count = 40

    async def go() -> list[Any]:
        client = AsyncClient()
        return await asyncio.gather(
            *(
                client.get(
                    f"/aemit/?rid=i{n}&group=interleave&size={count}",
                    headers={"X-Request-ID": f"i{n}"},
                )
                for n in range(count)
            )
        )

    responses = async_to_sync(go)()
    assert [response.status_code for response in responses] == [200] * count
    events = [e for e in memory.snapshot() if e["name"].startswith("test.aemit")]
    assert len(events) == 3 * count
    for event in events:
        assert event["context"]["request_id"] == event["data"]["rid"]
        assert event["context"]["rid_seen"] == event["data"]["rid"]
