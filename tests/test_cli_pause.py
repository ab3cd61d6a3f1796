"""``streaq pause|resume module:worker [--task NAME]``, run as ``python -m streaq``."""

from __future__ import annotations

from pathlib import Path

import redis
from test_cli_dlq import streaq

MODULE = """
from streaq import Worker

worker = Worker(redis_url={url!r}, queue_name={queue!r})


@worker.task
async def report() -> None: ...
"""


def test_pause_and_resume_from_the_command_line(
    tmp_path: Path, redis_url: str, queue_name: str
) -> None:
    (tmp_path / "pauseapp.py").write_text(MODULE.format(url=redis_url, queue=queue_name))
    paused = streaq(tmp_path, "pause", "pauseapp:worker", "--task", "report")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == "task report paused\n"
    again = streaq(tmp_path, "pause", "pauseapp:worker", "--task", "report")
    assert again.stdout == "task report was paused already\n"
    queue = streaq(tmp_path, "pause", "pauseapp:worker")
    assert queue.stdout == f"queue {queue_name} paused\n"
    info = streaq(tmp_path, "info", "pauseapp:worker")
    assert "PAUSED" in info.stdout
    for args in (("--task", "report"), ()):
        resumed = streaq(tmp_path, "resume", "pauseapp:worker", *args)
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed" in resumed.stdout
    unknown = streaq(tmp_path, "pause", "pauseapp:worker", "--task", "nope")
    assert unknown.returncode == 1
    assert "no task named 'nope'" in unknown.stderr
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*client.keys(f"streaq:{{{queue_name}}}:*"))
    finally:
        client.close()


def test_scale_from_the_command_line(tmp_path: Path, redis_url: str, queue_name: str) -> None:
    (tmp_path / "scaleapp.py").write_text(MODULE.format(url=redis_url, queue=queue_name))
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    channel = f"streaq:{{{queue_name}}}:scale"
    try:
        pubsub.subscribe(channel)
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        scaled = streaq(tmp_path, "scale", "scaleapp:worker", "3")
        assert scaled.returncode == 0, scaled.stderr
        assert scaled.stdout == f"the workers of queue {queue_name} run 3 tasks at once now\n"
        # what running workers hear, and what one that was not subscribed reads afterwards
        heard = pubsub.get_message(timeout=5)
        assert heard is not None
        assert heard["data"].startswith(b"3:")
        assert client.get(f"streaq:{{{queue_name}}}:cc") == heard["data"]
        refused = streaq(tmp_path, "scale", "scaleapp:worker", "0")
        assert refused.returncode != 0
    finally:
        pubsub.close()
        client.delete(*client.keys(f"streaq:{{{queue_name}}}:*"))
        client.close()
