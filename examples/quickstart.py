"""streaq quickstart: a worker process runs real tasks against Redis; we await typed results.

Run it with ``python examples/quickstart.py``. It uses the Redis on ``REDIS_URL`` (default
``redis://localhost:6379``) and starts a throwaway ``redis-server`` only when none answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import anyio

from streaq import Worker

HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
worker = Worker(redis_url=REDIS_URL, queue_name="quickstart", concurrency=8)


@dataclass
class Invoice:
    """A typed result: it comes back as an ``Invoice``, not a dict."""

    customer: str
    total: float


@worker.task
async def price(item: str, quantity: int) -> float:
    """An async task."""
    await anyio.sleep(0.05)
    return {"apple": 0.5, "pear": 0.75}.get(item, 1.0) * quantity


@worker.task
def invoice(total: float, customer: str) -> Invoice:
    """A sync task (runs in a worker thread); receives the previous task's result first."""
    return Invoice(customer, round(total * 1.2, 2))


def _redis_answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "localhost", parsed.port or 6379), 1):
            return True
    except OSError:
        return False


async def main() -> None:
    """Enqueue tasks, let a ``streaq run`` worker process execute them, print the results."""
    env = {**os.environ, "PYTHONPATH": str(HERE), "REDIS_URL": REDIS_URL}
    cmd = [sys.executable, "-m", "streaq", "run", "quickstart:worker"]
    proc = await anyio.open_process(cmd, cwd=HERE, env=env, stdout=None, stderr=None)
    try:
        async with worker:
            prices = [await price.enqueue(item, n) for item, n in [("apple", 4), ("pear", 2)]]
            chained = await price.enqueue("pear", 8).then(invoice, customer="ACME")
            for task in prices:
                result = await task.result(timeout=30)
                print(f"price {task.args} = {result.result!r} (ran on worker {result.worker_id})")
            final = await chained.result(timeout=30)
            print(f"invoice: {final.result!r}")
    finally:
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await proc.wait()


def run() -> None:
    """Start a throwaway Redis if needed, then run :func:`main`."""
    global REDIS_URL
    server = None
    if not _redis_answers(REDIS_URL):
        if shutil.which("redis-server") is None:
            raise SystemExit(f"no Redis answers at {REDIS_URL} and redis-server is not installed")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        workdir = tempfile.mkdtemp()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        REDIS_URL = f"redis://127.0.0.1:{port}"
        os.environ["REDIS_URL"] = REDIS_URL
        worker.redis_url = REDIS_URL
        while not _redis_answers(REDIS_URL):
            anyio.run(anyio.sleep, 0.05)
    try:
        anyio.run(main)
    finally:
        if server is not None:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    run()
