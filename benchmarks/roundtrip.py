"""Round-trip benchmark: enqueue → result latency, sequential, alone and under a background load.

Theory of operation
-------------------
Issue 18 asks for enqueue→result p50 ≤ 0.5 ms and p99 ≤ 1.5 ms for sequential round trips, and
p99 ≤ 5 ms while the queue also serves 1,000 tasks/s of other work. This module starts a private
``redis-server`` (never the tests' Redis) and one worker process (``python -m streaq run``,
concurrency 32, per-task log lines off so that terminal output is not what is measured), then, in
this process, awaits ``BENCH_LATENCY_N`` (default 1,000) sequential round trips after 50 warm-up
ones: ``await (await echo.enqueue(i)).result()``. The second phase repeats it while another
process enqueues no-op tasks at ``BENCH_LOAD_RATE`` (default 1,000/s, in batches every 10 ms)
that the same worker runs. Each backend (``BENCH_BACKENDS``, default ``asyncio,trio``) runs the
worker and the client on that backend; rounds (``BENCH_ROUNDS``, default 3) are interleaved and the
table shows the medians of each round's percentiles.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streaq.testing import redis_server

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
N = int(os.environ.get("BENCH_LATENCY_N", "1000"))
RATE = int(os.environ.get("BENCH_LOAD_RATE", "1000"))
BACKENDS = os.environ.get("BENCH_BACKENDS", "asyncio,trio").split(",")
WARMUP = 50

APP = """
from streaq import Worker

worker = Worker(redis_url={url!r}, queue_name={queue!r}, concurrency=32, anyio_backend={backend!r})


@worker.task(name="echo", silent=True)
async def echo(value: int) -> int:
    return value


@worker.task(name="noop", silent=True, ttl=0)
async def noop() -> None:
    return None
"""

# argv: mode ("measure" | "load"), n or rate, backend; the app module is on PYTHONPATH
CLIENT = r"""
import json, sys, time
import anyio
from app import echo, noop, worker

mode, amount, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3]


async def measure() -> None:
    samples = []
    async with worker:
        for i in range(50 + amount):
            start = time.perf_counter()
            task = await echo.enqueue(i)
            result = await task.result(timeout=10)
            took = time.perf_counter() - start
            assert result.result == i
            if i >= 50:
                samples.append(took * 1000)
    print(json.dumps(samples))


async def load() -> None:
    batch = max(1, amount // 100)
    async with worker:
        tick = time.monotonic()
        while True:
            await worker.enqueue_many([noop.enqueue() for _ in range(batch)])
            tick += 0.01
            await anyio.sleep(max(0.0, tick - time.monotonic()))


anyio.run(measure if mode == "measure" else load, backend=backend)
"""


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _wait_for_worker(url: str, queue: str, worker: subprocess.Popen[bytes]) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while not client.hlen(f"streaq:{{{queue}}}:workers"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the benchmark's worker did not start")
            time.sleep(0.05)
    finally:
        client.close()


def _round(url: str, backend: str, round_: int) -> dict[str, list[float]]:
    queue = f"roundtrip-{backend}-{round_}"
    with tempfile.TemporaryDirectory(prefix="streaq-roundtrip-") as tmp:
        Path(tmp, "app.py").write_text(APP.format(url=url, queue=queue, backend=backend))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, os.environ.get("PYTHONPATH", "")])}
        worker = subprocess.Popen(
            [sys.executable, "-m", "streaq", "run", "app:worker", "--log-level", "WARNING"],
            cwd=tmp,
            env=env,
        )
        load: subprocess.Popen[bytes] | None = None
        try:
            _wait_for_worker(url, queue, worker)
            client = [sys.executable, "-c", CLIENT]

            def measure() -> list[float]:
                done = subprocess.run(
                    [*client, "measure", str(N), backend],
                    env=env,
                    cwd=tmp,
                    check=True,
                    text=True,
                    capture_output=True,
                    timeout=300,
                )
                samples: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
                return samples

            alone = measure()
            load = subprocess.Popen([*client, "load", str(RATE), backend], env=env, cwd=tmp)
            loaded = measure()
        finally:
            for process in (load, worker):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(timeout=30)
    return {"alone": alone, "loaded": loaded}


def main() -> None:
    """Measure sequential round trips alone and under load on each backend; print the table."""
    results: dict[tuple[str, str, str], list[float]] = {}
    with redis_server() as url:
        for round_ in range(ROUNDS):
            for backend in BACKENDS:
                phases = _round(url, backend, round_)
                for phase, samples in phases.items():
                    p50, p99 = _percentile(samples, 0.5), _percentile(samples, 0.99)
                    results.setdefault((backend, phase, "p50"), []).append(p50)
                    results.setdefault((backend, phase, "p99"), []).append(p99)
                    print(
                        f"  round {round_ + 1} {backend:8} {phase:6} p50 {p50:.3f} ms "
                        f"p99 {p99:.3f} ms",
                        flush=True,
                    )
    print(
        f"\n== roundtrip: {N} sequential enqueue → result, median of {ROUNDS} round(s); "
        f"'loaded' = while {RATE:,} tasks/s of other work run ==\n"
    )
    print("| backend | p50 ms | p99 ms | loaded p50 ms | loaded p99 ms |")
    print("|---|---|---|---|---|")
    for backend in BACKENDS:
        cells = [
            f"{statistics.median(results[(backend, phase, name)]):.3f}"
            for phase in ("alone", "loaded")
            for name in ("p50", "p99")
        ]
        print(f"| {backend} | " + " | ".join(cells) + " |")
