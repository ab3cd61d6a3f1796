"""Scheduling benchmark: delayed tasks due at one instant, and a long ``then`` chain.

Theory of operation
-------------------
Two scenarios, each run in a fresh subprocess per *variant* (this checkout on asyncio and on trio;
streaq 7.2 from its own virtualenv, on asyncio) against a private ``redis-server`` this module
starts on a free port (``--save ''``) and stops at the end; it never touches the Redis of the
tests, and each run uses its own queue name. One worker runs inside the producer's process
(``tg.start(worker.run_async)``), concurrency ``BENCH_CONCURRENCY`` (default 32).

- ``delayed``: ``BENCH_DELAYED`` (default 10,000) no-op tasks enqueued with ``enqueue_many`` and
  ``start(schedule=due)``, all due at the same instant ``due`` = enqueue start + ``BENCH_LEAD``
  seconds (default 5). Reported: seconds from ``due`` until the last task started (and until the
  first), plus the enqueue time (which must stay below the lead).
- ``chain``: a chain of ``BENCH_CHAIN`` (default 1,000) ``then`` links of an increment task,
  enqueued as one (``await head.then(inc)...``); reported: seconds from the start of the enqueue
  until the last link's result is available.

Rounds (``BENCH_ROUNDS``, default 1) are interleaved across variants; the table shows medians and
the ratio of medians against streaq 7.2 (below 1.00 = faster). ``STREAQ72_PYTHON`` names the
interpreter of the streaq 7.2 virtualenv (default ``/tmp/bench-venvs/streaq/bin/python``, made by
``../shared/bench/setup_venvs.sh``); when it is missing only this checkout is measured.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from streaq.testing import redis_server as private_redis

REF_PYTHON = os.environ.get("STREAQ72_PYTHON", "/tmp/bench-venvs/streaq/bin/python")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
N_DELAYED = int(os.environ.get("BENCH_DELAYED", "10000"))
N_CHAIN = int(os.environ.get("BENCH_CHAIN", "1000"))
LEAD = float(os.environ.get("BENCH_LEAD", "5"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
REF = "streaq-7.2/asyncio"

# run in the variant's interpreter: argv = scenario, redis url, n, backend, lead, concurrency
SCENARIO = r"""
import json, sys, time, uuid
from datetime import datetime, timedelta, timezone
import anyio
from streaq import Worker

sys.setrecursionlimit(100_000)  # streaq 7.2 enqueues a chain recursively
scenario, url, n, backend, lead, concurrency = sys.argv[1:7]
n, lead, concurrency = int(n), float(lead), int(concurrency)
worker = Worker(redis_url=url, queue_name="bench-" + uuid.uuid4().hex[:8], concurrency=concurrency)
starts = []
done = anyio.Event()

@worker.task
async def noop(x: int) -> int:
    starts.append(time.time())
    if len(starts) == n:
        done.set()
    return x

@worker.task
async def inc(x: int) -> int:
    return x + 1

async def delayed():
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        t0 = time.time()
        due = datetime.now(timezone.utc) + timedelta(seconds=lead)
        await worker.enqueue_many([noop.enqueue(i).start(schedule=due) for i in range(n)])
        enqueue_s = time.time() - t0
        with anyio.fail_after(lead + 600):
            await done.wait()
        due_s = due.timestamp()
        first = min(starts) - due_s
        report({"value": max(starts) - due_s, "first_s": first, "enqueue_s": enqueue_s})
        tg.cancel_scope.cancel()

async def chain():
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        t0 = time.time()
        task = inc.enqueue(0)
        for _ in range(n - 1):
            task = task.then(inc)
        await task
        enqueue_s = time.time() - t0
        res = await task.result(timeout=600)
        value = time.time() - t0
        assert res.result == n, res
        report({"value": value, "enqueue_s": enqueue_s})
        tg.cancel_scope.cancel()

def report(out):
    # printed before the worker is cancelled: streaq 7.2 may raise while it shuts down
    print("RESULT " + json.dumps(out), flush=True)

try:
    anyio.run({"delayed": delayed, "chain": chain}[scenario], backend=backend)
except BaseException as e:
    print(f"shutdown: {e!r}"[:300], file=sys.stderr)
"""


def _variants() -> list[tuple[str, str, str]]:
    """(name, interpreter, anyio backend)."""
    variants = []
    if Path(REF_PYTHON).is_file():
        variants.append((REF, REF_PYTHON, "asyncio"))
    else:
        print(f"(streaq 7.2 interpreter {REF_PYTHON} not found: measuring this checkout only)")
    variants += [("ours/asyncio", sys.executable, "asyncio"), ("ours/trio", sys.executable, "trio")]
    return variants


def _run(python: str, scenario: str, url: str, n: int, backend: str) -> dict[str, Any]:
    args = [python, "-c", SCENARIO, scenario, url, str(n), backend, str(LEAD), str(CONCURRENCY)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"error": " / ".join(tail) or f"exit status {proc.returncode}"}


def _cell(values: list[float], ref: list[float] | None) -> str:
    if not values:
        return "—"
    value = statistics.median(values)
    text = f"{value:.3f}"
    if ref:
        text += f" (×{value / statistics.median(ref):.2f})"
    return text


def main() -> None:
    """Run both scenarios for every variant and print the comparison."""
    scenarios = [("delayed", N_DELAYED), ("chain", N_CHAIN)]
    variants = _variants()
    samples: dict[tuple[str, str, str], list[float]] = {}
    errors: list[str] = []
    with private_redis() as url:
        for round_ in range(ROUNDS):
            for scenario, n in scenarios:
                for name, python, backend in variants:
                    out = _run(python, scenario, url, n, backend)
                    if "error" in out:
                        errors.append(f"{name} {scenario} round {round_ + 1}: {out['error']}")
                        continue
                    for key, value in out.items():
                        samples.setdefault((name, scenario, key), []).append(float(value))
                    print(f"  {name:20} {scenario:8} {json.dumps(out)}", flush=True)
    columns = [
        ("delayed", "value", f"{N_DELAYED} delayed: due → all started s"),
        ("delayed", "first_s", "due → first started s"),
        ("delayed", "enqueue_s", "enqueue_many s"),
        ("chain", "value", f"chain of {N_CHAIN} then: end to end s"),
        ("chain", "enqueue_s", "chain enqueue s"),
    ]
    print(
        f"\n== scheduling: median of {ROUNDS} round(s), concurrency {CONCURRENCY}, "
        f"(×ratio) vs {REF} ==\n"
    )
    print("| variant | " + " | ".join(c[2] for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, _, _ in variants:
        row = [name]
        for scenario, key, _ in columns:
            ref = None if name == REF else samples.get((REF, scenario, key))
            row.append(_cell(samples.get((name, scenario, key), []), ref))
        print("| " + " | ".join(row) + " |")
    if errors:
        print("\nERRORS:\n  " + "\n  ".join(errors))
