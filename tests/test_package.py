"""Tests for the package as a whole: it imports with only the core, and its public names."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

import eventtracking

#: Optional dependencies (extras mongo, django, schema) that the core must not need.
OPTIONAL = ("pymongo", "bson", "gridfs", "django", "fastjsonschema", "yaml")

CORE_MODULES = [
    "eventtracking",
    "eventtracking.tracker",
    "eventtracking.locator",
    "eventtracking.exceptions",
    "eventtracking.typing",
    "eventtracking.routing",
    "eventtracking.backends",
    "eventtracking.backends.routing",
    "eventtracking.backends.logger",
    "eventtracking.backends.memory",
    "eventtracking.processors",
    "eventtracking.processors.exceptions",
    "eventtracking.processors.whitelist",
    "eventtracking.processors.regex_filter",
]

CORE_ONLY_SCRIPT = textwrap.dedent(
    """
    import importlib, json, logging, sys

    BLOCKED = set(sys.argv[1].split(","))

    class BlockOptional:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, BlockOptional())
    try:
        import pymongo  # noqa: F401
    except ImportError:
        blocker_works = True
    else:
        blocker_works = False

    import eventtracking
    for name in sys.argv[2].split(","):
        importlib.import_module(name)

    from eventtracking.backends.logger import LoggerBackend
    from eventtracking.backends.memory import InMemoryBackend

    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("core.only")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    memory = InMemoryBackend()
    tracker = eventtracking.Tracker(
        {"log": LoggerBackend(name="core.only"), "memory": memory}
    )
    eventtracking.register_tracker(tracker)
    with tracker.context({"user_id": 1}):
        eventtracking.emit("core.event", {"ok": True})
    print(json.dumps({
        "blocker_works": blocker_works,
        "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED),
        "lines": lines,
        "stored": len(memory.events),
    }))
    """
)


def test_import_works_with_only_the_core(tmp_path: Path) -> None:
    """With every optional dependency unimportable, `import eventtracking` and the core
    modules load, and an event goes through; no optional module is imported."""
    result = subprocess.run(
        [sys.executable, "-c", CORE_ONLY_SCRIPT, ",".join(OPTIONAL), ",".join(CORE_MODULES)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["blocker_works"] is True
    assert report["loaded"] == []
    assert report["stored"] == 1
    [line] = report["lines"]
    event = json.loads(line)
    assert (event["name"], event["context"], event["data"]) == (
        "core.event",
        {"user_id": 1},
        {"ok": True},
    )


def test_the_tracker_needs_no_backend_to_exist(tmp_path: Path) -> None:
    """Importing the tracker and building one imports the router of the core and no
    module of eventtracking.backends."""
    script = (
        "import sys\n"
        "from eventtracking.tracker import Tracker\n"
        "Tracker()\n"
        "print(sorted(m for m in sys.modules if m.startswith('eventtracking.backends')))\n"
        "print('eventtracking.routing' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_the_4x_router_path_is_the_core_router() -> None:
    """eventtracking.backends.routing, the path 4.x code and settings name, holds the
    very class and logger of eventtracking.routing."""
    from eventtracking import routing
    from eventtracking.backends import routing as routing_4x

    assert routing_4x.RoutingBackend is routing.RoutingBackend
    assert routing_4x.LOG is routing.LOG
    assert routing.LOG.name == "eventtracking.backends.routing"


def ruff_sort_key(name: str) -> tuple[int, str]:
    """The isort-style order ruff (RUF022) keeps __all__ in: SCREAMING_CASE, CamelCase, rest."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def modules_with_all() -> list[ModuleType]:
    modules = [importlib.import_module(name) for name in CORE_MODULES]
    return [module for module in modules if hasattr(module, "__all__")]


@pytest.mark.parametrize("module", modules_with_all(), ids=lambda module: module.__name__)
def test_all_is_sorted_unique_and_valid(module: ModuleType) -> None:
    """Every __all__ is sorted (ruff's isort style), has no duplicates, and names only
    attributes that exist."""
    names = list(module.__all__)
    assert names == sorted(names, key=ruff_sort_key)
    assert len(names) == len(set(names))
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == []


def test_public_modules_declare_all() -> None:
    """Each core module with public names declares __all__ (package markers excepted)."""
    without = [
        module.__name__
        for module in (importlib.import_module(name) for name in CORE_MODULES)
        if not hasattr(module, "__all__") and module.__name__ not in PACKAGE_MARKERS
    ]
    assert without == []


PACKAGE_MARKERS = {"eventtracking.backends", "eventtracking.processors"}


def test_version_and_typed_marker() -> None:
    """The package has a version string and ships py.typed for type checkers."""
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+)?", eventtracking.__version__)
    assert (Path(eventtracking.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "eventtracking.tracker",
            [
                "UNKNOWN_EVENT_TYPE",
                "DEFAULT_TRACKER_NAME",
                "TRACKERS",
                "Tracker",
                "register_tracker",
                "get_tracker",
                "emit",
            ],
        ),
        ("eventtracking.locator", ["DefaultContextLocator", "ThreadLocalContextLocator"]),
        ("eventtracking.backends.routing", ["RoutingBackend"]),
        (
            "eventtracking.backends.logger",
            ["MAX_EVENT_SIZE", "LoggerBackend", "DateTimeJSONEncoder"],
        ),
        (
            "eventtracking.processors.exceptions",
            ["EventEmissionExit", "NoTransformerImplemented", "NoBackendEnabled"],
        ),
        ("eventtracking.exceptions", ["ImproperlyConfigured"]),
        ("eventtracking.processors.whitelist", ["NameWhitelistProcessor"]),
        ("eventtracking.processors.regex_filter", ["ALLOWLIST", "BLOCKLIST", "RegexFilter"]),
    ],
)
def test_4x_import_paths_exist(module: str, names: list[str]) -> None:
    """Every name 4.x code imports is still at its 4.x module path."""
    loaded = importlib.import_module(module)
    assert [name for name in names if not hasattr(loaded, name)] == []


def test_4x_tracker_methods_exist() -> None:
    """Tracker keeps the 4.x methods and properties."""
    expected = [
        "located_context",
        "backends",
        "processors",
        "get_backend",
        "emit",
        "resolve_context",
        "enter_context",
        "exit_context",
        "context",
    ]
    assert [name for name in expected if not hasattr(eventtracking.Tracker, name)] == []
