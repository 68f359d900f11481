"""Reading definitions from YAML or JSON files and from settings mappings.

For teams that keep documentation outside the code. The format (YAML shown; JSON has
the same structure)::

    event_types:
      navigation.request:
        description: A learner opened a page.
        owner: web-team
        emitted_from: [lms.views:courseware]
        validation: strict          # optional: this type's mode
        fields:
          url: {type: string, description: The page's full URL.}
          referrer: {type: [string, null], required: false}
          address:                  # nested: same as address.postal_code, ...
            fields:
              postal_code: string
    context_types:
      django.context:
        description: Added by the Django middleware to every event of a request.
        fields:
          user_id: {type: [integer, null], description: The logged-in user, or null.}

Under ``event_types`` and ``context_types`` either a mapping of name -> definition, or a
list of definitions each with a ``name``. A definition may also carry ``version`` (a
list may hold several versions of one name, oldest first) and ``id``, which must match
its content: the JSON catalogue (:mod:`eventtracking.metadata.catalog`) is such a list,
so a committed catalogue loads back with its history. Load it before the code registers
its types: a definition the catalogue knows keeps its version number, and a changed one
becomes the next version, so numbers stay the same from one deployment to the next.
Keys named ``observed``, written by the discovery observer, are ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eventtracking.exceptions import ImproperlyConfigured
from eventtracking.metadata.definitions import (
    CONTEXT_TYPE,
    EVENT_TYPE,
    ContextType,
    Definition,
    EventType,
    build_definition,
)
from eventtracking.metadata.registry import Registry, get_registry

__all__ = ["load", "load_file", "load_mapping", "read_file"]

_EVENT_KEYS = frozenset(
    {
        "name",
        "description",
        "fields",
        "schema",
        "owner",
        "emitted_from",
        "example",
        "additional_fields",
        "validation",
        "version",
    }
)
# A context type has no schema, no mode, and always takes undocumented keys.
_CONTEXT_KEYS = _EVENT_KEYS - {"schema", "additional_fields", "validation"}
# Written by the catalogue and the observer; checked or ignored when loading.
_RECORD_KEYS = frozenset({"id", "kind", "schema_source", "observed"})
_TOP_KEYS = frozenset({"event_types", "context_types", "format", "generated_by", "title"})


def load(source: Any, registry: Registry | None = None) -> list[Definition]:
    """Register the definitions in ``source`` and return them.

    ``source`` is a path to a ``.yaml``, ``.yml`` or ``.json`` file, a mapping in the
    format above (a Django setting, for example), or a list of those. Raises
    :class:`~eventtracking.exceptions.ImproperlyConfigured` naming the file and entry
    when something is wrong; nothing from a bad source is registered.
    """
    if isinstance(source, (list, tuple)):
        return [definition for item in source for definition in load(item, registry)]
    if isinstance(source, Mapping):
        return load_mapping(source, registry, origin="settings")
    if isinstance(source, (str, os.PathLike)):
        return load_file(source, registry)
    msg = (
        f"Cannot load event documentation from {source!r}; give a path to a YAML or JSON "
        "file, a mapping with 'event_types' and 'context_types', or a list of these."
    )
    raise ImproperlyConfigured(msg)


def read_file(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML or JSON file, chosen by its suffix; ImproperlyConfigured on failure."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        msg = (
            f"{file}: unknown suffix {suffix!r}; event documentation files end in .yaml, "
            ".yml or .json."
        )
        raise ImproperlyConfigured(msg)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"Cannot read event documentation file {file}: {exc}"
        raise ImproperlyConfigured(msg) from exc
    if suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            msg = f"{file} is not valid JSON: {exc}"
            raise ImproperlyConfigured(msg) from exc
    yaml = import_yaml()
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        msg = f"{file} is not valid YAML: {exc}"
        raise ImproperlyConfigured(msg) from exc


def import_yaml() -> Any:
    """The ``yaml`` module (PyYAML); ImproperlyConfigured naming the extra without it."""
    try:
        import yaml
    except ImportError:
        msg = (
            "Reading or writing YAML needs PyYAML: pip install 'event-tracking[schema]' "
            "(or use a .json file)."
        )
        raise ImproperlyConfigured(msg) from None
    return yaml


def load_file(path: str | os.PathLike[str], registry: Registry | None = None) -> list[Definition]:
    """Register the definitions in one YAML or JSON file; see :func:`load`."""
    data = read_file(path)
    return load_mapping(data, registry, origin=str(path))


def load_mapping(
    data: Any, registry: Registry | None = None, *, origin: str = "settings"
) -> list[Definition]:
    """Register the definitions in a mapping in the file format; see :func:`load`.

    Every entry is checked before any is registered, into a scratch registry, so a
    mistake in the tenth entry leaves the registry as it was.
    """
    target = registry if registry is not None else get_registry()
    entries = list(_entries(data, origin))
    # Dry run: a scratch registry holding the same history catches every error first.
    scratch = Registry()
    for definition in target.all_versions():
        scratch.add(definition, definition.version)
    _register_all(scratch, entries, origin)
    return _register_all(target, entries, origin)


def _entries(data: Any, origin: str) -> list[tuple[str, str, dict[str, Any]]]:
    if data is None:
        return []
    if not isinstance(data, Mapping):
        msg = (
            f"{origin}: expected a mapping with 'event_types' and/or 'context_types', got "
            f"{type(data).__name__}."
        )
        raise ImproperlyConfigured(msg)
    unknown = set(data) - _TOP_KEYS
    if unknown:
        msg = (
            f"{origin}: unknown top-level keys {sorted(map(str, unknown))}; use "
            "event_types and context_types."
        )
        raise ImproperlyConfigured(msg)
    entries = []
    for section, kind in (("event_types", EVENT_TYPE), ("context_types", CONTEXT_TYPE)):
        value = data.get(section)
        if value is None:
            continue
        if isinstance(value, Mapping):
            items = []
            for name, spec in value.items():
                if spec is None:
                    spec = {}
                if not isinstance(spec, Mapping):
                    msg = f"{origin}: {section}.{name} must be a mapping, got {spec!r}."
                    raise ImproperlyConfigured(msg)
                if "name" in spec and spec["name"] != name:
                    msg = f"{origin}: {section}.{name} has a different name {spec['name']!r}."
                    raise ImproperlyConfigured(msg)
                items.append({**spec, "name": name})
        elif isinstance(value, list):
            items = list(value)
        else:
            msg = f"{origin}: {section} must be a mapping of name -> definition or a list."
            raise ImproperlyConfigured(msg)
        for item in items:
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                msg = f"{origin}: every entry of {section} needs a 'name', got {item!r}."
                raise ImproperlyConfigured(msg)
            if item.get("kind", kind) != kind:
                msg = f"{origin}: {item['name']!r} has kind {item['kind']!r} under {section}."
                raise ImproperlyConfigured(msg)
            entries.append((section, kind, dict(item)))
    return entries


def _register_all(
    registry: Registry, entries: list[tuple[str, str, dict[str, Any]]], origin: str
) -> list[Definition]:
    had_current = (
        {d.name for d in registry.event_types()},
        {d.name for d in registry.context_types()},
    )
    registered: list[Definition] = []
    for section, kind, item in entries:
        name = item["name"]
        allowed = _EVENT_KEYS if kind == EVENT_TYPE else _CONTEXT_KEYS
        if "schema_source" in item:
            # A catalogue record: a schema derived from the fields, and a context's
            # fixed additional_fields, are not part of what was registered.
            allowed = allowed | {"schema", "additional_fields"}
        unknown = set(item) - allowed - _RECORD_KEYS
        if unknown:
            msg = (
                f"{origin}: {section}.{name} has unknown keys {sorted(unknown)}; use "
                f"{', '.join(sorted(allowed - {'name'}))}."
            )
            raise ImproperlyConfigured(msg)
        options = {key: item[key] for key in allowed if key in item and key != "name"}
        if item.get("schema_source") == "fields":
            options.pop("schema", None)
        # Files say where events are emitted, or nothing: never the loader's own code.
        options.setdefault("emitted_from", ())
        known = had_current[0] if kind == EVENT_TYPE else had_current[1]
        version = options.get("version")
        # A versioned entry is history: it becomes current only for a name nothing
        # else has registered. An unversioned one behaves like register().
        make_current = version is None or name not in known
        mode = options.get("validation")
        try:
            definition: Definition = build_definition(
                EventType if kind == EVENT_TYPE else ContextType,
                name,
                options.get("description", ""),
                fields=options.get("fields"),
                schema=options.get("schema") if kind == EVENT_TYPE else None,
                owner=options.get("owner"),
                emitted_from=options["emitted_from"],
                example=options.get("example"),
                additional_fields=(
                    options.get("additional_fields", False) if kind == EVENT_TYPE else True
                ),
            )
            expected = item.get("id")
            if expected is not None and expected != definition.id:
                msg = (
                    f"{origin}: {section}.{name} has id {expected!r} but its content hashes "
                    f"to {definition.id!r}; it was edited after it was written. Remove the "
                    "'id' (and 'version') to register it as a new version."
                )
                raise ImproperlyConfigured(msg)
            stored = registry.add(definition, version, make_current=make_current)
            if mode is not None:
                registry.set_validation(name, mode)
        except ValueError as exc:
            if isinstance(exc, ImproperlyConfigured):
                raise
            hint = ""
            if "already" in str(exc):
                hint = (
                    " Load files that keep history (a committed catalogue) before code "
                    "registers the same types, so that version numbers agree."
                )
            msg = f"{origin}: {exc}{hint}"
            raise ImproperlyConfigured(msg) from None
        registered.append(stored)
    return registered
