"""Run a script on a small, real file system that fills up: a tmpfs of a chosen size.

The tmpfs is mounted in a private mount namespace made by ``unshare``, so it needs no
root: a user namespace (``--map-root-user``) gives the script the right to mount, and
the mount disappears with the script. Where neither root nor user namespaces are
available, the tests that need a full disk are skipped, saying why.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_MOUNT_AND_RUN = 'mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$2" && shift 2 && exec "$@"'


def run_on_small_disk(
    tmp_path: Path, script: str, size: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``sys.argv[1]`` naming the root of a fresh tmpfs of ``size``
    (``"24m"``). Skips the test when no tmpfs can be mounted here."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("a full disk needs util-linux's unshare, to mount a small tmpfs")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    command = [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", _MOUNT_AND_RUN]
    probe = subprocess.run(
        [*command, "sh", "1m", str(disk), "true"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(
            "cannot mount a small tmpfs for a full disk (needs root or unprivileged user "
            f"namespaces): {probe.stderr.strip()}"
        )
    return subprocess.run(
        [*command, "sh", size, str(disk), sys.executable, "-c", script, str(disk)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
