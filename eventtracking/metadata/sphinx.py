"""A Sphinx extension that puts an event catalogue into the documentation.

In ``conf.py``::

    extensions = [..., "eventtracking.metadata.sphinx"]

and in a page::

    .. eventtracking-catalog::
       :source: events.yaml
       :import: myapp.events

``:source:`` names YAML or JSON files of definitions (or committed JSON catalogues),
relative to the page, separated by spaces; ``:import:`` names modules whose
``register()`` calls document types. The catalogue is rendered when the docs are built,
so it is always the one the code and files describe. With only ``:source:``, a private
registry is used; with ``:import:``, the process-wide one.
"""

from __future__ import annotations

import importlib
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.metadata.catalog import render_rst
from eventtracking.metadata.loading import load
from eventtracking.metadata.registry import Registry, get_registry

__all__ = ["CatalogDirective", "setup"]


class CatalogDirective(SphinxDirective):
    """``.. eventtracking-catalog::`` with ``:source:`` and ``:import:`` options."""

    has_content = False
    option_spec = {"source": directives.unchanged, "import": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        sources = (self.options.get("source") or "").split()
        modules = (self.options.get("import") or "").split()
        if not sources and not modules:
            raise self.error("eventtracking-catalog needs :source: files or :import: modules.")
        registry = get_registry() if modules else Registry()
        paths = []
        for source in sources:
            _, absolute = self.env.relfn2path(source, self.env.docname)
            self.env.note_dependency(absolute)
            paths.append(absolute)
        try:
            load(paths, registry=registry)
            for module in modules:
                importlib.import_module(module)
        except (ImproperlyConfigured, ImportError) as exc:
            raise self.error(f"eventtracking-catalog: {exc}") from None
        text = render_rst(registry)
        container = nodes.container(classes=["eventtracking-catalog"])
        self.state.nested_parse(
            StringList(text.splitlines(), source=f"<eventtracking-catalog {' '.join(sources)}>"),
            self.content_offset,
            container,
        )
        return [container]


def setup(app: Any) -> dict[str, Any]:
    """Register the directive (Sphinx calls this)."""
    from eventtracking import __version__

    app.add_directive("eventtracking-catalog", CatalogDirective)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
