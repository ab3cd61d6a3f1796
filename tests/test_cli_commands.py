"""``streaq check|enqueue|purge``, ``run``'s options and log formats, read-only commands and
one-line failures: the real CLI (``python -m streaq`` subprocesses) against the real Redis.

Each test writes an ``app.py`` whose worker serves the test's own queue, on the backend the test
runs on, and deletes the queue's keys afterwards.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from children import child_env, streaq_command

from streaq import Worker
from streaq.task import TaskResult
from streaq.types import StreaqCancelled

DEADLINE = 30.0
#: the workers' idle_timeout (s): they beat every 2 s, and are dead 4 s after their last beat
IDLE_TIMEOUT = 8

MODULE = """
import anyio
from streaq import Worker

worker = Worker(
    redis_url={url!r},
    queue_name={queue!r},
    priorities=["low", "high"],
    idle_timeout={idle},
    anyio_backend={backend!r},
)


@worker.task
async def add(a: int, b: int = 0) -> int:
    return a + b


@worker.task
async def hold() -> None:
    await anyio.sleep(3600)


@worker.cron("0 4 * * *")
async def nightly() -> None:
    pass
"""


def cli(project: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``python -m streaq *args`` in ``project`` and wait for it."""
    return streaq_command(project, *args, stdin=stdin, timeout=DEADLINE)


def queue_keys(client: redis.Redis, queue: str) -> set[bytes]:
    """Every key naming the queue (the CLI must not create any elsewhere either)."""
    return set(client.scan_iter(match=f"*{queue}*", count=1000))


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The worker's ``anyio_backend`` in ``app.py``."""
    return str(request.param)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client to look at the keys from outside."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture
def project(
    tmp_path: Path, redis_url: str, queue_name: str, backend: str, client: redis.Redis
) -> Iterator[Path]:
    """A directory holding ``app.py``; the queue's keys deleted afterwards."""
    source = MODULE.format(url=redis_url, queue=queue_name, idle=IDLE_TIMEOUT, backend=backend)
    (tmp_path / "app.py").write_text(source)
    yield tmp_path
    keys = queue_keys(client, queue_name)
    if keys:
        client.delete(*keys)


