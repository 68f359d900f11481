"""The documentation's code blocks fit a 1200-pixel-wide browser window.

With the layout of docs/conf.py, headless Chromium at 1200 px showed code blocks 920 px
wide, room for 96 characters of their monospace font: a longer line scrolls sideways.
This test keeps the sources within that; blocks marked ``:class: wrap`` (output with
lines longer than any window) wrap instead, and blocks marked ``:class: events`` (one
event per line) scroll sideways on purpose, by docs/_static/custom.css.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.rst", *sorted((ROOT / "docs").glob("*.rst"))]
MAX_COLUMNS = 96

#: Block options whose long lines are meant: they wrap, or scroll one event per line.
EXEMPT_CLASSES = ([":class:", "wrap"], [":class:", "events"])

_DIRECTIVE = re.compile(r"^(\s*)\.\. (code-block|code|sourcecode)::")


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """Each literal or code block: its first line number and its lines, dedented."""
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line)
        is_literal = line.rstrip().endswith("::") and not line.lstrip().startswith("..")
        if not (directive or is_literal):
            index += 1
            continue
        indent = len(line) - len(line.lstrip())
        index += 1
        wrapped = False
        if directive:
            while index < len(lines) and lines[index].strip().startswith(":"):
                wrapped = wrapped or lines[index].split() in EXEMPT_CLASSES
                index += 1
        start = index
        body = []
        while index < len(lines) and (
            not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
        ):
            body.append(lines[index])
            index += 1
        content = [line for line in body if line.strip()]
        if content and not wrapped:
            margin = min(len(line) - len(line.lstrip()) for line in content)
            blocks.append((start + 1, [line[margin:] for line in body]))
    return blocks


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_code_blocks_fit_a_1200_pixel_window(source: Path) -> None:
    """No line of a code block is longer than the 96 characters a 1200 px window shows."""
    too_long = [
        f"{source.name}:{first + offset}: {len(line)} characters"
        for first, block in code_blocks(source.read_text())
        for offset, line in enumerate(block)
        if len(line) > MAX_COLUMNS
    ]
    assert too_long == []


def test_the_check_finds_a_long_line() -> None:
    """The parser sees code blocks, so a long line in one is reported."""
    text = "Example::\n\n    " + "x" * 120 + "\n\nText.\n"
    ((_, block),) = code_blocks(text)
    assert len(block[1]) == 120


def _css_rule(selector: str) -> dict[str, str]:
    """The declarations of ``selector`` in docs/_static/custom.css."""
    css = (ROOT / "docs" / "_static" / "custom.css").read_text()
    match = re.search(re.escape(selector) + r"\s*\{([^}]*)\}", css)
    assert match is not None, f"no rule for {selector}"
    pairs = (item.split(":", 1) for item in match.group(1).split(";") if ":" in item)
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_readme_output_keeps_one_event_per_line() -> None:
    """The README's example output is shown one event per line on the docs' front
    page: its block's class makes long lines scroll rather than wrap."""
    text = (ROOT / "README.rst").read_text()
    options = text.split(".. code-block:: json", 1)[1].split("\n\n", 1)[0].split()
    assert options[:1] == [":class:"]
    rule = _css_rule(f"div.{options[1]} pre")
    assert rule.get("white-space") == "pre"
    assert rule.get("overflow-x") == "auto"
