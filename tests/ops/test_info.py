"""``streaq info``: a subprocess reads a real queue with queued, running and delayed tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from streaq import Worker
from streaq.utils import now_ms

from ._support import free_port, streaq_command

pytestmark = pytest.mark.anyio

MODULE = """
from streaq import Worker

worker = Worker(
    redis_url={redis_url!r},
    queue_name={queue!r},
    priorities=["low", "high"],
    idle_timeout=2,
    anyio_backend={backend!r},
)


@worker.task
async def sleeper(n: int) -> int:
    return n


@worker.cron("0 4 * * *")
async def nightly() -> None:
    pass


not_a_worker = 42
"""


@pytest.fixture
def project(tmp_path: Path, redis_url: str, clean_queue: str, backend_name: str) -> Path:
    """A directory holding ``ops_app.py``, whose ``worker`` serves the test's queue.

    ``streaq info`` runs on the worker's ``anyio_backend``: the test's backend.
    """
    source = MODULE.format(redis_url=redis_url, queue=clean_queue, backend=backend_name)
    (tmp_path / "ops_app.py").write_text(source)
    return tmp_path


async def _info(project: Path, *args: str) -> Any:
    done = await anyio.to_thread.run_sync(
        lambda: streaq_command(project, "info", "ops_app:worker", *args)
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


async def test_info_of_a_busy_queue(project: Path, redis_url: str, clean_queue: str) -> None:
    started = anyio.Event()
    release = anyio.Event()
    worker: Worker[None] = Worker(
        redis_url=redis_url,
        queue_name=clean_queue,
        priorities=["low", "high"],
        idle_timeout=2,
        concurrency=1,
        prefetch=0,
        handle_signals=False,
    )

    @worker.task
    async def sleeper(n: int) -> int:
        started.set()
        await release.wait()
        return n

    async with worker:
        # one dead letter, as the server-side library writes them
        await worker._client.redis.execute(
            "XADD", worker.keys.prefix + "dlq", "*", "i", "dead", "f", "gone", "reason", "test"
        )
        for n in range(3):
            await sleeper.enqueue(n).start(priority="low")
        await sleeper.enqueue(9).start(priority="high")
        await sleeper.enqueue(7).start(delay=3600)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        with anyio.fail_after(10):
            await started.wait()
        # the first heartbeat comes idle_timeout / 4 after the start
        await anyio.sleep(0.8)
        before = now_ms()
        data = await _info(project, "--json")
        text = await _info(project)
        release.set()
        tg.cancel_scope.cancel()

    prios = {p["name"]: p for p in data["priorities"]}
    # the high-priority task is read first and runs; prefetch=0 claims nothing more
    assert prios["high"] == {
        "name": "high",
        "queued": 0,
        "running": 1,
        "lag_ms": None,
        "prefetched": 0,
    }
    assert prios["low"]["queued"] == 3
    assert prios["low"]["running"] == 0
    assert 500 <= prios["low"]["lag_ms"] < 30_000
    assert (data["queued"], data["running"], data["delayed"], data["waiting"]) == (3, 1, 1, 0)
    assert data["lag_ms"] == prios["low"]["lag_ms"]
    beats = {w["id"]: w for w in data["workers"]}
    assert beats[worker.id]["alive"] is True
    assert data["workers_alive"] == 1
    assert data["dead_letters"] == 1
    [cron] = data["crons"]
    assert cron["name"] == "nightly"
    assert cron["crontab"] == "0 4 * * *"
    assert before < cron["next_fire_ms"] <= before + 86_400_000

    assert f"queue {clean_queue}" in text
    assert "priority" in text
    assert worker.id in text
    assert "workers alive: 1 of 1 seen" in text
    assert "dead letters 1" in text
    assert "nightly" in text


async def test_info_of_a_queue_never_used(project: Path) -> None:
    data = await _info(project, "--json")
    assert data["priorities"] == [
        {"name": "low", "queued": 0, "running": 0, "lag_ms": None, "prefetched": 0},
        {"name": "high", "queued": 0, "running": 0, "lag_ms": None, "prefetched": 0},
    ]
    assert (data["delayed"], data["waiting"], data["workers"], data["lag_ms"]) == (0, 0, [], None)
    assert data["dead_letters"] == 0


async def test_info_reports_a_bad_worker_path(project: Path) -> None:
    for path, message in [
        ("ops_app:missing", "missing"),
        ("ops_app:not_a_worker", "is not a streaq Worker"),
    ]:
        done = await anyio.to_thread.run_sync(streaq_command, project, "info", path)
        assert done.returncode == 1
        assert message in done.stderr


async def test_info_reports_redis_unreachable(
    tmp_path: Path, clean_queue: str, backend_name: str
) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    source = MODULE.format(redis_url=url, queue=clean_queue, backend=backend_name)
    (tmp_path / "ops_app.py").write_text(source)
    done = await anyio.to_thread.run_sync(
        lambda: streaq_command(tmp_path, "info", "ops_app:worker")
    )
    assert done.returncode == 1
    assert f"cannot read queue {clean_queue!r}" in done.stderr
