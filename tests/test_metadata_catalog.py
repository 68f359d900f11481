"""Tests for eventtracking.metadata.catalog: Markdown, JSON and HTML catalogues."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from eventtracking import metadata
from eventtracking.metadata import Registry, load
from eventtracking.metadata.catalog import (
    build_catalog,
    changes,
    render_html,
    render_json,
    render_markdown,
    render_rst,
    write_catalog,
)


def _registry() -> Registry:
    registry = Registry()
    registry.register(
        "address.create",
        "An address was saved.",
        fields={"name": "string", "address.postal_code": "string"},
        owner="accounts",
        emitted_from="shop.views:save_address",
    )
    registry.register(
        "address.create",
        "An address was saved, with its country.",
        fields={
            "name": {"type": "string", "description": "Who lives there | pipes & <tags>."},
            "address": {
                "fields": {
                    "postal_code": "string",
                    "country": {"type": "string", "required": False},
                }
            },
        },
        owner="accounts",
        emitted_from="shop.views:save_address",
        example={"name": "Ada", "address": {"postal_code": "90210", "country": "US"}},
    )
    registry.register(
        "navigation.request",
        "A page was opened. <script>alert(1)</script>",
        fields={"url": "string", "items[].sku": "string"},
        emitted_from="web.views",
    )
    registry.register_context("outer", "The outer context.", fields={"user_id": "integer"})
    return registry


class CatalogPage(HTMLParser):
    """Collects, per card, its name, field paths, version rows and example text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.cards: dict[str, dict[str, Any]] = {}
        self.current: dict[str, Any] | None = None
        self.capture: str | None = None
        self.tags: set[str] = set()
        self.external: list[str] = []
        self.search_box = False
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.add(tag)
        for key in ("src", "href"):
            value = found.get(key) or ""
            if value and not value.startswith("#"):
                self.external.append(value)
        if tag == "input" and found.get("type") == "search":
            self.search_box = True
        classes = (found.get("class") or "").split()
        if tag == "article" and "card" in classes:
            self.current = {
                "kind": classes[1],
                "fields": [],
                "versions": 0,
                "example": "",
                "text": "",
            }
            self.cards[str(found["data-name"])] = self.current
        elif self.current is not None and tag == "td" and "field-path" in classes:
            self.capture = "field"
            self.current["fields"].append("")
        elif self.current is not None and tag == "tr" and "version-row" in classes:
            self.current["versions"] += 1
        elif self.current is not None and tag == "code" and "language-json" in classes:
            self.capture = "example"
        elif tag == "script":
            self.capture = "script"
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "code", "script"):
            self.capture = None
        if tag == "article":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current is not None:
            self.current["text"] += data
        if self.capture == "field" and self.current is not None:
            self.current["fields"][-1] += data
        elif self.capture == "example" and self.current is not None:
            self.current["example"] += data
        elif self.capture == "script":
            self.scripts[-1] += data


def test_html_has_one_card_per_type_with_every_field_version_and_example() -> None:
    """A real parser finds every event and context, all fields, versions and examples."""
    registry = _registry()
    page = CatalogPage()
    page.feed(render_html(registry, title="Shop events"))
    page.close()
    assert list(page.cards) == ["address.create", "navigation.request", "outer"]
    for definition in [*registry.event_types(), *registry.context_types()]:
        card = page.cards[definition.name]
        assert card["fields"] == [spec.path for spec in definition.fields]
        assert card["versions"] == len(
            registry.versions(definition.name) or registry.context_versions(definition.name)
        )
        assert definition.id in card["text"]
    example = json.loads(page.cards["address.create"]["example"])
    assert example["data"] == {"name": "Ada", "address": {"postal_code": "90210", "country": "US"}}
    assert example["context"] == {"eventtracking_type": registry.get("address.create").id}
    built = json.loads(page.cards["navigation.request"]["example"])
    assert built["data"] == {"url": "...", "items": [{"sku": "..."}]}
    assert page.cards["outer"]["kind"] == "context-card"
    assert "Who lives there | pipes & <tags>." in page.cards["address.create"]["text"]
    assert "<script>alert(1)</script>" in page.cards["navigation.request"]["text"]


