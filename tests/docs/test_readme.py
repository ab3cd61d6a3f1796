"""The README's quickstart works as written: saved as ``tasks.py``, a ``streaq run tasks:worker``
process runs what ``python tasks.py`` enqueues, and the printed results are the ones shown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ._support import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
REDIS_LITERAL = 'Worker(redis_url="redis://localhost:6379"'


def python_blocks() -> list[str]:
    """The README's Python code blocks."""
    return re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def test_the_first_lines_are_the_two_commands() -> None:
    """A newcomer's two commands: the main job end to end, then the whole test suite."""
    first = re.search(r"```bash\n(.*?)```", README, re.DOTALL)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands == [
        "pip install -e . && python examples/quickstart.py",
        "pip install nox uv && nox",
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "\npip install nox uv && nox\n" in ci


@pytest.mark.slow
def test_quickstart_runs_as_written(tmp_path: Path, redis_url: str, queue_name: str) -> None:
    [quickstart] = python_blocks()
    assert REDIS_LITERAL in quickstart
    # the test's Redis and a queue of its own; nothing else changes
    source = quickstart.replace(
        REDIS_LITERAL, f"Worker(redis_url={redis_url!r}, queue_name={queue_name!r}"
    )
    (tmp_path / "tasks.py").write_text(source, encoding="utf-8")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("STREAQ_TEST_BACKEND", None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "streaq", "run", "tasks:worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        producer = subprocess.run(
            [sys.executable, "tasks.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _, errors = worker.communicate(timeout=30)
    assert producer.returncode == 0, producer.stderr
    lines = producer.stdout.splitlines()
    assert lines[0] == "2.0"
    assert lines[1].startswith("Invoice(customer='ACME', total=")
    assert worker.returncode == 0, errors.decode()
