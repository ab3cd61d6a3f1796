"""The "first hour" walkthrough (``docs/first-hour.rst``) works as written: its module saved as
``shop.py``, its console commands run in order against the real Redis, and every output line the
page shows is printed (``<...>`` matches what differs from run to run)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._support import DOCS

PAGE = (DOCS / "first-hour.rst").read_text(encoding="utf-8")
URL_LITERAL = 'redis_url="redis://localhost:6379"'
#: the worker process' own lines, shown in the page without a ``$`` command before them
STOP_SECTION = "7. Stop the worker"


def _blocks(language: str, text: str = PAGE) -> list[list[str]]:
    """The lines of every ``.. code-block:: <language>`` of ``text``, dedented."""
    blocks = []
    pattern = rf"\.\. code-block:: {language}\n\n((?:   .*\n|\n)+)"
    for match in re.finditer(pattern, text):
        lines = [line[3:] for line in match.group(1).rstrip("\n").splitlines()]
        blocks.append(lines)
    return blocks


def _commands() -> list[tuple[str, list[str]]]:
    """Each ``$ command`` of the page before the stop section, with the lines it should print."""
    steps: list[tuple[str, list[str]]] = []
    for block in _blocks("console", PAGE.split(STOP_SECTION)[0]):
        for line in block:
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif line.strip():
                steps[-1][1].append(line)
    return steps


def _pattern(shown: str, queue: str) -> re.Pattern[str]:
    """A shown line as a pattern: ``<...>`` matches anything, runs of spaces any spacing."""
    shown = shown.replace("queue shop", f"queue {queue}")
    parts = re.split(r"<[^>]*>", " ".join(shown.split()))
    return re.compile(".+?".join(re.escape(part) for part in parts))


def _assert_printed(shown: list[str], printed: str, queue: str, what: str) -> None:
    lines = [" ".join(line.split()) for line in printed.splitlines()]
    for expected in shown:
        pattern = _pattern(expected, queue)
        assert any(pattern.fullmatch(line) for line in lines), (what, expected, printed)


def _wait_for(path: Path, needle: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8")
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in the worker's log:\n{path.read_text()}")


def test_the_page_has_the_steps() -> None:
    [module] = _blocks("python")
    assert URL_LITERAL in "\n".join(module)
    commands = [command for command, _ in _commands()]
    assert commands[0].startswith("streaq run shop:worker")
    assert {command.split()[1] for command in commands} >= {"run", "check", "enqueue", "info"}


@pytest.mark.slow
def test_first_hour_as_written(tmp_path: Path, redis_url: str, queue_name: str) -> None:
    [module] = _blocks("python")
    source = "\n".join(module).replace(URL_LITERAL, f"redis_url={redis_url!r}")
    (tmp_path / "shop.py").write_text(source.replace('"shop"', repr(queue_name)))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("STREAQ_TEST_BACKEND", None)
    [(run, banner), *steps] = _commands()
    log = tmp_path / "worker.log"
    deadline = time.monotonic() + 60
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streaq", *shlex.split(run)[1:]],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        # the banner is one record; its last line is the cron jobs
        text = _wait_for(log, "cron jobs", deadline)
        # the page's URL is the default one; the test's Redis may be another
        banner = [line.replace("redis://localhost:6379", redis_url) for line in banner]
        _assert_printed(banner, text, queue_name, run)
        for command, shown in steps:
            done = subprocess.run(
                [sys.executable, "-m", "streaq", *shlex.split(command)[1:]],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            failing = any(line.startswith("streaq: error:") for line in shown)
            assert done.returncode == (1 if failing else 0), (command, done.stderr)
            _assert_printed(shown, done.stdout + done.stderr, queue_name, command)
        # the enqueued task ran: its finish line is in the worker's log
        _wait_for(log, "← 3", deadline)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=30) == 0
        [stopped] = [block for block in _blocks("console") if "shutting down" in block[0]]
        _assert_printed(stopped, log.read_text(encoding="utf-8"), queue_name, "Ctrl-C")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