def start_worker(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streaq", "run", "app:worker", *args],
        cwd=project,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(process: subprocess.Popen[str], pattern: str) -> str:
    """Read the worker's stderr until a line matches ``pattern``; everything read so far."""
    assert process.stderr is not None
    seen = ""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen += line
        if re.search(pattern, line):
            return seen
    process.kill()
    pytest.fail(f"no line matching {pattern!r}; the worker wrote:\n{seen}")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, rest = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        _, rest = process.communicate()
    return rest


# read-only commands


def test_read_only_commands_create_no_keys(
    project: Path, queue_name: str, client: redis.Redis
) -> None:
    assert queue_keys(client, queue_name) == set()
    for args in (
        ["info", "app:worker"],
        ["info", "app:worker", "--json"],
        ["check", "app:worker"],
        ["dlq", "list", "app:worker"],
        ["functions", "list", "app:worker"],
    ):
        done = cli(project, *args)
        assert done.returncode in (0, 1), done.stderr  # check: 1, no worker alive
        assert "error" not in done.stderr, done.stderr
        assert queue_keys(client, queue_name) == set(), args
    # on a queue in use too: the same keys, the same values
    enqueued = cli(project, "enqueue", "app:worker", "add", "--args", "[1, 2]")
    assert enqueued.returncode == 0, enqueued.stderr
    before = {key: client.dump(key) for key in queue_keys(client, queue_name)}
    for args in (["info", "app:worker"], ["check", "app:worker"], ["dlq", "list", "app:worker"]):
        cli(project, *args)
    assert {key: client.dump(key) for key in queue_keys(client, queue_name)} == before


# check and info liveness


def test_check_and_info_follow_the_workers_heartbeat(project: Path, queue_name: str) -> None:
    down = cli(project, "check", "app:worker")
    assert down.returncode == 1
    assert down.stdout.count("\n") == 1
    assert "no worker of this queue is alive" in down.stdout
    assert "WARNING: no worker of this queue is alive" in cli(project, "info", "app:worker").stdout

    worker = start_worker(project)
    try:
        read_until(worker, r"started: queue")
        up = cli(project, "check", "app:worker")
        assert up.returncode == 0, up.stdout + up.stderr
        assert re.fullmatch(
            rf"ok: 1 worker of queue {queue_name} alive, last beat .* ago\n", up.stdout
        )
        info = cli(project, "info", "app:worker")
        assert "workers alive: 1 of 1 seen" in info.stdout
        assert "WARNING" not in info.stdout
        # a crash: no retirement, the heartbeat stays behind
        worker.kill()
        killed = time.monotonic()
        worker.communicate()
        while (dead := cli(project, "check", "app:worker")).returncode == 0:
            assert time.monotonic() - killed < DEADLINE
        # dead after two missed beats, well before idle_timeout from the last beat
        last = re.search(r"\(last beat ([\d.]+) s ago\)", dead.stdout)
        assert last is not None, dead.stdout
        assert 2 * IDLE_TIMEOUT / 4 <= float(last.group(1)) < IDLE_TIMEOUT
        data = json.loads(cli(project, "info", "app:worker", "--json").stdout)
        [beat] = data["workers"]
        assert beat["alive"] is False
        assert data["workers_alive"] == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


# enqueue and purge


def test_enqueue_prints_the_task_id(project: Path, queue_name: str, client: redis.Redis) -> None:
    done = cli(project, "enqueue", "app:worker", "add", "--args", "[1]", "--kwargs", '{"b": 2}')
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", task_id)
    assert client.hexists(f"streaq:{{{queue_name}}}:t", task_id)
    later = cli(project, "enqueue", "app:worker", "add", "--args", "[1]", "--delay", "3600")
    assert later.returncode == 0, later.stderr
    assert client.zscore(f"streaq:{{{queue_name}}}:z", later.stdout.strip()) is not None
    ran = cli(project, "run", "app:worker", "--burst")
    assert ran.returncode == 0, ran.stderr
    assert f"task add ■ {task_id} ← 3" in ran.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no task named 'nope' in app:worker (its tasks: add, hold, nightly)"),
        (["add", "--args", "[1"], "--args is not valid JSON"),
        (["add", "--args", "{}"], "--args must be an array in JSON"),
        (["add", "--kwargs", "[]"], "--kwargs must be an object in JSON"),
        (["add", "--args", "[1, 2, 3]"], "cannot enqueue add: "),
    ],
)
def test_enqueue_refuses_clearly(
    project: Path, queue_name: str, client: redis.Redis, args: list[str], message: str
) -> None:
    done = cli(project, "enqueue", "app:worker", *args)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("streaq: error: ")
    assert message in done.stderr
    assert not client.exists(f"streaq:{{{queue_name}}}:t")


async def _result(redis_url: str, queue_name: str, task_id: str) -> TaskResult[Any]:
    async with Worker(redis_url=redis_url, queue_name=queue_name) as producer:
        return await producer.result_by_id(task_id, timeout=5)


def test_purge_asks_then_removes_what_no_worker_holds(
    project: Path, queue_name: str, client: redis.Redis, redis_url: str
) -> None:
    tasks = f"streaq:{{{queue_name}}}:t"
    worker = start_worker(project, "--concurrency", "1")  # runs 1, prefetches 1
    try:
        read_until(worker, r"started: queue")
        held = cli(project, "enqueue", "app:worker", "hold").stdout.strip()
        read_until(worker, rf"task hold □ {held}")
        prefetched = cli(project, "enqueue", "app:worker", "add", "--args", "[1]").stdout.strip()
        deadline = time.monotonic() + DEADLINE
        while json.loads(cli(project, "info", "app:worker", "--json").stdout)["prefetched"] != 1:
            assert time.monotonic() < deadline, "the worker did not prefetch"
        purgeable = [
            cli(project, "enqueue", "app:worker", *args).stdout.strip()
            for args in (["add", "--args", "[2]"], ["add", "--args", "[3]", "--delay", "3600"])
        ]
        refused = cli(project, "purge", "app:worker", stdin="n\n")
        assert refused.returncode == 1
        question = f"purge 2 tasks of queue {queue_name} (1 queued, 1 delayed, 0 waiting)? [y/N] "
        assert refused.stdout == question
        assert refused.stderr == "streaq: error: nothing purged\n"
        assert client.hlen(tasks) == 4
        purged = cli(project, "purge", "app:worker", stdin="y\n")
        assert purged.returncode == 0, purged.stderr
        assert purged.stdout == f"{question}purged 2 tasks of queue {queue_name}\n"
        # the running and the prefetched task are left alone
        assert set(client.hkeys(tasks)) == {held.encode(), prefetched.encode()}
        assert client.zcard(f"streaq:{{{queue_name}}}:z") == 0
        # each purged task ended with a result, as an aborted one does: its waiters wake
        for task_id in purgeable:
            result = anyio.run(_result, redis_url, queue_name, task_id)
            assert result.success is False
            assert isinstance(result.exception, StreaqCancelled)
            assert "task purged" in str(result.exception)
        none = cli(project, "purge", "app:worker")
        assert none.stdout == f"queue {queue_name} has no task to purge\n"
        assert cli(project, "purge", "app:worker", "--yes").stdout == (
            f"purged 0 tasks of queue {queue_name}\n"
        )
    finally:
        stop(worker)


