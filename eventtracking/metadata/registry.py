"""The registry of documented event types and context types.

Register a type with a call, at module level (the usual place)::

    from eventtracking import metadata

    NAVIGATION = metadata.register(
        "navigation.request",
        "A learner opened a page.",
        fields={"url": {"type": "string", "description": "The page's full URL."}},
        owner="web-team",
    )

or with the :func:`emits` decorator on the function that emits it, or from a YAML or
JSON file or a settings dict (:mod:`eventtracking.metadata.loading`).

Each registration is a version (see "Versions and ids" in ``docs/metadata.rst``).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from eventtracking._util.options import is_count
from eventtracking.metadata.definitions import (
    CONTEXT_TYPE,
    EVENT_TYPE,
    ContextType,
    Definition,
    EventType,
    build_definition,
)

__all__ = [
    "MODES",
    "Registry",
    "emits",
    "get_registry",
    "register",
    "register_context",
    "set_loader",
]

#: Validation modes, from none to failing the caller.
MODES = ("off", "warn", "strict")

_D = TypeVar("_D", bound=Definition)
_F = TypeVar("_F", bound=Callable[..., Any])


class Registry:
    """Documented event types and context types, every version of each. Thread-safe.

    Reading methods return immutable :class:`~eventtracking.metadata.EventType` and
    :class:`~eventtracking.metadata.ContextType` objects; :attr:`generation` grows by
    one with every change, so readers can tell when to look again.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._versions: dict[tuple[str, str], list[Definition]] = {}
        self._current: dict[tuple[str, str], Definition] = {}
        self._by_id: dict[str, Definition] = {}
        self._modes: dict[str, str] = {}
        self._listeners: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Grows by one with every change to the registry.
        self.generation = 0

    # -- registering ------------------------------------------------------------------

    def register(
        self,
        name: str,
        description: str = "",
        *,
        fields: Any = None,
        schema: Mapping[str, Any] | None = None,
        owner: str | None = None,
        emitted_from: Any = None,
        example: Any = None,
        additional_fields: bool = False,
        validation: str | None = None,
        version: int | None = None,
    ) -> EventType:
        """Document the event type ``name`` and return its current version.

        ``fields`` maps field paths to specs (see
        :func:`~eventtracking.metadata.definitions.normalise_fields`); ``schema`` is a
        full JSON Schema of ``data`` instead. ``emitted_from`` is one or more locations
        (``'module:function'``, a function); when None, the module and function that
        called ``register`` are recorded. ``example`` is sample ``data``.
        ``additional_fields`` allows keys that are not documented. ``validation``
        (``'off'``, ``'warn'`` or ``'strict'``) overrides the tracker's mode for this
        type. ``version`` pins the version number, for files that keep history.

        Raises ValueError naming the problem when the definition is not valid, or when
        ``version`` is already taken by a different definition.
        """
        definition = build_definition(
            EventType,
            name,
            description,
            fields=fields,
            schema=schema,
            owner=owner,
            emitted_from=emitted_from,
            example=example,
            additional_fields=additional_fields,
        )
        if validation is not None:
            self._check_mode(validation, name)
        with self._lock:
            result = self.add(definition, version)
            if validation is not None and self._modes.get(name) != validation:
                self._modes[name] = validation
                self._changed()
        return result

    def register_context(
        self,
        name: str,
        description: str = "",
        *,
        fields: Any = None,
        owner: str | None = None,
        emitted_from: Any = None,
        example: Any = None,
        version: int | None = None,
    ) -> ContextType:
        """Document the context entered as ``name`` (e.g. ``'django.context'``).

        ``fields`` documents the keys it adds to events, as for :meth:`register`;
        ``emitted_from`` records where it is entered. Returns its current version.
        """
        definition = build_definition(
            ContextType,
            name,
            description,
            fields=fields,
            schema=None,
            owner=owner,
            emitted_from=emitted_from,
            example=example,
            additional_fields=True,
        )
        return self.add(definition, version)

    def set_validation(self, name: str, mode: str | None) -> None:
        """Set the validation mode of event type ``name``; None goes back to the tracker's."""
        if mode is not None:
            self._check_mode(mode, name)
        with self._lock:
            if self._modes.get(name) == mode:
                return
            if mode is None:
                self._modes.pop(name, None)
            else:
                self._modes[name] = mode
            self._changed()

    def add(self, definition: _D, version: int | None = None, *, make_current: bool = True) -> _D:
        """Store ``definition`` (see :func:`~eventtracking.metadata.definitions.build_definition`)
        as a version, and return the stored one.

        The same content as a stored version returns that version; new content becomes
        version ``version``, or the next one. ``make_current`` False keeps the current
        version as it is, unless the name has none. Raises ValueError when ``version``
        is not a positive int, or is taken by a different definition.
        """
        if version is not None and not is_count(version):
            msg = f"{definition.name!r}: version must be a positive int, got {version!r}."
            raise ValueError(msg)
        with self._lock:
            return self._store(definition, version, make_current)

    def _store(self, definition: _D, version: int | None, make_current: bool) -> _D:
        """The body of :meth:`add`, under the lock."""
        key = (definition.kind, definition.name)
        versions = self._versions.setdefault(key, [])
        same: Any = next((known for known in versions if known.id == definition.id), None)
        if version is not None:
            taken = next((known for known in versions if known.version == version), None)
            if taken is not None and taken.id != definition.id:
                msg = (
                    f"{definition.name!r} version {version} is already registered with a "
                    f"different definition (id {taken.id}); leave version out to add the "
                    "next version."
                )
                raise ValueError(msg)
            if same is not None and same.version != version:
                msg = (
                    f"{definition.name!r}: this definition (id {same.id}) is already "
                    f"version {same.version}, not {version}."
                )
                raise ValueError(msg)
        changed = False
        if same is None:
            number = version or max((known.version for known in versions), default=0) + 1
            same = dataclasses.replace(definition, version=number)
            compiled = definition.__dict__.get("checks")
            if compiled is not None:
                # The copy keeps the checks build_definition compiled from the same content (a
                # cached_property lives in the instance's __dict__).
                object.__setattr__(same, "checks", compiled)
            versions.append(same)
            versions.sort(key=lambda known: known.version)
            self._by_id[same.id] = same
            changed = True
        if (make_current or key not in self._current) and self._current.get(key) is not same:
            self._current[key] = same
            changed = True
        if changed:
            self._changed()
        # The versions stored under (kind, name) are all of that kind's class.
        stored: _D = same
        return stored

    def _changed(self) -> None:
        self.generation += 1
        for listener in list(self._listeners):
            listener.registry_changed()

    @staticmethod
    def _check_mode(mode: Any, name: str) -> None:
        if mode not in MODES:
            msg = (
                f"Validation mode {mode!r} for {name!r} is not valid; use one of "
                f"{', '.join(MODES)}, or None for the tracker's mode."
            )
            raise ValueError(msg)

    def subscribe(self, listener: Any) -> None:
        """Call ``listener.registry_changed()`` after each change; held weakly."""
        with self._lock:
            self._listeners.add(listener)

    # -- reading ----------------------------------------------------------------------

    def get(self, name: str, version: int | None = None) -> EventType:
        """The current version of event type ``name``, or the given ``version``.

        Raises KeyError naming the registered types when there is no such type or
        version.
        """
        return self._get(EVENT_TYPE, name, version)  # type: ignore[return-value]

    def get_context(self, name: str, version: int | None = None) -> ContextType:
        """The current (or given) version of context type ``name``; KeyError if none."""
        return self._get(CONTEXT_TYPE, name, version)  # type: ignore[return-value]

    def _get(self, kind: str, name: str, version: int | None) -> Definition:
        with self._lock:
            if version is None:
                found = self._current.get((kind, name))
            else:
                found = next(
                    (d for d in self._versions.get((kind, name), ()) if d.version == version),
                    None,
                )
        if found is None:
            what = kind.replace("_", " ")
            suffix = "" if version is None else f" version {version}"
            msg = f"No {what} {name!r}{suffix} is registered."
            raise KeyError(msg)
        return found

    def current(self, name: str) -> EventType | None:
        """The current version of event type ``name``, or None when it is not registered."""
        return self._current.get((EVENT_TYPE, name))  # type: ignore[return-value]

    def versions(self, name: str) -> list[EventType]:
        """Every version of event type ``name``, oldest first (empty when unknown)."""
        with self._lock:
            return list(self._versions.get((EVENT_TYPE, name), ()))  # type: ignore[arg-type]

    def context_versions(self, name: str) -> list[ContextType]:
        """Every version of context type ``name``, oldest first (empty when unknown)."""
        with self._lock:
            return list(self._versions.get((CONTEXT_TYPE, name), ()))  # type: ignore[arg-type]

    def by_id(self, record_id: str) -> Definition:
        """The version whose record has ``id``; KeyError when there is none."""
        try:
            return self._by_id[record_id]
        except KeyError:
            msg = f"No registered definition has id {record_id!r}."
            raise KeyError(msg) from None

    def event_types(self) -> list[EventType]:
        """The current version of every event type, sorted by name."""
        return self._currents(EVENT_TYPE)  # type: ignore[return-value]

    def context_types(self) -> list[ContextType]:
        """The current version of every context type, sorted by name."""
        return self._currents(CONTEXT_TYPE)  # type: ignore[return-value]

    def _currents(self, kind: str) -> list[Definition]:
        with self._lock:
            found = [d for (k, _), d in self._current.items() if k == kind]
        return sorted(found, key=lambda d: d.name)

    def all_versions(self) -> list[Definition]:
        """Every version of every type: event types then context types, by name and
        version."""
        with self._lock:
            found = [d for versions in self._versions.values() for d in versions]
        order = {EVENT_TYPE: 0, CONTEXT_TYPE: 1}
        return sorted(found, key=lambda d: (order[d.kind], d.name, d.version))

    def validation_mode(self, name: str) -> str | None:
        """The mode set for event type ``name``, or None to follow the tracker."""
        return self._modes.get(name)

    def __contains__(self, name: object) -> bool:
        return (EVENT_TYPE, name) in self._current

    def __len__(self) -> int:
        """The number of event types (not versions)."""
        return len(self.event_types())

    def clear(self) -> None:
        """Forget everything (for tests)."""
        with self._lock:
            self._versions.clear()
            self._current.clear()
            self._by_id.clear()
            self._modes.clear()
            self._changed()

    def load(self, source: Any) -> list[Definition]:
        """Register the definitions in a file path or a settings mapping.

        See :func:`eventtracking.metadata.loading.load`; returns what was registered.
        """
        if _load is None:
            msg = "no loader: import eventtracking.metadata, which sets one"
            raise RuntimeError(msg)
        return _load(source, self)


