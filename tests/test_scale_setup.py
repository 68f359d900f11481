"""docs/scale.rst's set-up, copied top to bottom, gives a working web side and worker.

The test does what an operator reading the page does: it makes a project with
``django-admin startproject mysite``, adds each code block of the page whose caption
names a file to that file, starts the worker with the page's own command, runs the
page's checks, and finds the test event in the file the worker writes.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from redis_support import free_port

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "scale.rst"

pytestmark = pytest.mark.slow

_CAPTIONED = re.compile(
    r"^(?P<indent> *)\.\. code-block:: (?P<language>\w+)\n"
    r"(?P=indent) +:caption: (?P<caption>.+)\n\n"
    r"(?P<body>(?:(?P=indent) {4,}.*\n|\n)+)",
    re.MULTILINE,
)


def captioned_blocks(text: str) -> list[tuple[str, str]]:
    """Each code block with a caption: (caption, its code, dedented), in page order."""
    blocks = []
    for match in _CAPTIONED.finditer(text):
        lines = match.group("body").rstrip("\n").splitlines()
        margin = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
        code = "\n".join(line[margin:] for line in lines) + "\n"
        blocks.append((match.group("caption").strip(), code))
    return blocks


def shell_lines(blocks: list[tuple[str, str]]) -> list[str]:
    """Every command of the page's ``shell`` blocks, in order."""
    return [
        line.strip()
        for caption, code in blocks
        if caption == "shell"
        for line in code.splitlines()
        if line.strip()
    ]


def test_the_page_has_the_blocks_the_test_builds_from() -> None:
    """The set-up names the install line, the three files, and the worker command."""
    blocks = captioned_blocks(PAGE.read_text())
    files = [caption for caption, _ in blocks if caption != "shell"]
    assert files == ["mysite/celery.py", "mysite/__init__.py", "mysite/settings.py"]
    commands = shell_lines(blocks)
    assert "pip install 'event-tracking[django,celery]'" in commands
    assert any(command.startswith("celery -A mysite worker") for command in commands)


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{shlex.join(command)}:\n{output}"
    return output


def _python_command(line: str) -> list[str]:
    """A command of the page, run with this interpreter (``celery ...`` is ``python -m
    celery ...``; ``python manage.py ...`` keeps its arguments)."""
    words = shlex.split(line)
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return [sys.executable, "-m", *words]


def _serves_a_page(project: Path, env: dict[str, str], web_lines: list[str]) -> None:
    """Start the page's web process (on a free port rather than 8000, which another
    process of this machine may hold) and wait until it serves the login page."""
    (web_line,) = web_lines
    port = free_port()
    command = [*_python_command(web_line), "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    web = subprocess.Popen(
        command,
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert web.poll() is None, web.stderr.read().decode() if web.stderr else ""
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/admin/login/", timeout=5
                ) as response:
                    assert response.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, "the web process did not answer"
                time.sleep(0.1)
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(30)


def test_the_page_builds_a_web_side_and_a_worker_that_deliver_an_event(
    tmp_path: Path, redis_url: str
) -> None:
    """Built from the page alone, the project passes ``manage.py check``, its worker
    starts without a deprecation warning, and the event a process with the web side's
    settings emits reaches the worker's LoggerBackend, through Redis."""
    blocks = captioned_blocks(PAGE.read_text())
    project = tmp_path / "project"
    project.mkdir()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(project),
        "CELERY_BROKER_URL": redis_url,
        "EVENTTRACKING_SPOOL_DIR": str(tmp_path / "spool"),
    }
    _run([sys.executable, "-m", "django", "startproject", "mysite", str(project)], tmp_path, env)
    for caption, code in blocks:
        if caption == "shell":
            continue
        with (project / caption).open("a") as target:
            target.write("\n" + code)

    commands = shell_lines(blocks)
    (worker_line,) = [line for line in commands if line.startswith("celery ")]
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            _python_command(worker_line),
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while " ready." not in log_path.read_text(errors="replace"):
            assert worker.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        outputs = [
            _run(_python_command(line), project, env)
            for line in commands
            if line.startswith("python manage.py")
        ]
        assert "System check identified no issues" in outputs[0]
        _serves_a_page(project, env, [line for line in commands if line.startswith("gunicorn ")])
        delivered = project / "tracking.log"
        deadline = time.monotonic() + 60
        while "mysite.hello" not in (delivered.read_text() if delivered.exists() else ""):
            assert worker.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
    worker_log = log_path.read_text(errors="replace")
    assert "eventtracking.tasks.send_events" in worker_log
    assert "deprecat" not in worker_log.lower(), worker_log
    assert "Traceback" not in worker_log, worker_log
