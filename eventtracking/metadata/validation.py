"""Checking emitted events against their documented types: ``off``, ``warn``, ``strict``.

::

    from eventtracking import metadata

    metadata.set_validation(tracker, "warn")     # or "strict" in test suites

The modes (``off``, the default, costs ``emit`` nothing; ``warn`` counts, logs and
delivers; ``strict`` raises :class:`~eventtracking.exceptions.ValidationError` into the
caller and does not deliver), the findings, the record id put in
``context['eventtracking_type']`` and the records sent to ``send_metadata`` are
described in ``docs/metadata.rst``. A definition that cannot be compiled at all is
refused when it is registered.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from eventtracking._util.options import check_count
from eventtracking._util.ratelimit import RateLimitedLogger
from eventtracking._util.stats import FastCounter
from eventtracking.exceptions import ImproperlyConfigured, ValidationError
from eventtracking.metadata._findings import Finding, never
from eventtracking.metadata._jsonform import json_size
from eventtracking.metadata._plans import (
    Plan,
    add_reference,
    message,
    no_findings,
    sampled,
    unregistered,
)
from eventtracking.metadata.definitions import Definition
from eventtracking.metadata.registry import MODES, Registry, get_registry
from eventtracking.typing import Event

__all__ = [
    "FINDINGS",
    "MODES",
    "Validator",
    "configure",
    "set_validation",
]

LOG = logging.getLogger("eventtracking.metadata")

#: Every kind of finding, in the order the documentation lists them.
FINDINGS = (
    "unregistered_type",
    "missing_field",
    "extra_field",
    "wrong_type",
    "invalid_value",
    "unserialisable_value",
    "oversized_event",
    "invalid_schema",
)

#: In ``warn`` mode, values of undocumented shape (``any`` fields, objects without
#: documented keys, undocumented keys, undocumented events) are walked, to find values
#: without a JSON form, in the first event of each name and then one in this many.
#: ``strict`` walks every event.
DEEP_EVERY = 64

#: Event names whose plan is cached at most; past this the cache starts afresh.
MAX_PLANS = 10_000

#: Longer event names are checked with a plan built for the event and then dropped: a
#: cached plan would keep the name's text alive, and names may come from outside.
MAX_CACHED_NAME_LENGTH = 1024

#: Seconds between two warnings about the same event name (every finding is counted).
LOG_INTERVAL = 60.0


class Validator:
    """The tracker hook that references, publishes and checks documented events.

    Install it with :func:`set_validation` rather than by hand. ``mode`` is the
    tracker's default; ``types`` maps event names (or prefixes ending in ``*``) to a
    mode and wins over the registry's per-type modes, which win over ``mode``.
    ``annotate`` (default: on unless everything is off) adds the reference to each
    registered event. ``max_event_size`` (characters of JSON) turns on the size check.
    """

    def __init__(
        self,
        tracker: Any,
        mode: str = "warn",
        *,
        registry: Registry | None = None,
        types: Mapping[str, str] | None = None,
        annotate: bool | None = None,
        max_event_size: int | None = None,
    ) -> None:
        _check_mode(mode, "mode")
        overrides = dict(types or {})
        for name, value in overrides.items():
            _check_mode(value, f"types[{name!r}]")
        check_count("max_event_size", max_event_size, or_none="or None")
        self.tracker = tracker
        self.mode = mode
        self.registry = registry if registry is not None else get_registry()
        self.annotate = mode != "off" if annotate is None else bool(annotate)
        self.max_event_size = max_event_size
        self._exact = {k: v for k, v in overrides.items() if not k.endswith("*")}
        # Longest prefix first, so the most specific pattern wins.
        self._prefixes = sorted(
            ((k[:-1], v) for k, v in overrides.items() if k.endswith("*")),
            key=lambda item: -len(item[0]),
        )
        self._plans: dict[Any, Plan] = {}
        self._published: set[str] = set()
        # Lock-free counters: a warn-mode finding must not cost a lock per event.
        self._invalid = FastCounter()
        self._published_count = FastCounter()
        self._errors = FastCounter()
        self._findings: dict[str, FastCounter] = {}
        self._log = RateLimitedLogger(LOG)
        self._publish_lock = threading.Lock()
        self.registry.subscribe(self)

    def registry_changed(self) -> None:
        """Forget what was derived from the registry; it calls this after each change.

        Called under the registry's lock: it only drops the plans.
        """
        self._plans = {}

    # -- the hook ---------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Check ``event`` in place; raise ValidationError only in strict mode."""
        # The fast path: one dict lookup, the reference from a cache, one compiled test.
        try:
            plan = self._plans.get(event["name"])
            if plan is None:
                plan = self._plan(event["name"])
            if plan.ref is not None:
                context = event["context"]
                annotated = plan.annotated
                if annotated[0] is context:
                    event["context"] = annotated[1]
                else:
                    event["context"] = add_reference(plan, context)
            check = plan.check
            if check is not None and not check(event["data"]):
                findings = plan.diagnose(event["data"])
                if findings:
                    self._report(plan, findings)
            if plan.size_limit is not None:
                self._check_size(plan, event)
        except ValidationError:
            raise
        except Exception:
            self._errors.incr()
            self._log.error(
                "error",
                "Validating event %r failed; it is delivered unchecked",
                event.get("name"),
                exc_info=True,
            )

    def _plan(self, name: Any) -> Plan:
        plans = self._plans  # see registry_changed: a stale plan lands in a dropped dict
        if len(plans) >= MAX_PLANS:
            # Names with ids in them would grow the cache without end: start afresh.
            plans = self._plans = {}
        registry = self.registry
        definition = registry.current(name) if isinstance(name, str) else None
        mode = self.mode_for(name)
        ref = definition.id if definition is not None and self.annotate else None
        check: Callable[[Any], bool] | None
        shallow: Callable[[Any], bool] | None = None
        diagnose: Callable[[Any], list[Finding]]
        if mode == "off":
            check, diagnose = None, no_findings
        elif definition is None:
            check, diagnose = never, unregistered(name, 1 if mode == "strict" else DEEP_EVERY)
        else:
            try:
                # Compiled once per definition, when it was registered.
                check, shallow, diagnose = definition.checks
            except ValueError as exc:
                # Only a definition built outside a registry gets here: report it as a
                # finding, once per plan, rather than failing every emit.
                finding = Finding("invalid_schema", "schema", f"{definition.name!r}: {exc}")
                check, diagnose = never, (lambda data: [finding])
        if mode == "warn" and shallow is not None and check is not None:
            check = sampled(shallow, check, DEEP_EVERY)
        size_limit = self.max_event_size if mode != "off" else None
        plan = Plan(name, mode, definition, ref, check, diagnose, size_limit)
        # Plans are built at the first event of a name (and after registry changes), so
        # records reach the backends before the first event that refers to them.
        self._publish_contexts()
        if definition is not None:
            self._send(definition)
        if isinstance(name, str) and len(name) > MAX_CACHED_NAME_LENGTH:
            plan.cached = False
        else:
            plans[name] = plan
        return plan

    def mode_for(self, name: Any) -> str:
        """The mode that applies to events called ``name``."""
        if isinstance(name, str):
            mode = self._exact.get(name)
            if mode is not None:
                return mode
            for prefix, value in self._prefixes:
                if name.startswith(prefix):
                    return value
            mode = self.registry.validation_mode(name)
            if mode is not None:
                return mode
        return self.mode

    # -- records ----------------------------------------------------------------------

    def _publish_contexts(self) -> None:
        for definition in self.registry.context_types():
            if definition.id not in self._published:
                self._send(definition)

    def _send(self, definition: Definition) -> None:
        with self._publish_lock:
            if definition.id in self._published:
                return
            self._published.add(definition.id)
        self._published_count.incr()
        send = getattr(self.tracker.routing_backend, "send_metadata", None)
        if callable(send):
            send(definition.record)

    # -- findings ---------------------------------------------------------------------

    def _report(self, plan: Plan, findings: list[Finding]) -> None:
        self._invalid.incr()
        for finding in findings:
            counter = self._findings.get(finding.kind)
            if counter is None:
                with self._publish_lock:
                    counter = self._findings.setdefault(finding.kind, FastCounter())
            counter.incr()
        if plan.mode == "strict":
            error = ValidationError(message(plan, findings))
            error.findings = findings  # type: ignore[attr-defined]
            error.event_name = plan.name  # type: ignore[attr-defined]
            raise error
        if not plan.cached:
            # Overlong names share one rate-limited line; the counters have them all.
            self._log.warning("overlong names", "%s", message(plan, findings))
            return
        # One line per event name and LOG_INTERVAL; the counters have every finding.
        now = time.monotonic()
        if now < plan.log_after:
            plan.suppressed += 1
            return
        plan.log_after = now + LOG_INTERVAL
        held, plan.suppressed = plan.suppressed, 0
        suffix = f" ({held} more such events since the last warning)" if held else ""
        LOG.warning("%s%s", message(plan, findings), suffix)

    def _check_size(self, plan: Plan, event: Event) -> None:
        limit = plan.size_limit
        size = json_size(event)
        if limit is not None and size > limit:
            finding = Finding(
                "oversized_event",
                "event",
                f"the event is {size} characters of JSON, over max_event_size={limit}",
            )
            self._report(plan, [finding])

    def stats(self) -> dict[str, Any]:
        """``mode``, ``invalid_events``, ``findings`` by kind, ``published`` records and
        internal ``errors``."""
        findings = {kind: counter.value for kind, counter in list(self._findings.items())}
        return {
            "mode": self.mode,
            "invalid_events": self._invalid.value,
            "findings": findings,
            "published": self._published_count.value,
            "errors": self._errors.value,
        }


