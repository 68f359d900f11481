"""Discovery: draft definitions from the events a code base actually emits.

:class:`EventObserver` is a backend to add for a test run or in staging: it records,
per event name, how often it was seen, the types of every field path and whether each
field was always present, and writes drafts in the file format of
:mod:`eventtracking.metadata.loading`. ``docs/metadata.rst`` (*Discovering undocumented
events*) shows its use, with the Django setting, what it keeps of real users' data
(nothing by default) and the limits that bound its memory (the ``MAX_*`` constants
here). It walks each event's data under a lock: meant for test runs and staging, not
production.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import json
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventtracking._util.files import PRIVATE, write_text
from eventtracking._util.metadata_api import METADATA_EVENT_NAME, REFERENCE_KEY
from eventtracking.metadata._jsonform import entries, key_text, to_json_form
from eventtracking.metadata.loading import import_yaml
from eventtracking.metadata.registry import Registry

__all__ = [
    "MAX_CONTEXT_KEYS",
    "MAX_EXAMPLE_SIZE",
    "MAX_NAME_LENGTH",
    "MAX_PATH_LENGTH",
    "EventObserver",
    "infer_type",
]

#: Example values kept per field (with ``examples=True``).
MAX_FIELD_EXAMPLES = 3
#: Items of one array looked at per event.
MAX_ITEMS = 50
#: Nesting below this depth is not recorded.
MAX_DEPTH = 12
#: Event names longer than this are counted in ``types_not_recorded``, not recorded.
MAX_NAME_LENGTH = 1024
#: Field paths longer than this are counted in ``fields_not_recorded``, not recorded.
MAX_PATH_LENGTH = 200
#: Context keys recorded per type.
MAX_CONTEXT_KEYS = 100
#: Characters of JSON an example event keeps at most (with ``examples=True``); a larger
#: one is cut down (long text cut, long arrays and objects shortened), or left out.
MAX_EXAMPLE_SIZE = 4096
_MAX_EXAMPLE_TEXT = 80
_MAX_EXAMPLE_ITEMS = 10
_MAX_EXAMPLE_INT_BITS = 64


# The field type of a value: the first row whose class it is an instance of (a bool is an
# int, and a datetime a date, so each comes first).
_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (Mapping, "object"),
    ((list, tuple), "array"),
    (datetime.datetime, "datetime"),
    (datetime.date, "date"),
    (decimal.Decimal, "decimal"),
    (uuid.UUID, "uuid"),
)


def infer_type(value: Any) -> str:
    """The field type (see :data:`~eventtracking.metadata.FIELD_TYPES`) of one value."""
    if value is None:
        return "null"
    return next((name for kind, name in _TYPES if isinstance(value, kind)), "any")


def _merge_types(types: Counter[str]) -> list[str]:
    names = set(types)
    if "any" in names:
        return ["any"]
    if {"integer", "number"} <= names:
        names.discard("integer")
    order = ["string", "integer", "number", "boolean", "object", "array"]
    order += ["datetime", "date", "decimal", "uuid", "null"]
    return [name for name in order if name in names]


@dataclass
class _Field:
    types: Counter[str] = field(default_factory=Counter)
    seen: int = 0
    objects: int = 0  # times the value here was an object: the base of children's counts
    examples: list[Any] = field(default_factory=list)


def _cut(text: str) -> str:
    if len(text) <= _MAX_EXAMPLE_TEXT:
        return text
    return text[: _MAX_EXAMPLE_TEXT - 3] + "..."


def _shrink(form: Any) -> Any:
    """A smaller copy of a JSON form: text cut, arrays and objects shortened."""
    if isinstance(form, str):
        return _cut(form)
    if isinstance(form, bool) or not isinstance(form, (int, list, dict)):
        return form
    if isinstance(form, int):
        # A huge int would be written as thousands of digits (or refused): keep text.
        return form if form.bit_length() <= _MAX_EXAMPLE_INT_BITS else _cut(hex(form))
    if isinstance(form, list):
        return [_shrink(item) for item in form[:_MAX_EXAMPLE_ITEMS]]
    items = itertools.islice(form.items(), _MAX_EXAMPLE_ITEMS)
    return {_cut(key): _shrink(item) for key, item in items}


def _json_length(form: Any) -> int:
    try:
        return len(json.dumps(form, ensure_ascii=False))
    except ValueError:
        # An int too long to write in decimal.
        return MAX_EXAMPLE_SIZE + 1


def _example_event(data: Any) -> Any:
    """The JSON form of ``data``, made smaller (or None) when over MAX_EXAMPLE_SIZE."""
    form = to_json_form(data)
    if _json_length(form) <= MAX_EXAMPLE_SIZE:
        return form
    form = _shrink(form)
    return form if _json_length(form) <= MAX_EXAMPLE_SIZE else None


def _example_value(value: Any) -> Any:
    """One field's value as a short example: a scalar, or text of at most 80 characters."""
    form = _shrink(to_json_form(value))
    if isinstance(form, (list, dict)):
        return _cut(json.dumps(form, ensure_ascii=False))
    return form


