"""Prometheus metrics: outcomes recorded by the middleware, queue metrics read at scrape time,
and the ``streaq run --metrics-port`` endpoint scraped over HTTP."""

from __future__ import annotations

import ipaddress
import signal
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streaq import StreaqRetry, Worker
from streaq.contrib.prometheus import StreaqMetrics

from ._support import free_port, spawn_streaq, streaq_command

pytestmark = pytest.mark.anyio


def _worker(redis_url: str, queue: str) -> Worker[None]:
    return Worker(
        redis_url=redis_url,
        queue_name=queue,
        priorities=["low", "high"],
        idle_timeout=2,
        handle_signals=False,
    )


async def test_task_and_queue_metrics(redis_url: str, clean_queue: str) -> None:
    registry = CollectorRegistry()
    metrics = StreaqMetrics(registry)
    worker = _worker(redis_url, clean_queue)
    started = anyio.Event()

    @worker.task(name="ok")
    async def ok(n: int) -> int:
        return n

    @worker.task(name="boom")
    async def boom() -> None:
        raise ValueError("boom")

    @worker.task(name="flaky")
    async def flaky() -> str:
        if flaky.context.tries == 1:
            raise StreaqRetry("again", delay=0)
        return "done"

    @worker.task(name="slow", timeout=timedelta(milliseconds=200))
    async def slow() -> None:
        await anyio.sleep(10)

    @worker.task(name="blocker")
    async def blocker() -> None:
        started.set()
        await anyio.sleep_forever()

    metrics.instrument(worker)

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        with anyio.fail_after(20):
            for n in range(3):
                assert (await (await ok.enqueue(n)).result()).result == n
            assert not (await (await boom.enqueue()).result()).success
            assert (await (await flaky.enqueue()).result()).result == "done"
            assert not (await (await slow.enqueue()).result()).success
            blocked = await blocker.enqueue()
            await started.wait()
            assert await blocked.abort()
            await ok.enqueue(1).start(delay=3600)
            # a heartbeat comes every idle_timeout / 4
            await anyio.sleep(0.6)
            text = (await anyio.to_thread.run_sync(generate_latest, registry)).decode()
        tg.cancel_scope.cancel()

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"queue": clean_queue, **labels})

    assert sample("streaq_tasks_started_total", function="ok") == 3
    assert sample("streaq_tasks_finished_total", function="ok") == 3
    assert sample("streaq_task_duration_seconds_count", function="ok") == 3
    assert sample("streaq_tasks_failed_total", function="boom") == 1
    assert sample("streaq_tasks_retried_total", function="flaky") == 1
    assert sample("streaq_tasks_finished_total", function="flaky") == 1
    assert sample("streaq_tasks_started_total", function="flaky") == 2
    assert sample("streaq_tasks_failed_total", function="slow") == 1
    assert sample("streaq_tasks_aborted_total", function="blocker") == 1
    assert sample("streaq_tasks_relinquished_total", function="blocker") is None
    assert sample("streaq_tasks_in_progress", function="ok") == 0
    slow_time = sample("streaq_task_duration_seconds_sum", function="slow")
    assert slow_time is not None
    assert 0.15 < slow_time < 2

    wid = worker.id
    assert (
        f'streaq_worker_tasks_total{{outcome="completed",queue="{clean_queue}",worker="{wid}"}} 4.0'
        in text
    )
    assert f'streaq_queue_delayed{{queue="{clean_queue}"}} 1.0' in text
    assert f'streaq_workers_alive{{queue="{clean_queue}"}} 1.0' in text
    for prio in ("low", "high"):
        for state in ("queued", "prefetched", "running"):
            line = (
                f'streaq_queue_depth{{priority="{prio}",queue="{clean_queue}",state="{state}"}} 0.0'
            )
            assert line in text
        assert f'streaq_queue_lag_seconds{{priority="{prio}",queue="{clean_queue}"}} 0.0' in text