def test_html_is_self_contained_with_a_working_search_box() -> None:
    """No external resources; one inline script filtering cards; text is escaped."""
    html = render_html(_registry())
    page = CatalogPage()
    page.feed(html)
    assert page.external == []
    assert "link" not in page.tags
    assert page.search_box
    (script,) = page.scripts
    assert 'getElementById("search")' in script
    assert "data-search" in script
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_markdown_lists_every_type_field_and_version() -> None:
    """Markdown has a heading per type, a table row per field and per version."""
    registry = _registry()
    text = render_markdown(registry, title="Shop events")
    assert text.startswith("# Shop events\n\n2 event types, 1 context type.\n")
    headings = re.findall(r"^### `(.+)`$", text, flags=re.MULTILINE)
    assert headings == ["address.create", "navigation.request", "outer"]
    for definition in [*registry.event_types(), *registry.context_types()]:
        for spec in definition.fields:
            assert f"| `{spec.path}` |" in text
    assert "| 1 | `" in text
    assert "| 2 (current) | `" in text
    assert "Who lives there \\| pipes &amp; &lt;tags&gt;." in text
    blocks = re.findall(r"```json\n(.*?)\n```", text, flags=re.DOTALL)
    assert [json.loads(block)["name"] for block in blocks[:2]] == [
        "address.create",
        "navigation.request",
    ]


def test_json_holds_every_version_and_loads_back() -> None:
    """The JSON catalogue is every record, and loading it rebuilds the registry."""
    registry = _registry()
    catalog = json.loads(render_json(registry))
    assert catalog["format"] == "eventtracking.catalog/1"
    assert [(r["name"], r["version"]) for r in catalog["event_types"]] == [
        ("address.create", 1),
        ("address.create", 2),
        ("navigation.request", 1),
    ]
    assert [r["name"] for r in catalog["context_types"]] == ["outer"]
    assert catalog["event_types"][1] == registry.get("address.create").record
    copy = Registry()
    load(catalog, registry=copy)
    assert [d.id for d in copy.all_versions()] == [d.id for d in registry.all_versions()]


def test_version_history_says_what_changed() -> None:
    """Each version row summarises the change from the one before."""
    registry = _registry()
    first, second = registry.versions("address.create")
    assert changes(first, second) == [
        "added address.country",
        "changed name",
        "description changed",
        "example changed",
    ]
    assert "added address.country; changed name" in render_markdown(registry)


def test_output_is_deterministic() -> None:
    """The same registry always renders the same text in every format."""
    for render in (render_markdown, render_json, render_html):
        assert render(_registry()) == render(_registry())


def test_write_catalog_writes_the_formats_asked_for(tmp_path: Path) -> None:
    """write_catalog creates the directory and one file per format."""
    written = write_catalog(tmp_path / "out", _registry(), formats=["html", "json"])
    assert {name: path.name for name, path in written.items()} == {
        "html": "catalog.html",
        "json": "catalog.json",
    }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["catalog.html", "catalog.json"]
    with pytest.raises(ValueError, match="Unknown catalogue format 'pdf'; use markdown, json"):
        write_catalog(tmp_path, _registry(), formats=["pdf"])


def test_write_catalog_replaces_files_whole_and_never_follows_a_symlink(tmp_path: Path) -> None:
    """Files are written through a temporary file and a rename; a symlink is refused."""
    written = write_catalog(tmp_path, _registry(), formats=["json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.json"]
    assert json.loads(written["json"].read_text())["event_types"]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "catalog.md").symlink_to(victim)
    with pytest.raises(ValueError, match=r"catalog\.md.*symbolic link"):
        write_catalog(tmp_path, _registry(), formats=["markdown"])
    assert victim.read_text() == "precious"


def test_an_empty_registry_renders_valid_empty_catalogues() -> None:
    """Nothing registered: every format still renders, saying there is nothing."""
    registry = Registry()
    assert build_catalog(registry)["event_types"] == []
    assert "0 event types, 0 context types." in render_markdown(registry)
    page = CatalogPage()
    page.feed(render_html(registry))
    assert page.cards == {}


@pytest.fixture
def default_registry() -> Iterator[Registry]:
    """The process-wide registry the command fills, emptied before and after the test."""
    metadata.get_registry().clear()
    yield metadata.get_registry()
    metadata.get_registry().clear()


@pytest.mark.usefixtures("default_registry")
def test_python_m_eventtracking_catalog(tmp_path: Path) -> None:
    """``python -m eventtracking catalog`` loads sources and writes all three formats."""
    from eventtracking.__main__ import main

    source = tmp_path / "events.json"
    source.write_text(json.dumps(build_catalog(_registry())))
    out = io.StringIO()
    status = main(["catalog", "--source", str(source), "-o", str(tmp_path / "site")], out)
    assert status == 0
    assert "2 event type(s) and 1 context type(s), 4 version(s) in all" in out.getvalue()
    page = CatalogPage()
    page.feed((tmp_path / "site" / "catalog.html").read_text())
    assert list(page.cards) == ["address.create", "navigation.request", "outer"]
    assert json.loads((tmp_path / "site" / "catalog.json").read_text()) == build_catalog(
        _registry()
    )