@dataclass
class _Type:
    seen: int = 0
    first_seen: str = ""
    last_seen: str = ""
    example: Any = None
    root_objects: int = 0
    fields: dict[str, _Field] = field(default_factory=dict)
    context_keys: set[str] = field(default_factory=set)
    fields_dropped: int = 0


class EventObserver:
    """A backend that records emitted events and drafts registry entries from them.

    ``max_types`` and ``max_fields`` (per type) bound its memory; what is over them
    (or over the length limits of the module) is counted in :meth:`stats` and the
    drafts, not recorded. ``path``, if given, is where :meth:`close` writes the drafts
    (``.yaml``, ``.yml`` or ``.json``). ``examples`` keeps a few real values per field
    and the first event of each type in the drafts; off by default, because they are
    real users' data.
    """

    mutates_events = False

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        max_types: int = 10_000,
        max_fields: int = 500,
        examples: bool = False,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.max_types = max_types
        self.max_fields = max_fields
        self.examples = bool(examples)
        self._lock = threading.Lock()
        self._types: dict[str, _Type] = {}
        self._events = 0
        self._types_dropped = 0

    @classmethod
    def attach(cls, tracker: Any, name: str = "eventtracking_observer", **options: Any) -> Any:
        """Create an observer and register it as backend ``name`` of ``tracker``."""
        observer = cls(**options)
        tracker.routing_backend.register_backend(name, observer)
        return observer

    # -- observing --------------------------------------------------------------------

    def send(self, event: Any) -> None:
        """Record one event's name, fields, types and, the first time, an example."""
        name = event.get("name")
        if not isinstance(name, str) or name == METADATA_EVENT_NAME:
            return
        if len(name) > MAX_NAME_LENGTH:
            with self._lock:
                self._events += 1
                self._types_dropped += 1
            return
        data = event.get("data")
        stamp = event.get("timestamp")
        when = stamp.isoformat() if isinstance(stamp, datetime.datetime) else str(stamp)
        context = event.get("context")
        with self._lock:
            self._events += 1
            seen = self._types.get(name)
            if seen is None:
                if len(self._types) >= self.max_types:
                    self._types_dropped += 1
                    return
                example = _example_event(data) if self.examples else None
                seen = self._types[name] = _Type(first_seen=when, example=example)
            seen.seen += 1
            seen.last_seen = when
            if isinstance(context, Mapping):
                self._context_keys(seen, context)
            if isinstance(data, Mapping):
                seen.root_objects += 1
                self._walk_object(seen, data, "", 0, {id(data)})

    @staticmethod
    def _context_keys(seen: _Type, context: Mapping[Any, Any]) -> None:
        keys = seen.context_keys
        for key in context:
            if len(keys) >= MAX_CONTEXT_KEYS:
                return
            text = key_text(key)
            if text != REFERENCE_KEY and len(text) <= MAX_PATH_LENGTH:
                keys.add(text)

    def _walk_object(
        self, seen: _Type, value: Mapping[Any, Any], prefix: str, depth: int, active: set[int]
    ) -> None:
        pairs = entries(value)
        if pairs is None:
            # Reading it raised: nothing below it can be recorded.
            seen.fields_dropped += 1
            return
        for key, item in pairs:
            text = key_text(key)
            path = f"{prefix}.{text}" if prefix else text
            if not text or any(char in text for char in ".[]") or len(path) > MAX_PATH_LENGTH:
                # Field paths cannot name such a key, or would cost too much to keep.
                seen.fields_dropped += 1
                continue
            self._walk(seen, item, path, depth + 1, active)

    def _walk(self, seen: _Type, value: Any, path: str, depth: int, active: set[int]) -> None:
        if depth > MAX_DEPTH:
            return
        stats = seen.fields.get(path)
        if stats is None:
            if len(seen.fields) >= self.max_fields:
                seen.fields_dropped += 1
                return
            stats = seen.fields[path] = _Field()
        kind = infer_type(value)
        stats.types[kind] += 1
        stats.seen += 1
        if kind in ("object", "array"):
            # A container met again inside itself is a cycle: its type is recorded, and
            # its contents were (or are being) walked where it first appeared. Without
            # this, a dict holding itself twice would take 2**MAX_DEPTH steps.
            marker = id(value)
            if marker in active:
                return
            active.add(marker)
            try:
                if kind == "object":
                    stats.objects += 1
                    self._walk_object(seen, value, path, depth, active)
                else:
                    try:
                        items = list(itertools.islice(value, MAX_ITEMS))
                    except Exception:
                        seen.fields_dropped += 1
                        items = []
                    for item in items:
                        self._walk(seen, item, f"{path}[]", depth + 1, active)
            finally:
                active.discard(marker)
        elif self.examples and len(stats.examples) < MAX_FIELD_EXAMPLES:
            example = _example_value(value)
            if example not in stats.examples:
                stats.examples.append(example)

    # -- drafting ---------------------------------------------------------------------

    def drafts(
        self, registry: Registry | None = None, *, include_registered: bool = False
    ) -> dict[str, Any]:
        """Draft definitions in the file format, one per observed event name.

        With a ``registry``, names it already documents are left out unless
        ``include_registered``. Types are inferred from every value seen: a field seen
        with several types gets a list (``[string, null]``); a field present every time
        its parent was an object is required.
        """
        with self._lock:
            snapshot = {name: self._draft(seen) for name, seen in sorted(self._types.items())}
        if registry is not None and not include_registered:
            snapshot = {name: d for name, d in snapshot.items() if name not in registry}
        return {"event_types": snapshot}

    def _draft(self, seen: _Type) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for path, stats in seen.fields.items():
            types = _merge_types(stats.types)
            observed: dict[str, Any] = {"seen": stats.seen}
            if stats.examples:
                observed["examples"] = list(stats.examples)
            fields[path] = {
                "type": types[0] if len(types) == 1 else types,
                "description": "",
                "required": stats.seen >= self._parent_objects(seen, path),
                "observed": observed,
            }
        draft: dict[str, Any] = {"description": "", "fields": fields}
        if seen.example is not None:
            draft["example"] = seen.example
        draft["observed"] = {
            "seen": seen.seen,
            "first_seen": seen.first_seen,
            "last_seen": seen.last_seen,
            "context_keys": sorted(seen.context_keys),
            **({"fields_not_recorded": seen.fields_dropped} if seen.fields_dropped else {}),
        }
        return draft

    @staticmethod
    def _parent_objects(seen: _Type, path: str) -> int:
        if path.endswith("[]"):
            # Items are present whenever the array is; "required" means nothing here.
            return 0
        parent, dot, _ = path.rpartition(".")
        if not dot:
            return seen.root_objects
        stats = seen.fields.get(parent)
        return stats.objects if stats is not None else 0

    def write_drafts(
        self,
        path: str | Path,
        registry: Registry | None = None,
        *,
        include_registered: bool = False,
    ) -> Path:
        """Write :meth:`drafts` to ``path`` as YAML (``.yaml``/``.yml``) or JSON.

        The file is created readable and writable by its owner only (0600), through a
        temporary file renamed into place; a symbolic link at ``path`` is refused with
        ValueError, never written through. Returns the path written.
        """
        target = Path(path)
        drafts = self.drafts(registry, include_registered=include_registered)
        count = len(drafts["event_types"])
        if target.suffix.lower() == ".json":
            text = json.dumps(drafts, indent=2, ensure_ascii=False) + "\n"
        elif target.suffix.lower() in (".yaml", ".yml"):
            yaml = import_yaml()
            header = (
                f"# Drafted by eventtracking from {self._events} observed events "
                f"({count} types). Write the descriptions, check the types and\n"
                "# required flags, then commit this file and load it with "
                "eventtracking.metadata.load(). 'observed' keys are ignored.\n"
            )
            text = header + yaml.safe_dump(
                drafts, sort_keys=False, allow_unicode=True, default_flow_style=False
            )
        else:
            msg = f"Drafts are written as .yaml, .yml or .json, not {target.name!r}."
            raise ValueError(msg)
        return write_text(target, text, mode=PRIVATE)

    # -- backend protocol -------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Write the drafts to ``path`` when one was given."""
        if self.path is not None:
            self.write_drafts(self.path)

    def clear(self) -> None:
        """Forget everything observed."""
        with self._lock:
            self._types.clear()
            self._events = 0
            self._types_dropped = 0

    def stats(self) -> dict[str, Any]:
        """``events`` observed, ``types`` recorded and ``types_not_recorded`` over the limit."""
        with self._lock:
            return {
                "events": self._events,
                "types": len(self._types),
                "types_not_recorded": self._types_dropped,
            }
