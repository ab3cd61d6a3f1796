"""What tests share to run ``python -m streaq`` children and to clean a queue's keys.

Children import streaq from this source tree even when it is not installed in the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

import streaq

SRC = str(Path(streaq.__file__).resolve().parent.parent)


def delete_queue_keys(redis_url: str, queue_name: str) -> None:
    """Delete every key of ``queue_name`` (``SCAN MATCH streaq:{<queue>}:*`` then ``DEL``)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"streaq:{{{queue_name}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def child_env(**extra: str) -> dict[str, str]:
    """The environment of ``python -m streaq`` children: this one, streaq's source first on
    ``PYTHONPATH``, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [SRC, env.get("PYTHONPATH", "")] if p)
    env.update(extra)
    return env


def streaq_command(
    cwd: Path,
    *args: str,
    timeout: float = 30,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streaq *args`` in ``cwd`` and wait for it (output captured as text)."""
    return subprocess.run(
        [sys.executable, "-m", "streaq", *args],
        cwd=cwd,
        env=child_env() if env is None else env,
        input=stdin,
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
