"""The validator's plan for each event name: what to check, and how to say what is wrong.

:class:`~eventtracking.metadata.validation.Validator` builds one :class:`Plan` per
event name (and per change of the registry) and keeps it, so that the emit path does
one dict lookup and one compiled test per event.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventtracking._contextstack import FrozenContext
from eventtracking._util.metadata_api import REFERENCE_KEY
from eventtracking.metadata._findings import Finding, unserialisable_findings
from eventtracking.metadata._jsonform import is_plain
from eventtracking.metadata.definitions import Definition

__all__ = [
    "Plan",
    "add_reference",
    "message",
    "no_findings",
    "sampled",
    "shown",
    "unregistered",
]

#: Characters of an event name quoted in messages.
_SHOWN_NAME_LENGTH = 200


@dataclass(eq=False, slots=True)
class Plan:
    """What to do with events of one name; built once per name and registry change."""

    name: Any
    mode: str
    definition: Definition | None
    ref: str | None
    check: Callable[[Any], bool] | None
    diagnose: Callable[[Any], list[Finding]]
    #: max_event_size when the size is checked for this name, else None.
    size_limit: int | None
    #: (shared context, the same with the reference added): events emitted under the
    #: same contexts share one annotated context, as they share the original.
    annotated: tuple[Any, Any] = (None, None)
    #: When the next warning may be logged, and how many were held back since.
    log_after: float = 0.0
    suppressed: int = 0
    #: Whether the plan is kept for the next events of the name.
    cached: bool = True


def add_reference(plan: Plan, context: Any) -> Any:
    """Add the reference to ``context``: to a copy when it is the shared, read-only one."""
    if type(context) is FrozenContext:
        annotated = FrozenContext(context)
        dict.__setitem__(annotated, REFERENCE_KEY, plan.ref)
        plan.annotated = (context, annotated)
        return annotated
    # A context resolved through a 4.x-style locator is this event's own dict.
    context[REFERENCE_KEY] = plan.ref
    return context


def message(plan: Plan, findings: list[Finding]) -> str:
    """The warning, or the ValidationError's text, for ``findings`` of one event."""
    definition = plan.definition
    if definition is None:
        head = f"Event {shown(plan.name)}"
    else:
        head = f"Event {shown(plan.name)} (version {definition.version}, id {definition.id})"
    details = "; ".join(finding.message for finding in findings)
    if findings[0].kind == "unregistered_type":
        return f"{head}: {details}"
    return (
        f"{head} does not match its documented type: {details}. Fix the emitting code, or "
        "register a new version of the type."
    )


def shown(name: Any) -> str:
    """``repr(name)``, cut to a readable length."""
    text = repr(name)
    if len(text) <= _SHOWN_NAME_LENGTH:
        return text
    return f"{text[:_SHOWN_NAME_LENGTH]}... ({len(text)} characters)"


def no_findings(data: Any) -> list[Finding]:
    """The diagnosis of what is not checked."""
    return []


def sampled(
    shallow: Callable[[Any], bool], deep: Callable[[Any], bool], every: int
) -> Callable[[Any], bool]:
    """``deep`` for the first event and one in ``every``, else ``shallow``."""
    count = itertools.count()

    def check(data: Any) -> bool:
        if next(count) % every:
            return shallow(data)
        return deep(data)

    return check


def unregistered(name: Any, every: int) -> Callable[[Any], list[Finding]]:
    """The diagnosis of an unregistered name: its finding, and in one event of
    ``every`` the values that have no JSON form."""
    text = (
        f"the type {shown(name)} is not registered; document it with "
        f"eventtracking.metadata.register({shown(name)}, ...) or in an event types file, "
        "or turn its validation off"
    )
    finding = Finding("unregistered_type", "name", text)
    count = itertools.count()

    def diagnose(data: Any) -> list[Finding]:
        if next(count) % every or is_plain(data):
            return [finding]
        findings = [finding]
        unserialisable_findings(data, "data", findings)
        return findings

    return diagnose
