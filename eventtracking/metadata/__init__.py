"""Event documentation and metadata: document event types, store the documentation
beside the events, check events against it, and publish a catalogue.

Its parts, :mod:`~eventtracking.metadata.registry` (:func:`register`, :func:`emits`),
:mod:`~eventtracking.metadata.loading`, :mod:`~eventtracking.metadata.validation`,
:mod:`~eventtracking.metadata.discovery` and :mod:`~eventtracking.metadata.catalog`, are
described in ``docs/metadata.rst``, which also gives the design.
"""

from eventtracking._util.metadata_api import METADATA_EVENT_NAME, REFERENCE_KEY
from eventtracking.metadata import registry as _registry
from eventtracking.metadata.definitions import (
    FIELD_TYPES,
    ContextType,
    Definition,
    EventType,
    FieldSpec,
    Location,
)
from eventtracking.metadata.loading import load
from eventtracking.metadata.registry import (
    MODES,
    Registry,
    emits,
    get_registry,
    register,
    register_context,
)
from eventtracking.metadata.validation import FINDINGS, Validator, configure, set_validation

__all__ = [
    "FIELD_TYPES",
    "FINDINGS",
    "METADATA_EVENT_NAME",
    "MODES",
    "REFERENCE_KEY",
    "ContextType",
    "Definition",
    "EventType",
    "FieldSpec",
    "Location",
    "Registry",
    "Validator",
    "configure",
    "emits",
    "get_registry",
    "load",
    "publish",
    "register",
    "register_context",
    "set_validation",
]


def publish(tracker: object, registry: Registry | None = None) -> int:
    """Send every version of every definition in ``registry`` to ``tracker``'s backends.

    Useful at start-up, so that storage holds the documentation of types not emitted
    yet. Backends receive each record once however often this is called. Returns the
    number of records handed to the router.
    """
    source = registry if registry is not None else get_registry()
    send = getattr(getattr(tracker, "routing_backend", None), "send_metadata", None)
    if not callable(send):
        msg = f"{tracker!r} has no routing_backend with send_metadata; pass a Tracker."
        raise TypeError(msg)
    records = [definition.record for definition in source.all_versions()]
    for record in records:
        send(record)
    return len(records)


# Registry.load reads through the loader, which imports the registry: the package,
# above both, hands it over.
_registry.set_loader(load)
