"""The event catalogue: the registry as Markdown, JSON, one HTML page, or reStructuredText.

::

    python -m eventtracking catalog --source events.yaml --import myapp.events -o docs/events
    python manage.py eventtracking_catalog -o docs/events       # with Django

Every format lists each event type (current version first, then its history), then
the context types; ``docs/metadata.rst`` ("The catalogue") describes each. The JSON
form loads back into a registry (:func:`eventtracking.metadata.load`), and output is
deterministic: the same registry always gives the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from eventtracking._util.files import write_text
from eventtracking.metadata._html import render_page
from eventtracking.metadata.definitions import (
    ContextType,
    Definition,
    EventType,
    example_data,
    example_event,
)
from eventtracking.metadata.registry import Registry, get_registry

__all__ = [
    "CATALOG_FORMAT",
    "FORMATS",
    "build_catalog",
    "changes",
    "render_html",
    "render_json",
    "render_markdown",
    "render_rst",
    "write_catalog",
]

#: The ``format`` of the JSON catalogue.
CATALOG_FORMAT = "eventtracking.catalog/1"

#: Output formats and their file suffixes.
FORMATS = {"markdown": ".md", "json": ".json", "html": ".html"}

DEFAULT_TITLE = "Event catalogue"


def build_catalog(registry: Registry | None = None, title: str = DEFAULT_TITLE) -> dict[str, Any]:
    """The JSON catalogue: every version's record, event types then context types."""
    from eventtracking import __version__

    source = registry if registry is not None else get_registry()
    versions = source.all_versions()
    return {
        "format": CATALOG_FORMAT,
        "generated_by": f"event-tracking {__version__}",
        "title": title,
        "event_types": [d.record for d in versions if isinstance(d, EventType)],
        "context_types": [d.record for d in versions if isinstance(d, ContextType)],
    }


def render_json(registry: Registry | None = None, title: str = DEFAULT_TITLE) -> str:
    """:func:`build_catalog` as indented JSON text, ending with a newline."""
    return json.dumps(build_catalog(registry, title), indent=2, ensure_ascii=False) + "\n"


# -- what each card shows -------------------------------------------------------------


def changes(previous: Definition, current: Definition) -> list[str]:
    """What changed from one version to the next, in short phrases."""
    found = []
    before, after = previous.record["fields"], current.record["fields"]
    added = [path for path in after if path not in before]
    removed = [path for path in before if path not in after]
    changed = [path for path in after if path in before and before[path] != after[path]]
    if added:
        found.append("added " + ", ".join(added))
    if removed:
        found.append("removed " + ", ".join(removed))
    if changed:
        found.append("changed " + ", ".join(changed))
    for key, label in (
        ("description", "description"),
        ("owner", "owner"),
        ("emitted_from", "where emitted"),
        ("additional_fields", "additional fields"),
        ("example", "example"),
    ):
        if previous.record[key] != current.record[key]:
            found.append(f"{label} changed")
    if previous.schema != current.schema and previous.schema is not None:
        found.append("schema changed")
    return found or ["no change"]


def _history(registry: Registry, definition: Definition) -> list[dict[str, Any]]:
    if isinstance(definition, EventType):
        versions: Sequence[Definition] = registry.versions(definition.name)
    else:
        versions = registry.context_versions(definition.name)
    rows = []
    for index, version in enumerate(versions):
        summary = (
            "first version" if index == 0 else "; ".join(changes(versions[index - 1], version))
        )
        rows.append(
            {
                "version": version.version,
                "id": version.id,
                "current": version is definition,
                "changes": summary,
            }
        )
    return rows


def _cards(registry: Registry) -> list[dict[str, Any]]:
    cards = []
    for definition in [*registry.event_types(), *registry.context_types()]:
        record = definition.record
        data, built = example_data(definition)
        is_event = isinstance(definition, EventType)
        label = "Example event" if is_event else "Example context"
        cards.append(
            {
                "kind": definition.kind,
                "name": definition.name,
                "version": definition.version,
                "id": definition.id,
                "description": definition.description,
                "owner": definition.owner,
                "emitted_from": [str(location) for location in definition.emitted_from],
                "fields": [
                    {
                        "path": spec.path,
                        "type": " or ".join(spec.types),
                        "required": spec.required,
                        "description": spec.description,
                    }
                    for spec in definition.fields
                ],
                "additional_fields": record["additional_fields"],
                "history": _history(registry, definition),
                "example": json.dumps(
                    example_event(definition) if is_event else data, indent=2, ensure_ascii=False
                ),
                "example_label": label + (" (built from the field types)" if built else ""),
            }
        )
    return cards


