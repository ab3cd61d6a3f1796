"""What the per-task log lines cost: CPU of a no-op drain with the CLI's logging on and off.

Theory of operation
-------------------
One in-process worker (concurrency 32, burst mode) drains ``BENCH_N`` no-op tasks (default
20,000) from a private ``redis-server`` (port ``BENCH_LOGCOST_PORT``, default 6399), with the
logging ``streaq run`` configures (:func:`streaq._cli._logs.log_config`) writing to a file: at
``INFO`` (two lines per task, the CLI's default), at ``WARNING`` (per-task lines off), and at
``INFO`` with ``--log-format json``. The drain's CPU time (``time.process_time``, enqueueing
excluded) is compared in the same run: the logging share is ``(CPU at INFO - CPU at WARNING) /
CPU at INFO``. Modes are interleaved over ``BENCH_ROUNDS`` rounds (default 5); cells are medians.
``BENCH_LOOP`` picks the loop (``asyncio`` (default), ``uvloop`` or ``trio``).
"""

from __future__ import annotations

import logging
import logging.config
import os
import statistics
import tempfile
import time
from datetime import UTC
from pathlib import Path

import anyio

from streaq import Worker
from streaq._cli._logs import log_config

from .latency import redis_server

PORT = int(os.environ.get("BENCH_LOGCOST_PORT", "6399"))
MODES = {"INFO text": ("INFO", False), "WARNING": ("WARNING", False), "INFO json": ("INFO", True)}


def _configure(level: str, json_lines: bool, path: Path) -> None:
    logging.config.dictConfig(log_config(UTC, level, json_lines=json_lines))
    for handler in logging.getLogger("streaq").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(path.open("w"))


def _close_log() -> None:
    for handler in logging.getLogger("streaq").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.flush()
            handler.stream.close()


async def _drain(n: int, loop: str) -> float:
    """CPU seconds of one worker draining ``n`` no-op tasks (enqueued first, not counted)."""
    worker = Worker(
        redis_url=f"redis://127.0.0.1:{PORT}", concurrency=32, queue_name="logcost", id="bench"
    )

    @worker.task
    async def noop() -> None:
        pass

    async with worker:
        await worker.enqueue_many([noop.enqueue() for _ in range(n)])
    worker.burst = True
    start = time.process_time()
    await worker.run_async()
    return time.process_time() - start


def main() -> None:
    """Run the rounds and print the table."""
    n = int(os.environ.get("BENCH_N", "20000"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "5"))
    loop = os.environ.get("BENCH_LOOP", "asyncio")
    backend = "trio" if loop == "trio" else "asyncio"
    options = {"use_uvloop": True} if loop == "uvloop" else {}
    logs = Path(tempfile.mkdtemp(prefix="streaq-logcost-"))
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    with redis_server(PORT):
        for rnd in range(rounds):
            for mode, (level, json_lines) in MODES.items():
                path = logs / f"{mode.replace(' ', '-')}.log"
                _configure(level, json_lines, path)
                try:
                    seconds = anyio.run(_drain, n, loop, backend=backend, backend_options=options)
                finally:
                    _close_log()
                lines = len(path.read_text().splitlines())
                cpu[mode].append(seconds)
                print(f"  [r{rnd + 1}] {mode}: {seconds:.3f} s CPU, {lines} lines")
    base = statistics.median(cpu["WARNING"])
    print(f"\n== logcost: {n} no-op tasks, 1 in-process worker ({loop}), median CPU ==\n")
    print("| mode | drain CPU s | µs/task | logging share of drain CPU |")
    print("|---|---|---|---|")
    for mode, values in cpu.items():
        med = statistics.median(values)
        share = "—" if mode == "WARNING" else f"{(med - base) / med:.1%}"
        print(f"| {mode} | {med:.3f} | {med / n * 1e6:.1f} | {share} |")
