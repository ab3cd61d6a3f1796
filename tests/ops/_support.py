"""Helpers of the operations suite: worker modules for the CLI, key cleanup, free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import redis

import streaq

# children import streaq from the source tree even when it is not installed in the interpreter
SRC = str(Path(streaq.__file__).resolve().parent.parent)


def delete_queue_keys(redis_url: str, queue_name: str) -> None:
    """Delete every key of ``queue_name``."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"streaq:{{{queue_name}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The environment for ``python -m streaq`` children."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [SRC, env.get("PYTHONPATH", "")] if p)
    return env


def streaq_command(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streaq *args`` in ``cwd`` and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "streaq", *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn_streaq(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``python -m streaq *args`` in ``cwd`` (stderr captured, stdout discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "streaq", *args],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
