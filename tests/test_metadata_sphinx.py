"""Tests for eventtracking.metadata.sphinx: the catalogue directive in a real build."""

from __future__ import annotations

import contextlib
import io
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sphinx.cmd.build import build_main

from eventtracking.metadata import Registry, load

ROOT = Path(__file__).resolve().parent.parent


class Text(HTMLParser):
    """The visible text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _project(tmp_path: Path, directive: str) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / "conf.py").write_text(
        'project = "catalogue test"\nextensions = ["eventtracking.metadata.sphinx"]\n'
    )
    (source / "index.rst").write_text(f"Events\n======\n\nSection\n-------\n\n{directive}\n")
    (source / "events.yaml").write_text((ROOT / "docs" / "readme_events.yaml").read_text())
    return source


def _build(source: Path, out: Path) -> tuple[int, str]:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        status = build_main(["-W", "-q", "-b", "html", str(source), str(out)])
    return status, errors.getvalue()


def test_directive_renders_every_type_and_field_with_warnings_as_errors(tmp_path: Path) -> None:
    """A -W build succeeds and the page shows every event, context and field path."""
    source = _project(tmp_path, ".. eventtracking-catalog::\n   :source: events.yaml\n")
    status, errors = _build(source, tmp_path / "out")
    assert status == 0, errors
    page = Text()
    page.feed((tmp_path / "out" / "index.html").read_text())
    # Sphinx typesets apostrophes as typographic ones.
    text = " ".join(page.parts).replace("\u2019", "'")
    registry = Registry()
    load(source / "events.yaml", registry=registry)
    for definition in registry.all_versions():
        assert definition.name in text
        assert definition.id in text
        for spec in definition.fields:
            assert spec.path in text
            if spec.description:
                assert spec.description in text
    assert "2 event types, 1 context type." in text


@pytest.mark.parametrize(
    ("directive", "fragment"),
    [
        (".. eventtracking-catalog::\n", "needs :source: files or :import: modules"),
        (".. eventtracking-catalog::\n   :source: missing.yaml\n", "Cannot read"),
    ],
)
def test_directive_errors_fail_the_build(tmp_path: Path, directive: str, fragment: str) -> None:
    """A directive without sources, or with a missing file, is a build error."""
    source = _project(tmp_path, directive)
    status, errors = _build(source, tmp_path / "out")
    assert status != 0
    assert fragment in errors


HOSTILE_TYPES = """\
event_types:
  hostile.event:
    description: |
      .. include:: conf.py

      .. raw:: html

         <script>alert('description')</script>
    owner: ".. raw:: html <b>owner</b>"
    fields:
      note:
        type: string
        description: "`x <javascript:alert(1)>`_ |sub| <img src=x onerror=alert(2)>"
"""


def test_directive_shows_hostile_text_and_never_runs_it(tmp_path: Path) -> None:
    """Directives and markup in a definition's text are shown on the page, not executed."""
    source = _project(tmp_path, ".. eventtracking-catalog::\n   :source: hostile.yaml\n")
    (source / "hostile.yaml").write_text(HOSTILE_TYPES)
    status, errors = _build(source, tmp_path / "out")
    assert status == 0, errors
    html = (tmp_path / "out" / "index.html").read_text()
    assert "<script>alert(" not in html
    assert "<b>owner</b>" not in html
    assert "<img src=x" not in html
    assert 'href="javascript:' not in html
    page = Text()
    page.feed(html)
    text = " ".join(page.parts).replace("\u2019", "'")
    assert ".. include:: conf.py" in text
    assert "extensions =" not in text  # conf.py was not included
    assert "<script>alert('description')</script>" in text
