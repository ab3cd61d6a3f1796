"""Concurrent single enqueues: many callers each awaiting ``task.enqueue()`` one at a time.

Theory of operation
-------------------
Issue 18 asks that 32 concurrent callers of a single ``await task.enqueue()`` reach at least 3x the
rate they had before automatic pipelining. This module starts a private ``redis-server`` and, in a
child process per measurement, has ``BENCH_CALLERS`` (default 32) tasks enqueue ``BENCH_TASKS``
(default 20,000) no-op tasks in total, one ``await noop.enqueue()`` at a time each (no worker runs:
only the enqueue path is measured), then times ``BENCH_SEQUENTIAL`` (default 1,000) sequential
single enqueues by one caller, to check that a lone caller pays nothing for the pipelining.

To compare with another version of streaq in the same run, point ``BENCH_BEFORE_SRC`` at its
``src`` directory (e.g. ``git archive <commit> src | tar -x -C /tmp/before``); each round then
measures that version ("before") and this checkout ("after") back to back, on each backend
(``BENCH_BACKENDS``, default ``asyncio,trio``), for ``BENCH_ROUNDS`` (default 3) rounds, and the
table shows medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from streaq.testing import redis_server

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TASKS = int(os.environ.get("BENCH_TASKS", "20000"))
CALLERS = int(os.environ.get("BENCH_CALLERS", "32"))
SEQUENTIAL = int(os.environ.get("BENCH_SEQUENTIAL", "1000"))
BACKENDS = os.environ.get("BENCH_BACKENDS", "asyncio,trio").split(",")
BEFORE_SRC = os.environ.get("BENCH_BEFORE_SRC", "")

# argv: url, queue, tasks, callers, sequential, backend
CLIENT = r"""
import json, sys, time
import anyio
from streaq import Worker

url, queue, tasks, callers, sequential, backend = sys.argv[1:]
tasks, callers, sequential = int(tasks), int(callers), int(sequential)
worker = Worker(redis_url=url, queue_name=queue, anyio_backend=backend)


@worker.task(name="noop", silent=True)
async def noop() -> None:
    return None


async def main() -> None:
    async with worker:
        for _ in range(200):
            await noop.enqueue()

        async def caller(count: int) -> None:
            for _ in range(count):
                await noop.enqueue()

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(callers):
                tg.start_soon(caller, tasks // callers + (index < tasks % callers))
        rate = tasks / (time.perf_counter() - start)
        samples = []
        for _ in range(sequential):
            start = time.perf_counter()
            await noop.enqueue()
            samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    print(json.dumps({"rate": rate, "p50": samples[len(samples) // 2]}))


anyio.run(main, backend=backend)
"""


def _measure(url: str, queue: str, backend: str, src: str) -> dict[str, float]:
    env = dict(os.environ)
    if src:  # put that version of streaq first on the path (ahead of the editable install)
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="streaq-concurrent-") as tmp:
        args = [url, queue, str(TASKS), str(CALLERS), str(SEQUENTIAL), backend]
        done = subprocess.run(
            [sys.executable, "-c", CLIENT, *args],
            env=env,
            cwd=tmp,
            check=True,
            text=True,
            capture_output=True,
            timeout=600,
        )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Measure concurrent and sequential single enqueues per backend and version; print a table."""
    versions = {"before": BEFORE_SRC, "after": ""} if BEFORE_SRC else {"this": ""}
    results: dict[tuple[str, str, str], list[float]] = {}
    with redis_server() as url:
        for round_ in range(ROUNDS):
            for backend in BACKENDS:
                for version, src in versions.items():
                    queue = f"concurrent-{backend}-{version}-{round_}"
                    measured = _measure(url, queue, backend, src)
                    for name, value in measured.items():
                        results.setdefault((backend, version, name), []).append(value)
                    print(
                        f"  round {round_ + 1} {backend:8} {version:6} "
                        f"{measured['rate']:,.0f} tasks/s, sequential p50 {measured['p50']:.3f} ms",
                        flush=True,
                    )
    print(
        f"\n== concurrent_enqueue: {CALLERS} callers, {TASKS:,} single enqueues; then "
        f"{SEQUENTIAL:,} sequential; median of {ROUNDS} round(s) ==\n"
    )
    print("| backend | version | tasks/s | sequential p50 ms |")
    print("|---|---|---|---|")
    for backend in BACKENDS:
        for version in versions:
            rate = statistics.median(results[(backend, version, "rate")])
            p50 = statistics.median(results[(backend, version, "p50")])
            print(f"| {backend} | {version} | {rate:,.0f} | {p50:.3f} |")
        if BEFORE_SRC:
            ratio = statistics.median(results[(backend, "after", "rate")]) / statistics.median(
                results[(backend, "before", "rate")]
            )
            print(f"| {backend} | after/before | {ratio:.2f}× | |")