def _check_mode(mode: Any, what: str) -> None:
    if mode not in MODES:
        msg = f"Validation {what} is {mode!r}; use one of {', '.join(MODES)}."
        raise ImproperlyConfigured(msg)


# -- installing -----------------------------------------------------------------------


def set_validation(tracker: Any, mode: str = "warn", **options: Any) -> Validator | None:
    """Set how ``tracker`` checks events against the registry; return the validator.

    ``options`` are the keyword options of :class:`Validator`: ``registry``, ``types``,
    ``annotate`` and ``max_event_size``. With ``mode='off'``, no per-type ``types``
    other than off and no ``annotate``, the tracker's validator is removed (None is
    returned), so emitting costs nothing extra. Per-type modes set in the registry only
    apply while a validator is set. Raises ImproperlyConfigured for a bad option value
    and TypeError for an unknown option.
    """
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        msg = (
            f"set_validation() got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"the options are {', '.join(sorted(_OPTIONS))}."
        )
        raise TypeError(msg)
    types = options.get("types")
    if (
        mode == "off"
        and not options.get("annotate")
        and all(v == "off" for v in (types or {}).values())
    ):
        _check_mode(mode, "mode")
        tracker.validator = None
        return None
    validator = Validator(tracker, mode, **options)
    tracker.validator = validator
    return validator