def _summary(cards: Iterable[dict[str, Any]]) -> str:
    events = sum(1 for card in cards if card["kind"] == "event_type")
    contexts = sum(1 for card in cards if card["kind"] == "context_type")
    return (
        f"{events} event type{'s' if events != 1 else ''}, "
        f"{contexts} context type{'s' if contexts != 1 else ''}"
    )


# -- Markdown -------------------------------------------------------------------------


# Every text from a definition (descriptions, owners, names, paths, locations) may come
# from a file anyone could have edited. Renderers show it and never act on it: HTML is
# written as entities, the characters that make markup are escaped, and each paragraph
# is written on one line, so that no text starts a block (a heading, a list, a
# directive) of its own.

_RST_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")  # all ASCII punctuation
_MD_INLINE = re.compile(r"([\\`*_\[\]!|~])")
# What starts a block at the beginning of a Markdown line: a heading, a list item, a
# thematic break or setext underline (a quote's ``>`` is already an entity), and the
# ``.`` or ``)`` after the digits of an ordered list item.
_MD_BLOCK_START = re.compile(r"^([#+=-])|^(\d+)([.)])")


def _paragraphs(text: str) -> list[str]:
    """``text`` as paragraphs (split at blank lines), each on one line."""
    blocks = re.split(r"\n\s*\n", text)
    return [" ".join(block.split()) for block in blocks if block.strip()]


def _backtick_fence(text: str, least: int) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(least, longest + 1)


def _md_text(text: str) -> str:
    """Text shown as it is in Markdown: markup escaped, HTML as entities, one line."""
    flat = " ".join(text.split())
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    flat = _MD_INLINE.sub(r"\\\1", flat)
    # These characters are safe inside a line; at its start they could open a block.
    return _MD_BLOCK_START.sub(_escape_block_start, flat)


def _escape_block_start(match: re.Match[str]) -> str:
    if match.group(1):
        return "\\" + match.group(1)
    return f"{match.group(2)}\\{match.group(3)}"


def _md_code(text: str) -> str:
    """A code span that no backtick in ``text`` can close early."""
    flat = " ".join(text.split())
    fence = _backtick_fence(flat, 1)
    if flat.startswith(("`", " ")) or flat.endswith(("`", " ")) or len(fence) > 1:
        return f"{fence} {flat} {fence}"
    return f"{fence}{flat}{fence}"


def _md_code_cell(text: str) -> str:
    # GitHub's tables split cells at every unescaped pipe, even inside code spans.
    return _md_code(text).replace("|", "\\|")


def render_markdown(registry: Registry | None = None, title: str = DEFAULT_TITLE) -> str:
    """The catalogue as one Markdown document (GitHub flavour: tables, fenced code)."""
    cards = _cards(registry if registry is not None else get_registry())
    lines = [f"# {_md_text(title)}", "", _summary(cards) + ".", ""]
    for kind, heading in (("event_type", "Event types"), ("context_type", "Context types")):
        selected = [card for card in cards if card["kind"] == kind]
        if not selected:
            continue
        lines += [f"## {heading}", ""]
        for card in selected:
            lines += _markdown_card(card)
    return "\n".join(lines).rstrip("\n") + "\n"


def _markdown_card(card: dict[str, Any]) -> list[str]:
    lines = [f"### {_md_code(card['name'])}", ""]
    for paragraph in _paragraphs(card["description"]):
        lines += [_md_text(paragraph), ""]
    lines.append(f"- **Version:** {card['version']} (record id {_md_code(card['id'])})")
    if card["owner"]:
        lines.append(f"- **Owner:** {_md_text(card['owner'])}")
    if card["emitted_from"]:
        where = ", ".join(_md_code(location) for location in card["emitted_from"])
        lines.append(f"- **Emitted from:** {where}")
    if card["additional_fields"] and card["kind"] == "event_type":
        lines.append("- **Undocumented fields:** allowed")
    lines.append("")
    if card["fields"]:
        lines += ["| Field | Type | Required | Description |", "| --- | --- | --- | --- |"]
        for row in card["fields"]:
            lines.append(
                f"| {_md_code_cell(row['path'])} | {row['type']} | "
                f"{'yes' if row['required'] else 'no'} | {_md_text(row['description'])} |"
            )
        lines.append("")
    else:
        lines += ["No documented fields.", ""]
    lines += ["| Version | Record id | Changes |", "| --- | --- | --- |"]
    for row in card["history"]:
        marker = " (current)" if row["current"] else ""
        lines.append(
            f"| {row['version']}{marker} | {_md_code_cell(row['id'])} | "
            f"{_md_text(row['changes'])} |"
        )
    lines.append("")
    fence = _backtick_fence(card["example"], 3)
    lines += [f"{card['example_label']}:", "", f"{fence}json", card["example"], fence, ""]
    return lines


