"""``streaq run --burst`` progress: a bar on a terminal (a pty here), plain log lines otherwise."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from streaq import Worker
from streaq._cli._progress import render_progress

from ._support import child_env

MODULE = """
import anyio
from streaq import Worker

worker = Worker(redis_url={redis_url!r}, queue_name={queue!r}, concurrency=1)


@worker.task
async def nap(n: int) -> int:
    await anyio.sleep(0.3)
    return n
"""


def test_render_progress() -> None:
    assert render_progress(0, 0, 0, width=4) == "[####] 0/0 done, 0 left, 0 unsuccessful"
    assert render_progress(1, 3, 1, width=4) == "[#...] 1/4 done, 3 left, 1 unsuccessful"


def _run_on_a_terminal(cwd: Path) -> tuple[int, str]:
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "streaq", "run", "burst_app:worker", "--burst"],
            cwd=cwd,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            timeout=30,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal side is closed: everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        return done.returncode, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)


@pytest.mark.anyio
async def test_burst_shows_a_progress_bar_on_a_terminal(
    tmp_path: Path, redis_url: str, clean_queue: str
) -> None:
    (tmp_path / "burst_app.py").write_text(MODULE.format(redis_url=redis_url, queue=clean_queue))
    producer: Worker[None] = Worker(redis_url=redis_url, queue_name=clean_queue)

    @producer.task(name="nap")
    async def nap(n: int) -> int:
        return n

    async with producer:
        for n in range(5):
            await nap.enqueue(n)
    code, output = await anyio.to_thread.run_sync(_run_on_a_terminal, tmp_path)
    assert code == 0, output
    assert "\r[" in output
    assert "done," in output
    async with producer:
        assert await producer.queue_size() == 0
