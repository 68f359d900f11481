"""Sphinx configuration for the event-tracking documentation."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import eventtracking  # noqa: E402 - needs the path set above

project = "event-tracking"
author = "event-tracking contributors"
copyright = "2026, event-tracking contributors"  # noqa: A001 - Sphinx's own name
release = eventtracking.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    # Renders docs/metadata.rst's example catalogue from docs/readme_events.yaml.
    "eventtracking.metadata.sphinx",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# The optional extras are not needed to build the docs.
autodoc_mock_imports = ["pymongo", "bson"]

exclude_patterns = ["_build"]
html_theme = "alabaster"
# Alabaster's default 940 px page leaves code blocks about 70 characters. This layout
# fits a 1200 px window (less its scroll bar) and gives them about 96: every code block
# of these pages fits without scrolling sideways.
html_theme_options = {
    "page_width": "1180px",
    "sidebar_width": "200px",
    "body_max_width": "none",
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
nitpicky = False
