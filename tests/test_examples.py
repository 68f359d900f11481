"""The README's example runs as written and prints what the README shows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_json_lines() -> list[dict]:
    text = (ROOT / "README.rst").read_text()
    block = text.split(".. code-block:: json", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() == "":
            if lines:
                break
            continue
        if not line.startswith("    "):
            break
        if line.lstrip().startswith(":"):  # a directive option, such as :class:
            continue
        lines.append(json.loads(line))
    return lines


def _run_example() -> list[dict]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "readme_example.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _without_timestamp(event: dict) -> dict:
    return {key: value for key, value in event.items() if key != "timestamp"}


def test_readme_example_prints_the_events_the_readme_shows():
    """Running the example prints the README's three events, timestamps aside."""
    shown = _readme_json_lines()
    printed = _run_example()
    assert len(shown) == 3
    assert [_without_timestamp(e) for e in printed] == [_without_timestamp(e) for e in shown]


def test_the_readme_example_ends_with_nested_data_back_in_the_outer_context():
    """As in the README this project was created from, the last event (``address.create``,
    emitted after the ``with`` block) is back in the outer context and carries nested
    data, which schemaless storage keeps as given."""
    shown = _readme_json_lines()
    last = shown[-1]
    assert last["name"] == "address.create"
    assert last["context"] == shown[0]["context"] != shown[1]["context"]
    assert isinstance(last["data"]["address"], dict)


def test_readme_example_stamps_each_event_with_the_current_utc_time():
    """Each printed timestamp is an ISO 8601 UTC time taken while the example ran."""
    before = datetime.now().astimezone()
    printed = _run_example()
    after = datetime.now().astimezone()
    for event in printed:
        assert re.search(r"\+00:00$", event["timestamp"])
        stamp = datetime.fromisoformat(event["timestamp"])
        assert before - timedelta(seconds=1) <= stamp <= after
    stamps = [datetime.fromisoformat(e["timestamp"]) for e in printed]
    assert stamps == sorted(stamps)


def test_readme_example_code_matches_the_example_script():
    """The code in the README is the code the example script runs, line for line."""
    text = (ROOT / "README.rst").read_text()
    block = text.split(".. code-block:: python", 1)[1].split("\n\n", 1)[1]
    readme_code = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        readme_code.append(line[4:])
    readme_lines = [line for line in readme_code if line.strip()]
    script = (ROOT / "examples" / "readme_example.py").read_text()
    body = script.split("from eventtracking import tracker\n", 1)[1]
    script_lines = [line[4:] for line in body.splitlines() if line.strip()]
    assert readme_lines[0] == "from eventtracking import tracker"
    assert script_lines[: len(readme_lines) - 1] == readme_lines[1:]


def test_the_celery_demo_stores_the_readme_events_through_a_worker() -> None:
    """examples/celery_demo.py starts Redis, SecantusDB and a worker, sends the README's
    events through AsyncRoutingBackend, prints the four documents the worker stored,
    and cleans up after itself."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "celery_demo.py")],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        cwd=ROOT / "examples",
    )
    if result.stdout.startswith("Skipping the Celery demo"):
        import pytest

        pytest.skip(result.stdout.strip())
    documents = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [d["name"] for d in documents] == ["navigation.request"] * 2 + ["address.create"]
    assert [d["data"].get("url", "")[-1:] for d in documents] == ["1", "2", ""]
    assert all(d["timestamp"].endswith("+00:00") for d in documents)
    assert f"published={len(documents)} in 1 message(s)" in result.stdout
    delivered = rf'delivered_total\{{backend="async",side="worker"\}} {len(documents)}\.0'
    assert re.search(delivered, result.stdout)
    assert "deleted their directory" in result.stdout
    workdir = re.search(r"data in (\S+)/redis", result.stdout)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists()


def _readme_first_python_block() -> str:
    """The README's first python code block, exactly as a reader would copy it."""
    text = (ROOT / "README.rst").read_text()
    block = text.split(".. code-block:: python", 1)[1].split("\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip() + "\n"


#: Every package an extra brings; the README's first example must need none of them.
OPTIONAL = (
    "pymongo", "bson", "django", "fastjsonschema", "yaml", "celery", "kombu",
    "openedx_events", "edx_event_bus_redis", "segment", "analytics", "orjson",
)  # fmt: skip


def test_readme_first_block_runs_verbatim_with_only_the_core(tmp_path: Path) -> None:
    """The README's first code block, copied into a file and run where no extra can be
    imported, prints the three events the README shows."""
    example = tmp_path / "example.py"
    example.write_text(_readme_first_python_block())
    blocker = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in OPTIONAL)
    (tmp_path / "sitecustomize.py").write_text(blocker)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    blocked = subprocess.run(
        [sys.executable, "-c", "import django"], capture_output=True, timeout=60, env=env
    )
    assert blocked.returncode != 0, "the extras are still importable"
    result = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=str(tmp_path),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    shown = _readme_json_lines()
    assert [_without_timestamp(e) for e in printed] == [_without_timestamp(e) for e in shown]
    assert result.stderr == ""


def test_catalog_demo_introduces_its_expected_warning_before_it_appears(tmp_path: Path) -> None:
    """In the demo's combined output, the sentence announcing the 'not registered'
    warning comes right before the warning itself."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "catalog_demo.py"), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    (warning,) = [i for i, line in enumerate(lines) if line.startswith("Event 'newsletter.signup'")]
    assert lines[warning - 1].endswith("the next line is that expected warning.")


def test_readme_example_says_what_it_runs_on_standard_error_only() -> None:
    """The example's introduction goes to standard error, so standard output is only the
    events, one JSON line each."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "readme_example.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "fallback tracker" in result.stderr
    assert len([json.loads(line) for line in result.stdout.splitlines()]) == 3
