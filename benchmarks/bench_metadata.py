"""Metadata suite: what event documentation and validation cost (ours only).

4.0.2 has no such feature, so every entry but the first runs on our side only; the
first is the plain emit of both packages, for reference. Every emit uses the core
suite's event: three contexts (ten keys) and data with five top-level fields.

* ``off``: a registry documents the event, validation is off: the tracker has no
  validator, so this should equal ``plain``;
* ``annotate``: no checks, but each event gets its record id in its context;
* ``warn5``: warn, the five fields documented flat (``player`` as an object whose keys
  are not documented, ``watched`` as an array): the goal is at most ~1 us over ``plain``;
* ``warn10``: warn, ``player``'s four keys and the type of ``watched``'s items
  documented too (ten checks and an array scan);
* ``strict5``: strict, as ``warn5``;
* ``unregistered``: warn for an undocumented event (counted; logged once a minute);
* ``register``: registering 1,000 new event types of five fields, per type;
* ``catalog``: the Markdown, JSON and HTML catalogue of 1,000 types, per type.

The last two report microseconds per type: multiply by 1,000 for the whole job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from _harness import Entry, Suite
from bench_core import DATA, NAME, NullWorkload, fingerprint

FLAT = {
    "video_id": {"type": "string", "description": "The video."},
    "position": {"type": "number", "description": "Seconds from the start."},
    "speed": {"type": "number", "description": "Playback rate."},
    "player": {"type": "object", "description": "The player's settings."},
    "watched": {"type": "array", "description": "Positions reached."},
}
NESTED = {
    **FLAT,
    "player": {
        "description": "The player's settings.",
        "fields": {
            "width": "integer",
            "height": "integer",
            "captions": "boolean",
            "quality": "string",
        },
    },
    "watched": {"type": "array", "items": "integer", "description": "Positions reached."},
}
TYPES = 1000


def _expect(what: str, got: int, expected: int) -> None:
    if got != expected:
        msg = f"{what}: {got}, expected {expected}"
        raise AssertionError(msg)


class ValidatedWorkload(NullWorkload):
    """The core suite's null workload with a registry and a validation mode."""

    def __init__(
        self,
        mode: str,
        fields: dict[str, Any] | None = FLAT,
        *,
        name: str = NAME,
        annotate: bool | None = None,
    ) -> None:
        from eventtracking import metadata

        super().__init__()
        self.name = name
        self.registry = metadata.Registry()
        if fields is not None:
            self.registry.register(NAME, "A video was played.", fields=fields)
        self.validator = metadata.set_validation(
            self.tracker, mode, registry=self.registry, annotate=annotate
        )
        # Undocumented events are logged once a minute: keep that line off the output.
        logging.getLogger("eventtracking.metadata").disabled = True

    def run(self, n: int) -> None:
        emit, name = self.tracker.emit, self.name
        for _ in range(n):
            emit(name, DATA)

    def check(self, expected: int) -> dict[str, Any]:
        from eventtracking.metadata import REFERENCE_KEY

        _expect("null backend", self.backend.count, expected)
        event = self.backend.last
        assert event is not None
        stats = self.tracker.stats().get("validation", {})
        result: dict[str, Any] = {"findings": stats.get("findings", {})}
        if self.name != NAME:
            _expect("unregistered_type findings", result["findings"]["unregistered_type"], expected)
        elif self.validator is not None and self.validator.mode != "off":
            _expect("findings", sum(result["findings"].values()), 0)
        reference = event["context"].get(REFERENCE_KEY)
        result["referenced"] = reference is not None
        plain = dict(
            event, context={k: v for k, v in event["context"].items() if k != REFERENCE_KEY}
        )
        result.update(fingerprint(plain))
        return result


def build_off(_setup: dict[str, Any]) -> ValidatedWorkload:
    workload = ValidatedWorkload("off")
    assert workload.tracker.validator is None
    return workload


def build_annotate(_setup: dict[str, Any]) -> ValidatedWorkload:
    return ValidatedWorkload("off", annotate=True)


def build_warn5(_setup: dict[str, Any]) -> ValidatedWorkload:
    return ValidatedWorkload("warn")


