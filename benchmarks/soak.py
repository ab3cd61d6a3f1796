"""Soak test: memory stays bounded over a long run of no-op tasks (``nox -s soak``, not in CI).

``python -m benchmarks.soak [--tasks N] [--concurrency C] [--backlog B]`` starts a throwaway
``redis-server`` (no persistence) on a free port and one worker process (``python -m streaq run``,
no-op task with ``ttl=0``: results only wake waiters, so what remains in Redis is queue state
alone), then enqueues N tasks (default 1,000,000) in batches of 500 while keeping at most B
queued (default 20,000), like a steady producer. It reports Redis ``used_memory`` and the worker
process's RSS at the start (worker idle, nothing queued), the middle (N/2 enqueued) and the end
(everything finished), plus the stream's length, its pending count and the number of keys.

Bounded means: the stream is trimmed to the acknowledged point (``finish`` does XACK + XDEL), so
``used_memory`` at the end is back near the start, and the worker's RSS levels off.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import redis

from streaq import Worker
from streaq.testing import redis_server as private_redis

QUEUE = "soak"
BATCH = 500

APP = """
from streaq import Worker

worker = Worker(redis_url={url!r}, queue_name={queue!r}, concurrency={concurrency})


@worker.task(name="noop", ttl=0, silent=True)
async def noop() -> None:
    pass
"""


def _rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Probe:
    """Reads the figures of one sample from Redis and the worker process."""

    def __init__(self, url: str, pid: int) -> None:
        self.client = redis.Redis.from_url(url)
        self.pid = pid
        self.stream = f"streaq:{{{QUEUE}}}:s:normal"

    def backlog(self) -> int:
        """Messages in the stream: queued or running."""
        return int(self.client.xlen(self.stream))

    def sample(self, label: str, enqueued: int, started: float) -> dict[str, Any]:
        """Print and return one line of figures."""
        memory: Any = self.client.info("memory")
        pending: Any = self.client.xpending(self.stream, "g")
        row = {
            "at": label,
            "enqueued": enqueued,
            "seconds": round(time.monotonic() - started, 1),
            "redis_used_memory_mb": round(memory["used_memory"] / 2**20, 2),
            "worker_rss_mb": round(_rss_mb(self.pid), 1),
            "xlen": self.backlog(),
            "pending": pending["pending"],
            "keys": int(self.client.dbsize()),
        }
        print(
            f"{label:>6}: {enqueued:>9} enqueued  t={row['seconds']:>7}s  "
            f"redis used_memory {row['redis_used_memory_mb']:>8} MiB  "
            f"worker RSS {row['worker_rss_mb']:>7} MiB  xlen {row['xlen']:>6}  "
            f"pending {row['pending']:>5}  keys {row['keys']}",
            flush=True,
        )
        return row


async def _produce(url: str, probe: Probe, tasks: int, backlog: int, started: float) -> None:
    producer: Worker[Any] = Worker(redis_url=url, queue_name=QUEUE)

    @producer.task(name="noop", ttl=0, silent=True)
    async def noop() -> None:
        pass

    enqueued = 0
    middle_done = False
    async with producer:
        while enqueued < tasks:
            # polling Redis: the backlog drains in another process, there is no event to await
            while probe.backlog() > backlog:  # noqa: ASYNC110
                await anyio.sleep(0.02)
            n = min(BATCH, tasks - enqueued)
            await producer.enqueue_many([noop.enqueue() for _ in range(n)])
            enqueued += n
            if not middle_done and enqueued >= tasks // 2:
                middle_done = True
                probe.sample("middle", enqueued, started)
    while probe.backlog() or probe.client.xpending(probe.stream, "g")["pending"]:  # noqa: ASYNC110
        await anyio.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    """Run the soak test and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backlog", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="streaq-soak-") as tmp, private_redis() as url:
        worker: subprocess.Popen[bytes] | None = None
        try:
            client = redis.Redis.from_url(url)
            Path(tmp, "soakapp.py").write_text(
                APP.format(url=url, queue=QUEUE, concurrency=args.concurrency)
            )
            worker = subprocess.Popen(
                [sys.executable, "-m", "streaq", "run", "soakapp:worker"],
                cwd=tmp,
                env={**os.environ, "PYTHONPATH": tmp},
            )
            # the worker is up once it heartbeats
            while not client.hlen(f"streaq:{{{QUEUE}}}:workers"):
                if worker.poll() is not None:
                    raise SystemExit("the worker process exited")
                time.sleep(0.05)
            probe = Probe(url, worker.pid)
            print(
                f"soak: {args.tasks} no-op tasks, concurrency {args.concurrency}, "
                f"backlog <= {args.backlog}",
                flush=True,
            )
            started = time.monotonic()
            probe.sample("start", 0, started)
            anyio.run(_produce, url, probe, args.tasks, args.backlog, started)
            end = probe.sample("end", args.tasks, started)
            rate = args.tasks / max(end["seconds"], 0.001)
            print(f"soak: {rate:,.0f} tasks/s", flush=True)
            client.close()
            probe.client.close()
        finally:
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()


if __name__ == "__main__":
    main(sys.argv[1:])