# -- HTML -----------------------------------------------------------------------------


def render_html(registry: Registry | None = None, title: str = DEFAULT_TITLE) -> str:
    """The catalogue as one self-contained HTML page with a search box."""
    cards = _cards(registry if registry is not None else get_registry())
    return render_page(title, _summary(cards), cards)


# -- reStructuredText -----------------------------------------------------------------


def _rst_text(text: str) -> str:
    """Text shown as it is in reStructuredText: punctuation escaped, on one line.

    Escaped, ``.. include::`` or ``.. raw::`` is a paragraph, not a directive; a
    backquote, a pipe or a colon starts no link, substitution or role.
    """
    return _RST_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _rst_code(text: str) -> str:
    """``text`` as an inline literal when it can be one, else as escaped text."""
    if text and text == " ".join(text.split()) and "`" not in text and "\\" not in text:
        return f"``{text}``"
    return _rst_text(text)


def render_rst(registry: Registry | None = None, title: str = DEFAULT_TITLE) -> str:
    """The catalogue as reStructuredText without section titles, to nest anywhere.

    Used by the Sphinx directive in :mod:`eventtracking.metadata.sphinx`; ``title`` is
    not written (the page around it has its own).
    """
    cards = _cards(registry if registry is not None else get_registry())
    lines = [_summary(cards) + ".", ""]
    for card in cards:
        kind = "Event type" if card["kind"] == "event_type" else "Context type"
        lines += [f".. rubric:: {kind} {_rst_code(card['name'])}", ""]
        for paragraph in _paragraphs(card["description"]):
            lines += [_rst_text(paragraph), ""]
        lines.append(f":Version: {card['version']} (record id ``{card['id']}``)")
        if card["owner"]:
            lines.append(f":Owner: {_rst_text(card['owner'])}")
        if card["emitted_from"]:
            lines.append(
                ":Emitted from: " + ", ".join(_rst_code(loc) for loc in card["emitted_from"])
            )
        lines.append("")
        if card["fields"]:
            lines += [".. list-table::", "   :header-rows: 1", ""]
            lines += ["   * - Field", "     - Type", "     - Required", "     - Description"]
            for row in card["fields"]:
                lines += [
                    f"   * - {_rst_code(row['path'])}",
                    f"     - {row['type']}",
                    f"     - {'yes' if row['required'] else 'no'}",
                    f"     - {_rst_text(row['description'])}" if row["description"] else "     -",
                ]
            lines.append("")
        history = "; ".join(
            f"{row['version']} (``{row['id']}``): {_rst_text(row['changes'])}"
            for row in card["history"]
        )
        lines += [f"Versions: {history}.", ""]
        lines += [f"{card['example_label']}:", "", ".. code-block:: json", ""]
        lines += [f"   {line}" for line in card["example"].splitlines()]
        lines.append("")
    return "\n".join(lines)


# -- files ----------------------------------------------------------------------------


def write_catalog(
    directory: str | Path,
    registry: Registry | None = None,
    *,
    formats: Iterable[str] = tuple(FORMATS),
    basename: str = "catalog",
    title: str = DEFAULT_TITLE,
) -> dict[str, Path]:
    """Write ``basename.md``, ``.json`` and ``.html`` (or the ``formats`` asked for)
    into ``directory``, creating it; return the path of each format written.

    Each file is written through a temporary file and renamed into place, so readers
    never see half a catalogue, and a symbolic link at a destination is never written
    through.

    Raises ValueError for an unknown format, listing the valid ones, or for a
    destination that is a symbolic link.
    """
    chosen = list(dict.fromkeys(formats))
    unknown = [name for name in chosen if name not in FORMATS]
    if unknown:
        msg = f"Unknown catalogue format {unknown[0]!r}; use {', '.join(FORMATS)}."
        raise ValueError(msg)
    renderers = {"markdown": render_markdown, "json": render_json, "html": render_html}
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in chosen:
        path = target / f"{basename}{FORMATS[name]}"
        written[name] = write_text(path, renderers[name](registry, title))
    return written