#: The keyword options of Validator, which set_validation passes on.
_OPTIONS = frozenset(
    name
    for name, parameter in inspect.signature(Validator).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY
)


_SETTING_KEYS = ("MODE", "TYPES", "ANNOTATE", "MAX_EVENT_SIZE", "EVENT_TYPES")


def configure(
    tracker: Any, setting: Any, *, registry: Registry | None = None, name: str = "setting"
) -> Validator | None:
    """Apply a validation setting, such as Django's ``EVENT_TRACKING_VALIDATION``.

    ``setting`` is None or a mode (``'off'``, ``'warn'``, ``'strict'``), or a mapping
    with ``MODE``, ``TYPES`` (name or ``prefix*`` -> mode), ``ANNOTATE``,
    ``MAX_EVENT_SIZE`` and ``EVENT_TYPES`` (definitions to load first: a mapping in the
    file format, a file path, or a list of these). ``name`` is used in error messages.
    """
    if setting is None:
        setting = "off"
    if isinstance(setting, str):
        if setting not in MODES:
            msg = f"{name} is {setting!r}; use one of {', '.join(MODES)}, or a dict."
            raise ImproperlyConfigured(msg)
        return set_validation(tracker, setting, registry=registry)
    if not isinstance(setting, Mapping):
        msg = f"{name} must be a mode ({', '.join(MODES)}) or a dict, got {setting!r}."
        raise ImproperlyConfigured(msg)
    unknown = set(setting) - set(_SETTING_KEYS)
    if unknown:
        msg = f"{name} has unknown keys {sorted(unknown)}; use {', '.join(_SETTING_KEYS)}."
        raise ImproperlyConfigured(msg)
    sources = setting.get("EVENT_TYPES")
    if sources is not None:
        from eventtracking.metadata.loading import load

        load(sources, registry=registry)
    mode = setting.get("MODE", "warn")
    if mode not in MODES:
        msg = f"{name}['MODE'] is {mode!r}; use one of {', '.join(MODES)}."
        raise ImproperlyConfigured(msg)
    return set_validation(
        tracker,
        mode,
        registry=registry,
        types=setting.get("TYPES"),
        annotate=setting.get("ANNOTATE"),
        max_event_size=setting.get("MAX_EVENT_SIZE"),
    )