#: How :meth:`Registry.load` reads a source. :mod:`eventtracking.metadata` hands over
#: :func:`eventtracking.metadata.loading.load`, which imports this module, when it is
#: imported (see :func:`set_loader`).
_load: Callable[[Any, Registry], list[Definition]] | None = None


def set_loader(load: Callable[[Any, Registry], list[Definition]]) -> None:
    """Choose what :meth:`Registry.load` calls with ``(source, registry)``."""
    global _load
    _load = load


# -- the default registry -------------------------------------------------------------

_DEFAULT = Registry()


def get_registry() -> Registry:
    """The process-wide registry that :func:`register` and the tools use."""
    return _DEFAULT


def register(name: str, description: str = "", **options: Any) -> EventType:
    """Register an event type in the default registry; see :meth:`Registry.register`."""
    return _DEFAULT.register(name, description, **options)


def register_context(name: str, description: str = "", **options: Any) -> ContextType:
    """Register a context type in the default registry; see
    :meth:`Registry.register_context`."""
    return _DEFAULT.register_context(name, description, **options)


def emits(
    name: str, description: str = "", *, registry: Registry | None = None, **options: Any
) -> Callable[[_F], _F]:
    """Decorate the function that emits ``name``, registering the type there.

    The record's ``emitted_from`` is the decorated function. The options are those of
    :meth:`Registry.register`; the function is returned unchanged.
    """

    def decorate(func: _F) -> _F:
        target = registry if registry is not None else _DEFAULT
        target.register(name, description, **{"emitted_from": func, **options})
        return func

    return decorate
