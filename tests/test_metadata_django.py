"""Event documentation in Django: EVENT_TRACKING_VALIDATION and ``eventtracking_catalog``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import django_support
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from eventtracking import metadata
from eventtracking.exceptions import ValidationError
from eventtracking.metadata import REFERENCE_KEY

pytestmark = pytest.mark.usefixtures("django_env")

# pytest finds fixtures by module attribute: this one comes from django_support.
django_env = django_support.django_env

TYPES = {
    "event_types": {
        "course.enroll": {
            "description": "A learner enrolled in a course.",
            "owner": "enrollment-team",
            "fields": {"course_id": "string", "mode": {"type": "string", "required": False}},
        }
    },
    "context_types": {
        "django.context": {
            "description": "Added to every event of a request.",
            "fields": {"user_id": {"type": ["integer", "null"], "description": "The user."}},
        }
    },
}


@pytest.fixture(autouse=True)
def _clean_default_registry() -> Iterator[None]:
    """The settings load into the process-wide registry: start and end empty."""
    metadata.get_registry().clear()
    yield
    metadata.get_registry().clear()


def _build_tracker() -> Any:
    from eventtracking.django.django_tracker import override_default_tracker

    built = override_default_tracker()
    assert built is not None
    return built


def test_validation_setting_makes_the_django_tracker_strict() -> None:
    """EVENT_TRACKING_VALIDATION with EVENT_TYPES: documented events pass, others raise."""
    with override_settings(EVENT_TRACKING_VALIDATION={"MODE": "strict", "EVENT_TYPES": TYPES}):
        built = _build_tracker()
    built.emit("course.enroll", {"course_id": "intro-101"})
    with pytest.raises(ValidationError, match=r"'course\.undocumented' is not registered"):
        built.emit("course.undocumented", {})
    stored = built.get_backend("memory")
    (event,) = stored.events
    assert event["context"][REFERENCE_KEY] == metadata.get_registry().get("course.enroll").id
    assert [record["name"] for record in stored.metadata] == ["django.context", "course.enroll"]


def test_without_the_setting_the_django_tracker_has_no_validator() -> None:
    """No EVENT_TRACKING_VALIDATION: events keep four keys and nothing is checked."""
    built = _build_tracker()
    assert built.validator is None
    built.emit("anything", {"x": 1})
    assert sorted(built.get_backend("memory").events[0]) == ["context", "data", "name", "timestamp"]


def test_a_bad_validation_setting_fails_tracker_construction() -> None:
    """A wrong mode raises ValueError naming the setting, as other settings errors do."""
    from eventtracking.django.django_tracker import DjangoTracker

    with (
        override_settings(EVENT_TRACKING_VALIDATION="loud"),
        pytest.raises(ValueError, match="EVENT_TRACKING_VALIDATION is 'loud'"),
    ):
        DjangoTracker()


class _Cards(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "article" and found.get("data-name"):
            self.names.append(str(found["data-name"]))


def test_catalog_command_writes_three_formats_from_settings_and_files(tmp_path: Path) -> None:
    """The command documents settings' EVENT_TYPES plus --source files, in every format."""
    extra = tmp_path / "more.json"
    extra.write_text(json.dumps({"event_types": {"video.play": {"fields": {"id": "string"}}}}))
    out = io.StringIO()
    with override_settings(EVENT_TRACKING_VALIDATION={"MODE": "warn", "EVENT_TYPES": TYPES}):
        call_command(
            "eventtracking_catalog", "--source", str(extra), "-o", str(tmp_path / "cat"), stdout=out
        )
    text = out.getvalue()
    assert "2 event type(s) and 1 context type(s)" in text
    files = sorted(p.name for p in (tmp_path / "cat").iterdir())
    assert files == ["catalog.html", "catalog.json", "catalog.md"]
    catalog = json.loads((tmp_path / "cat" / "catalog.json").read_text())
    assert [r["name"] for r in catalog["event_types"]] == ["course.enroll", "video.play"]
    cards = _Cards()
    cards.feed((tmp_path / "cat" / "catalog.html").read_text())
    assert cards.names == ["course.enroll", "video.play", "django.context"]
    assert "`course.enroll`" in (tmp_path / "cat" / "catalog.md").read_text()


def test_catalog_command_reports_a_bad_source_as_a_command_error(tmp_path: Path) -> None:
    """A broken file becomes a CommandError that names it."""
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(CommandError, match=r"broken\.json is not valid JSON"):
        call_command("eventtracking_catalog", "--source", str(broken), "-o", str(tmp_path))


def test_catalog_command_refuses_an_empty_registry_and_writes_nothing(tmp_path: Path) -> None:
    """With nothing documented, the command fails saying so, before writing any file."""
    target = tmp_path / "cat"
    with pytest.raises(CommandError, match="registry is empty, so no catalogue was written"):
        call_command("eventtracking_catalog", "-o", str(target), stdout=io.StringIO())
    assert not target.exists()