# run's options and log formats


def test_run_options_and_the_banner(project: Path, queue_name: str, redis_url: str) -> None:
    other = f"{queue_name}-other"
    done = cli(project, "enqueue", "app:worker", "add", "--args", "[1]")
    assert done.returncode == 0
    ran = cli(
        project,
        "run",
        "app:worker",
        "--burst",
        "--concurrency",
        "3",
        "--queue",
        other,
        "--log-level",
        "warning",
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == ""  # WARNING: no banner, no task lines
    ran = cli(project, "run", "app:worker", "--burst", "--concurrency", "3", "--queue", other)
    try:
        assert ran.returncode == 0, ran.stderr
        banner = ran.stderr.split("\n[")[0]
        first = f"started: queue {other}, 3 tasks, concurrency 3, until the queue is empty (burst)"
        assert f"{first}\n" in banner
        assert "prefetch    3, 3 threads for sync tasks" in banner
        assert "priorities  low < high" in banner
        assert "tasks       add, hold" in banner
        assert "cron jobs   nightly (0 4 * * *)" in banner
        assert f"redis       {redis_url}" in banner
        # the other queue was served: the task of the worker's own queue is still there
        assert "task add" not in ran.stderr
    finally:
        with redis.Redis.from_url(redis_url) as client:
            keys = queue_keys(client, other)
            if keys:
                client.delete(*keys)


def test_log_format_json(project: Path, backend: str) -> None:
    task_id = cli(project, "enqueue", "app:worker", "add", "--args", "[2]").stdout.strip()
    ran = cli(project, "run", "app:worker", "--burst", "--log-format", "json")
    assert ran.returncode == 0, ran.stderr
    records = [json.loads(line) for line in ran.stderr.splitlines()]
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert records[0]["level"] == "INFO"
    assert records[0]["logger"] == "streaq"
    assert f"backend     {backend}" in records[0]["message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", records[0]["ts"])
    done = [r for r in records if r.get("task_id") == task_id]
    assert [r["message"].split()[2] for r in done] == ["□", "■"]
    assert {r["task_name"] for r in done} == {"add"}
    assert len({r["worker_id"] for r in done}) == 1


def test_banner_names_uvloop(tmp_path: Path, redis_url: str, queue_name: str) -> None:
    pytest.importorskip("uvloop")
    (tmp_path / "fast.py").write_text(
        "from streaq import Worker\n"
        f"worker = Worker(redis_url={redis_url!r}, queue_name={queue_name!r}, "
        "anyio_kwargs={'use_uvloop': True})\n"
    )
    try:
        ran = cli(tmp_path, "run", "fast:worker", "--burst")
        assert ran.returncode == 0, ran.stderr
        assert "  backend     asyncio+uvloop\n" in ran.stderr
        assert "0 tasks, concurrency 16, until the queue is empty (burst)\n" in ran.stderr
    finally:
        with redis.Redis.from_url(redis_url) as client:
            keys = queue_keys(client, queue_name)
            if keys:
                client.delete(*keys)