@pytest.mark.usefixtures("default_registry")
def test_python_m_eventtracking_catalog_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module that cannot be imported exits 1 with a message on stderr."""
    from eventtracking.__main__ import main

    status = main(
        ["catalog", "--import", "no_such_module_here", "-o", str(tmp_path)], io.StringIO()
    )
    assert status == 1
    assert "catalog: Cannot import 'no_such_module_here'" in capsys.readouterr().err


# -- hostile text ----------------------------------------------------------------------

#: Text that a reStructuredText or Markdown renderer would act on if it were not escaped.
HOSTILE = {
    "include": ".. include:: /etc/passwd",
    "raw": ".. raw:: html\n\n   <script>alert('raw')</script>",
    "link": "`click <javascript:alert(1)>`_ and |substitution| and [md](javascript:alert(2))",
    "html": "<img src=x onerror=alert(3)> & <script>alert(4)</script>",
    "list": "* not a list\n1. not a list either\n# not a heading",
}


def _hostile_registry() -> Registry:
    registry = Registry()
    registry.register(
        "hostile.event",
        HOSTILE["include"],
        fields={
            "a": {"type": "string", "description": HOSTILE["raw"]},
            "b": {"type": "string", "description": HOSTILE["link"]},
            "odd``name": {"type": "string", "description": HOSTILE["html"]},
            " spaced ": "string",
        },
        owner=HOSTILE["raw"],
        emitted_from=["mod\n\n.. raw:: html\n\n   <b>x</b>:fn"],
        example={"text": "```\n<script>alert(5)</script>"},
    )
    registry.register("hostile.list", HOSTILE["list"])
    registry.register("x`` <img src=y onerror=alert(6)> ``y", HOSTILE["html"])
    return registry


def test_rst_output_shows_hostile_text_and_never_runs_it() -> None:
    """Directives, links, substitutions and lists in any text are shown, never acted on."""
    from docutils.core import publish_doctree, publish_string
    from docutils.nodes import raw, reference, substitution_reference, system_message

    text = render_rst(_hostile_registry())
    settings = {"report_level": 5, "halt_level": 5}
    tree = publish_doctree(text, settings_overrides=settings)
    assert not list(tree.findall(raw))
    assert not list(tree.findall(substitution_reference))
    assert not [node for node in tree.findall(reference) if "javascript" in str(node)]
    assert not list(tree.findall(system_message))
    shown = tree.astext()
    assert ".. include:: /etc/passwd" in shown
    assert "root:" not in shown
    assert ".. raw:: html" in shown
    html = publish_string(text, writer="html", settings_overrides=settings).decode()
    assert "<script>" not in html and "<img" not in html and "<b>x</b>" not in html


def test_markdown_escapes_html_and_markup_in_every_text() -> None:
    """Descriptions, owners, field texts and names reach Markdown as inert text."""
    text = render_markdown(_hostile_registry())
    # What sits in code spans and fenced blocks is shown as code: remove it, and check
    # that the rest holds no live markup.
    outside_code = re.sub(r"(`{3,})json\n.*?\n\1\n", "", text, flags=re.DOTALL)
    outside_code = re.sub(r"(`+).+?\1", "", outside_code)
    assert "<script>" not in outside_code
    assert "<img" not in outside_code
    assert "<b>" not in outside_code
    assert "&lt;script&gt;" in outside_code
    assert not re.search(r"(?<!\\)\]\(javascript:", outside_code)
    assert "\n* not a list" not in outside_code
    assert "\n# not a heading" not in outside_code
    # A name holding backticks sits in a code span that its backticks cannot close.
    assert "### ``` x`` <img src=y onerror=alert(6)> ``y ```" in text
    # The example's backticks cannot close its fence.
    fence = re.search(r"\n(`{3,})json\n", text)
    assert fence is not None and len(fence.group(1)) > 3


@pytest.mark.usefixtures("default_registry")
def test_python_m_eventtracking_catalog_refuses_an_empty_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With nothing documented, ``catalog`` exits 1 saying so first and writes no file."""
    from eventtracking.__main__ import main

    out = io.StringIO()
    status = main(["catalog", "-o", str(tmp_path / "site")], out)
    assert status == 1
    assert out.getvalue() == ""
    assert "registry is empty, so no catalogue was written" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()
