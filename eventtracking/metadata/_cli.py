"""The ``catalog`` command, shared by ``python -m eventtracking`` and ``manage.py``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.metadata.catalog import DEFAULT_TITLE, FORMATS, write_catalog
from eventtracking.metadata.loading import load
from eventtracking.metadata.registry import Registry, get_registry

DEFAULT_OUTPUT = "event-catalog"

#: What ``catalog`` does: in a line for the list of commands, and in full for its help.
SUMMARY = "write the event catalogue as Markdown, JSON and HTML"
DESCRIPTION = (
    "Write the documented event and context types, with every version, as Markdown, JSON "
    "(loadable again) and one self-contained HTML page."
)


class CatalogError(Exception):
    """The catalogue could not be built; the message says why and what to do."""


def add_arguments(parser: Any) -> None:
    """Add the catalogue options to an argparse (or Django) parser."""
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="FILE",
        help="a YAML or JSON file of definitions, or a committed JSON catalogue; repeatable",
    )
    parser.add_argument(
        "--import",
        action="append",
        default=[],
        dest="modules",
        metavar="MODULE",
        help="a module to import first, whose register() calls document types; repeatable",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        metavar="DIR",
        help=f"the directory to write into, created if needed ({DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--format",
        action="append",
        choices=sorted(FORMATS),
        dest="formats",
        help="only this format; repeatable (default: markdown, json and html)",
    )
    parser.add_argument("--title", default=DEFAULT_TITLE, help=f"page title ({DEFAULT_TITLE!r})")
    parser.add_argument("--basename", default="catalog", help="file name without suffix (catalog)")


def fill_registry(
    sources: Sequence[str], modules: Sequence[str], registry: Registry | None = None
) -> Registry:
    """Load ``sources`` (history first), then import ``modules``; CatalogError on failure."""
    target = registry if registry is not None else get_registry()
    try:
        load(list(sources), registry=target)
    except ImproperlyConfigured as exc:
        raise CatalogError(str(exc)) from None
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            msg = f"Cannot import {name!r}: {type(exc).__name__}: {exc}"
            raise CatalogError(msg) from exc
    return target


def write(options: Any, out: TextIO, registry: Registry | None = None) -> int:
    """Build the registry from ``options`` and write the catalogue; report to ``out``.

    Raises CatalogError, writing nothing, when the registry is empty: three empty files
    would look like a catalogue of a project that documents nothing.
    """
    target = fill_registry(options.source, options.modules, registry)
    if not target.all_versions():
        msg = (
            "The registry is empty, so no catalogue was written: pass --source FILE or "
            "--import MODULE to document event types."
        )
        raise CatalogError(msg)
    written = write_catalog(
        options.output,
        target,
        formats=options.formats or tuple(FORMATS),
        basename=options.basename,
        title=options.title,
    )
    events, contexts = len(target.event_types()), len(target.context_types())
    versions = len(target.all_versions())
    out.write(
        f"Catalogue of {events} event type(s) and {contexts} context type(s), "
        f"{versions} version(s) in all:\n"
    )
    for name, path in written.items():
        out.write(f"  {name:8} {Path(path)}\n")
    return 0


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Write the catalogue for ``python -m eventtracking catalog``; 1 on a CatalogError."""
    try:
        return write(args, out)
    except CatalogError as exc:
        sys.stderr.write(f"catalog: {exc}\n")
        return 1
