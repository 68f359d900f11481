"""``examples/catalog_demo.py``: the README's events documented, stored and catalogued."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from eventtracking.metadata import METADATA_EVENT_NAME, REFERENCE_KEY, Registry, load

ROOT = Path(__file__).resolve().parent.parent


def test_demo_stores_records_before_events_and_writes_the_catalogue_beside_them(
    tmp_path: Path,
) -> None:
    """The demo's output folder holds the events, their records and the catalogue."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "catalog_demo.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"in {tmp_path / 'events.jsonl'}" in done.stdout
    assert "not registered" in done.stderr  # the undocumented event, warned about
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    seen: set[str] = set()
    for line in lines:
        if line["name"] == METADATA_EVENT_NAME:
            seen.add(line["data"]["id"])
        elif line["name"] in ("navigation.request", "address.create"):
            # Every documented event comes after the record it refers to.
            assert line["context"][REFERENCE_KEY] in seen
        else:
            assert REFERENCE_KEY not in line["context"]
    names = [line["name"] for line in lines if line["name"] != METADATA_EVENT_NAME]
    assert names == ["navigation.request"] * 2 + ["address.create", "newsletter.signup"]
    catalog = json.loads((tmp_path / "catalog.json").read_text())
    assert {r["id"] for r in catalog["event_types"] + catalog["context_types"]} == seen
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "catalog.html",
        "catalog.json",
        "catalog.md",
        "events.jsonl",
    ]


def test_docs_example_catalogue_matches_the_demo() -> None:
    """docs/readme_events.yaml documents exactly what the demo registers in code."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import catalog_demo
    finally:
        sys.path.remove(str(ROOT / "examples"))
    in_code, in_docs = Registry(), Registry()
    catalog_demo.register_readme_events(in_code)
    load(ROOT / "docs" / "readme_events.yaml", registry=in_docs)
    assert [d.record for d in in_docs.all_versions()] == [d.record for d in in_code.all_versions()]
