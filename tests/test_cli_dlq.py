"""``streaq dlq list|replay|purge module:worker``, run as ``python -m streaq`` in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from streaq import Worker

MODULE = """
from streaq import Worker

worker = Worker(redis_url={url!r}, queue_name={queue!r}, handle_signals=True)
"""


@pytest.fixture
def project(tmp_path: Path, redis_url: str, queue_name: str) -> Iterator[Path]:
    """A directory with ``dlqapp.py`` defining ``worker`` on the test's queue; keys cleaned up."""
    (tmp_path / "dlqapp.py").write_text(MODULE.format(url=redis_url, queue=queue_name))
    yield tmp_path
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"streaq:{{{queue_name}}}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def streaq(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streaq *args`` in ``project`` (60 s at most)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "streaq", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _enqueue_unknown(redis_url: str, queue_name: str, count: int) -> list[str]:
    async def main() -> list[str]:
        async with Worker(redis_url=redis_url, queue_name=queue_name) as producer:
            return [(await producer.enqueue_unsafe("missing", n)).id for n in range(count)]

    return anyio.run(main)


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_dlq_list_replay_purge(project: Path, redis_url: str, queue_name: str) -> None:
    ids = _enqueue_unknown(redis_url, queue_name, 3)
    # a worker without the function dead-letters all three
    ran = streaq(project, "run", "dlqapp:worker", "--burst")
    assert ran.returncode == 0, ran.stderr

    letters = _json(streaq(project, "dlq", "list", "dlqapp:worker", "--json"))
    # dead-lettered in the order the worker got to them, listed oldest first
    assert sorted(d["task_id"] for d in letters) == sorted(ids)
    ids = [d["task_id"] for d in letters]
    assert {d["fn_name"] for d in letters} == {"missing"}
    assert all(d["reason"].startswith("unknown function") for d in letters)
    assert all(d["tries"] == 1 for d in letters)

    text = streaq(project, "dlq", "list", "dlqapp:worker", "--limit", "2")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("2 dead letters")
    assert ids[0] in text.stdout
    assert ids[2] not in text.stdout
    only = _json(streaq(project, "dlq", "list", "dlqapp:worker", "--id", ids[1], "--json"))
    assert [d["task_id"] for d in only] == [ids[1]]

    replayed = _json(streaq(project, "dlq", "replay", "dlqapp:worker", "--id", ids[1], "--json"))
    assert replayed == {"replayed": [ids[1]]}
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xlen(f"streaq:{{{queue_name}}}:s:normal") == 1
        assert client.hexists(f"streaq:{{{queue_name}}}:t", ids[1])
    finally:
        client.close()

    purged = streaq(project, "dlq", "purge", "dlqapp:worker", "--id", ids[0])
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == "purged 1 dead letter"
    assert _json(streaq(project, "dlq", "purge", "dlqapp:worker", "--json")) == {"purged": 1}
    assert _json(streaq(project, "dlq", "list", "dlqapp:worker", "--json")) == []


def test_dlq_bad_worker_path(project: Path) -> None:
    proc = streaq(project, "dlq", "list", "nosuchmodule:worker")
    assert proc.returncode == 1
    assert "error" in proc.stderr


def test_dlq_replay_of_an_unknown_id_fails(project: Path, redis_url: str, queue_name: str) -> None:
    [task_id] = _enqueue_unknown(redis_url, queue_name, 1)
    ran = streaq(project, "run", "dlqapp:worker", "--burst")
    assert ran.returncode == 0, ran.stderr
    proc = streaq(project, "dlq", "replay", "dlqapp:worker", "--id", "nosuchid")
    assert proc.returncode == 1
    assert proc.stdout == "replayed 0 tasks\n"
    assert proc.stderr == f"streaq: error: no dead letter with id nosuchid in queue {queue_name}\n"
    # the known one is replayed, the unknown one still reported
    both = streaq(project, "dlq", "replay", "dlqapp:worker", "--id", task_id, "--id", "nosuchid")
    assert both.returncode == 1
    assert both.stdout == f"replayed 1 task\n{task_id}\n"
    assert "no dead letter with id nosuchid" in both.stderr
