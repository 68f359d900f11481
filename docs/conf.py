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
html_static_path: list[str] = []
nitpicky = False
