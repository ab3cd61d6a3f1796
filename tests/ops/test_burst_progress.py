"""``streaq run --burst`` progress: a bar on a terminal (a pty here), plain log lines otherwise."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from streaq import Worker
from streaq._cli._progress import ERASE_LINE, SharedTerminal, render_progress

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

LOG_LINE = re.compile(r"\[(INFO|DEBUG|WARNING|ERROR)\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d: \S")
BAR_LINE = re.compile(r"\[[#.]{30}\] \d+/\d+ done, \d+ left, \d+ unsuccessful")


def test_render_progress() -> None:
    assert render_progress(0, 0, 0, width=4) == "[####] 0/0 done, 0 left, 0 unsuccessful"
    assert render_progress(1, 3, 1, width=4) == "[#...] 1/4 done, 3 left, 1 unsuccessful"


def screen(output: str) -> list[str]:
    """The lines a terminal shows for ``output``: ``\\r`` returns, ``ESC [K`` erases the rest."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    n = 0
    while n < len(output):
        if output.startswith("\x1b[K", n):
            del line[col:]
            n += 3
            continue
        char = output[n]
        n += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            lines.append("".join(line))
            line, col = [], 0
        else:
            line[col : col + 1] = [char]
            col += 1
    if line:
        lines.append("".join(line))
    return lines


def test_shared_terminal_keeps_the_bar_below_every_line() -> None:
    out = io.StringIO()
    terminal = SharedTerminal(out)
    terminal.write("[INFO] first\n")
    terminal.draw("[#...] 1/4")
    terminal.write("[INFO] second\n")
    # print() writes the newline apart: no bar between the text and its newline
    terminal.write("printed")
    terminal.draw("[##..] 2/4")
    terminal.write("\n")
    terminal.close_bar()
    terminal.draw("[###.] 3/4")  # after close_bar: never drawn
    assert screen(out.getvalue()) == ["[INFO] first", "[INFO] second", "printed", "[##..] 2/4"]
    assert ERASE_LINE in out.getvalue()


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
    shown = screen(output.replace("\r\n", "\n"))
    # the bar was drawn while the tasks ran, and stays as the last line
    assert output.count(ERASE_LINE + "[") > 1, output
    assert BAR_LINE.fullmatch(shown[-1]), shown
    assert shown[-1].startswith("[" + "#" * 30 + "] 5/5 done")
    # every other line is a whole log line (or the banner's indented rows): never a bar with
    # log text run into it
    for line in shown[:-1]:
        assert LOG_LINE.match(line) or line.startswith("  "), shown
        assert "done," not in line, shown
    assert sum("task nap ■" in line for line in shown) == 5
    async with producer:
        assert await producer.queue_size() == 0