MODULE = """
from streaq import Worker

worker = Worker(redis_url={redis_url!r}, queue_name={queue!r}, anyio_backend={backend!r})


@worker.task
async def double(n: int) -> int:
    return 2 * n
"""


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


async def test_metrics_port_endpoint(
    tmp_path: Path, redis_url: str, clean_queue: str, backend_name: str
) -> None:
    source = MODULE.format(redis_url=redis_url, queue=clean_queue, backend=backend_name)
    (tmp_path / "metrics_app.py").write_text(source)
    producer: Worker[None] = Worker(redis_url=redis_url, queue_name=clean_queue)

    @producer.task(name="double")
    async def double(n: int) -> int:
        return 2 * n

    async with producer:
        tasks = [await double.enqueue(n) for n in range(5)]
    port = free_port()
    process = spawn_streaq(tmp_path, "run", "metrics_app:worker", "--metrics-port", str(port))
    finished = f'streaq_tasks_finished_total{{function="double",queue="{clean_queue}"}} 5.0'
    try:
        text = ""
        with anyio.fail_after(20):
            while finished not in text:
                await anyio.sleep(0.1)
                try:
                    text = await anyio.to_thread.run_sync(_scrape, port)
                except (urllib.error.URLError, ConnectionError):
                    assert process.poll() is None, process.stderr
        assert (
            f'streaq_queue_depth{{priority="normal",queue="{clean_queue}",state="queued"}} 0.0'
            in text
        )
        assert "streaq_task_duration_seconds_bucket" in text
        async with producer:
            assert [(await t.result(timeout=5)).result for t in tasks] == [0, 2, 4, 6, 8]
    finally:
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=20)[1]
    assert process.returncode == 0, stderr


async def test_metrics_port_in_use(tmp_path: Path, redis_url: str, clean_queue: str) -> None:
    import socket

    source = MODULE.format(redis_url=redis_url, queue=clean_queue, backend="asyncio")
    (tmp_path / "metrics_app.py").write_text(source)
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = await anyio.to_thread.run_sync(
            lambda: streaq_command(
                tmp_path, "run", "metrics_app:worker", "--metrics-port", str(port)
            )
        )
    assert done.returncode == 1
    assert f"cannot serve metrics on port {port}" in done.stderr


def _listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at ``port``, read from ``/proc/net/tcp``."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1])))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
@pytest.mark.parametrize(
    ("args", "address"), [([], "127.0.0.1"), (["--metrics-addr", "0.0.0.0"], "0.0.0.0")]
)
def test_metrics_endpoint_listens_on_loopback_unless_told(
    tmp_path: Path, redis_url: str, clean_queue: str, args: list[str], address: str
) -> None:
    source = MODULE.format(redis_url=redis_url, queue=clean_queue, backend="asyncio")
    (tmp_path / "metrics_app.py").write_text(source)
    port = free_port()
    process = spawn_streaq(
        tmp_path, "run", "metrics_app:worker", "--metrics-port", str(port), *args
    )
    try:
        deadline = time.monotonic() + 20
        while not _listening_addresses(port):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the metrics endpoint did not start"
            time.sleep(0.05)
        assert _listening_addresses(port) == {address}
        alive = f'streaq_workers_alive{{queue="{clean_queue}"}} 1.0'
        while alive not in _scrape(port):  # the worker runs (and handles SIGTERM)
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert process.returncode == 0


def test_metrics_address_reaches_every_worker_process() -> None:
    from streaq._cli._commands import _build_parser
    from streaq._cli._run import _child_command

    args = _build_parser().parse_args(
        ["run", "app:worker", "--workers", "2", "--metrics-port", "9100", "--metrics-addr", "::"]
    )
    command = _child_command(args, workers=1, port=9101)
    assert command[command.index("--metrics-port") + 1] == "9101"
    assert command[command.index("--metrics-addr") + 1] == "::"
    default = _build_parser().parse_args(["run", "app:worker", "--metrics-port", "9100"])
    assert default.metrics_addr == "127.0.0.1"
