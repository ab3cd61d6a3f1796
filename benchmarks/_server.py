"""A private, throwaway ``redis-server`` for a benchmark: never the Redis the tests use."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def private_redis() -> Iterator[str]:
    """Start ``redis-server`` (no persistence) on a free port; yield its URL; stop it on exit.

    :raises SystemExit: when ``redis-server`` is not on ``PATH`` or does not answer in 10 s
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="streaq-bench-redis-") as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_pong(port)
            yield f"redis://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_pong(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("the benchmark's redis-server did not start")
