"""Packaging: what ``pip`` prints and records when it builds event-tracking."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Build the wheel as ``pip install`` does (an isolated build with the newest
    setuptools); return pip's output and the wheel's METADATA."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    (wheel,) = out.glob("event_tracking-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    return output, metadata


@pytest.mark.slow
def test_building_prints_no_deprecation_warning(built: tuple[str, str]) -> None:
    """Building the package prints no setuptools deprecation (the licence is an SPDX
    expression, without the deprecated classifier) and records the licence."""
    output, metadata = built
    assert "deprecat" not in output.lower(), output
    assert "AGPL-3.0-only" in metadata
    assert "Classifier: License ::" not in metadata


@pytest.mark.slow
def test_the_celery_extra_brings_the_redis_client(built: tuple[str, str]) -> None:
    """``pip install 'event-tracking[celery]'`` installs Celery with its Redis transport,
    the broker docs/scale.rst sets up."""
    _, metadata = built
    requires = [line for line in metadata.splitlines() if 'extra == "celery"' in line]
    assert requires, metadata
    assert all(line.startswith("Requires-Dist: celery[redis]") for line in requires), requires