def build_warn10(_setup: dict[str, Any]) -> ValidatedWorkload:
    return ValidatedWorkload("warn", NESTED)


def build_strict5(_setup: dict[str, Any]) -> ValidatedWorkload:
    return ValidatedWorkload("strict")


def build_unregistered(_setup: dict[str, Any]) -> ValidatedWorkload:
    return ValidatedWorkload("warn", name="org.example.undocumented")


def build_plain(_setup: dict[str, Any]) -> NullWorkload:
    return NullWorkload()


class RegisterWorkload:
    """Register new five-field event types: a fresh registry per 1,000 types."""

    def __init__(self) -> None:
        from eventtracking import metadata

        self.metadata = metadata
        self.registry = metadata.Registry()
        self.count = 0
        self.versions = 0

    def run(self, n: int) -> None:
        register = self.registry.register
        for _ in range(n):
            if self.count % TYPES == 0:
                self.versions += len(self.registry.all_versions())
                self.registry = self.metadata.Registry()
                register = self.registry.register
            register(f"org.example.type{self.count % TYPES}", "A documented type.", fields=FLAT)
            self.count += 1

    def check(self, expected: int) -> dict[str, Any]:
        _expect("types registered", self.count, expected)
        _expect("versions kept", self.versions + len(self.registry.all_versions()), expected)
        return {"types": TYPES}


class CatalogWorkload:
    """Write the three-format catalogue of 1,000 types; one catalogue per 1,000 'events'."""

    def __init__(self) -> None:
        from eventtracking import metadata
        from eventtracking.metadata.catalog import write_catalog

        self.write = write_catalog
        self.registry = metadata.Registry()
        for n in range(TYPES):
            self.registry.register(
                f"org.example.type{n:04d}",
                f"Documented type number {n}.",
                fields=NESTED,
                owner="benchmarks",
                emitted_from="benchmarks.bench_metadata:run",
            )
        self.directory = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
        self.pending = 0
        self.catalogues = 0

    def run(self, n: int) -> None:
        self.pending += n
        while self.pending >= TYPES:
            self.write(self.directory, self.registry)
            self.pending -= TYPES
            self.catalogues += 1

    def check(self, expected: int) -> dict[str, Any]:
        _expect("types catalogued", self.catalogues * TYPES + self.pending, expected)
        catalog = json.loads((self.directory / "catalog.json").read_text())
        _expect("types in the JSON catalogue", len(catalog["event_types"]), TYPES)
        html = (self.directory / "catalog.html").read_text()
        _expect("cards in the HTML page", html.count('<article class="card'), TYPES)
        return {
            "types": TYPES,
            "json_sha256": hashlib.sha256(json.dumps(catalog).encode()).hexdigest()[:16],
        }

    def close(self) -> None:
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()


def build_register(_setup: dict[str, Any]) -> RegisterWorkload:
    return RegisterWorkload()


def build_catalog(_setup: dict[str, Any]) -> CatalogWorkload:
    return CatalogWorkload()


OURS = ("ours",)

SUITE = Suite(
    name="metadata",
    title="Event documentation: validation per emit, registration and catalogue per type",
    entries=[
        Entry("plain", "plain emit, no registry (reference)", build_plain),
        Entry("off", "documented, validation off", build_off, sides=OURS),
        Entry("annotate", "record id in context, no checks", build_annotate, sides=OURS),
        Entry("warn5", "warn, 5 fields documented", build_warn5, sides=OURS),
        Entry("warn10", "warn, 10 fields + array items", build_warn10, sides=OURS),
        Entry("strict5", "strict, 5 fields documented", build_strict5, sides=OURS),
        Entry("unregistered", "warn, undocumented event", build_unregistered, sides=OURS),
        Entry(
            "register",
            "register a type (us/type; x1000 = 1,000 types)",
            build_register,
            sides=OURS,
            iterations=TYPES,
        ),
        Entry(
            "catalog",
            "md+json+html catalogue (us/type; x1000 = 1,000)",
            build_catalog,
            sides=OURS,
            iterations=TYPES,
        ),
    ],
)

if __name__ == "__main__":
    raise SystemExit(SUITE.main())
