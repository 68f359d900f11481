"""Event documentation: the README's events documented, checked, stored and catalogued.

``make demo`` runs this after the README example. It

1. registers the README's event type ``navigation.request`` and its ``outer`` context,
   plus ``address.create``, an event with nested data;
2. turns validation on (``warn``) for a tracker whose LoggerBackend writes JSON lines to
   ``build/demo/metadata/events.jsonl``;
3. runs the README example (whose last event saves an address) and emits one
   undocumented event;
4. writes the catalogue (Markdown, JSON, HTML) next to the events;
5. picks a stored event and finds the definition that was in force when it was emitted.

Pass another output directory as the first argument.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from readme_example import run_readme_example

from eventtracking import metadata
from eventtracking.backends.logger import LoggerBackend
from eventtracking.metadata.catalog import write_catalog
from eventtracking.tracker import Tracker, register_tracker

ROOT = Path(__file__).resolve().parent.parent
ADDRESS = {"name": "foo", "address": {"postal_code": "90210", "country": "United States"}}


def register_readme_events(registry: metadata.Registry) -> None:
    """Document the README's events and context in ``registry``."""
    registry.register(
        "navigation.request",
        "A page of the site was requested.",
        fields={"url": {"type": "string", "description": "The full URL of the page."}},
        owner="web",
        emitted_from=run_readme_example,
        example={"url": "http://www.edx.org/some/path/1"},
    )
    registry.register(
        "address.create",
        "A postal address was saved.",
        fields={
            "name": {"type": "string", "description": "The name the address is saved under."},
            "address": {
                "description": "The address itself.",
                "fields": {
                    "postal_code": {"type": "string", "description": "Postal or ZIP code."},
                    "country": {"type": "string", "description": "The country, as entered."},
                },
            },
        },
        owner="accounts",
        emitted_from=run_readme_example,
        example=ADDRESS,
    )
    registry.register_context(
        "outer",
        "Entered around the README's events: who they are about.",
        fields={"user_id": {"type": "integer", "description": "The user's numeric id."}},
        emitted_from=run_readme_example,
    )


def _events_to_file(path: Path) -> Tracker:
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("eventtracking.demo.metadata")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    tracker = Tracker({"file": LoggerBackend(name=logger.name, max_event_size=None)})
    register_tracker(tracker)
    return tracker


def say(text: str) -> None:
    """Tell the reader what the demo does, before it does it (flushed: the warnings go
    to standard error, and must not overtake it)."""
    print(text, flush=True)


def main(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    events_path = output / "events.jsonl"
    registry = metadata.get_registry()
    register_readme_events(registry)

    tracker = _events_to_file(events_path)
    metadata.set_validation(tracker, "warn")
    say(
        f"\nDocumented the README's events; a tracker with validation 'warn' writes them "
        f"as JSON lines to {events_path}. Running the README example."
    )
    run_readme_example()
    say(
        "Now emitting 'newsletter.signup', which nobody documented. With validation "
        "'warn' it is still stored, and a warning says its type is not registered: the "
        "next line is that expected warning."
    )
    tracker.emit("newsletter.signup", {"email_hash": "5d41402a"})  # not documented
    tracker.close()
    for handler in logging.getLogger("eventtracking.demo.metadata").handlers:
        handler.close()

    written = write_catalog(output, registry, title="README example events")

    lines = [json.loads(line) for line in events_path.read_text().splitlines()]
    records = {
        line["data"]["id"]: line["data"]
        for line in lines
        if line["name"] == metadata.METADATA_EVENT_NAME
    }
    events = [line for line in lines if line["name"] != metadata.METADATA_EVENT_NAME]
    print(f"Stored {len(events)} events and {len(records)} documentation records in {events_path}")
    print("Catalogue written next to them:")
    for name, path in written.items():
        print(f"  {name:8} {path}")
    findings = tracker.stats()["validation"]["findings"]
    print(f"Validation (warn) findings: {json.dumps(findings, sort_keys=True)}")

    stored = next(event for event in events if event["name"] == "address.create")
    record = records[stored["context"][metadata.REFERENCE_KEY]]
    fields = ", ".join(record["fields"])
    where = ", ".join(f"{loc['module']}.{loc['function']}" for loc in record["emitted_from"])
    print(
        f"The stored {stored['name']!r} event of {stored['timestamp']} is documented by "
        f"version {record['version']} (record {record['id']}): {record['description']} "
        f"Fields: {fields}. Emitted from {where}."
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "demo" / "metadata")
