"""Flow-control benchmark: what limits that never bind cost a no-op drain.

Theory of operation
-------------------
Issue 16 asks that flow control leaves unlimited tasks as fast as before and that the overhead of
limits be reported. Each *variant* registers the same no-op task with different limits, all set
far above what the run can reach, so that the cost measured is the bookkeeping alone, never a
wait: ``unlimited`` (no limit: the path every task without limits takes), ``concurrency_limit``
(a fleet-wide slot per start, freed at finish), ``group_by`` (10 group keys, per-key slots and
round-robin) and ``rate_limit`` (a server-side start window checked just before the call: one
extra round trip per task, by design, so that a task waiting for its window never holds a slot).

Every sample runs in a fresh subprocess of this interpreter against a private ``redis-server`` on
a free port (never the tests' Redis): ``BENCH_N`` (default 20,000) tasks are enqueued with
``enqueue_many``, then one in-process worker (concurrency ``BENCH_CONCURRENCY``, default 32) drains
them in burst mode; the drain's wall time and the process's CPU time are recorded. Per-task log
lines are off (``silent=True``) so that what is measured is the queue, not the logging. Rounds
(``BENCH_ROUNDS``, default 3) interleave the variants and backends (``BENCH_BACKENDS``, default
``asyncio,trio``); the table shows medians and ratios of medians against ``unlimited`` on the same
backend in the same run (this machine is shared and noisy; only same-run ratios mean much).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from streaq.testing import redis_server as private_redis

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
N = int(os.environ.get("BENCH_N", "20000"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
BACKENDS = os.environ.get("BENCH_BACKENDS", "asyncio,trio").split(",")
VARIANTS = ["unlimited", "concurrency_limit", "group_by", "rate_limit"]
REF = "unlimited"

# run in a subprocess: argv = variant, redis url, n, backend, concurrency
SCENARIO = r"""
import json, sys, time, uuid
import anyio
from streaq import Worker

variant, url, n, backend, concurrency = sys.argv[1:6]
n, concurrency = int(n), int(concurrency)
limits = {
    "unlimited": {},
    "concurrency_limit": {"concurrency_limit": 1_000_000},
    "group_by": {"group_by": lambda key: str(key), "group_concurrency": 1_000_000},
    "rate_limit": {"rate_limit": "1000000/s"},
}[variant]
worker = Worker(
    redis_url=url,
    queue_name="bench-" + uuid.uuid4().hex[:8],
    concurrency=concurrency,
    handle_signals=False,
)
worker.burst = True


@worker.task(name="noop", silent=True, **limits)
async def noop(key: int) -> None:
    return None


async def main() -> None:
    async with worker:
        await worker.enqueue_many([noop.enqueue(i % 10) for i in range(n)])
        wall, cpu = time.perf_counter(), time.process_time()
        await worker.run_async()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        left = await worker.queue_size()
    print(json.dumps({"drain_s": wall, "cpu_s": cpu, "left": left}))


anyio.run(main, backend=backend)
"""


def _sample(variant: str, url: str, backend: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO, variant, url, str(N), backend, str(CONCURRENCY)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{variant}/{backend} failed:\n{done.stderr[-2000:]}")
    out: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if out["left"]:
        raise SystemExit(f"{variant}/{backend}: {out['left']} tasks left after the drain")
    return out


def _cell(values: list[float], ref: list[float] | None) -> str:
    text = f"{statistics.median(values):.3f}"
    if ref:
        text += f" ×{statistics.median(values) / statistics.median(ref):.3f}"
    return text


def main() -> None:
    """Drain ``BENCH_N`` no-op tasks under each variant and print the overhead table."""
    samples: dict[tuple[str, str, str], list[float]] = {}
    with private_redis() as url:
        for round_ in range(ROUNDS):
            for backend in BACKENDS:
                for variant in VARIANTS:
                    out = _sample(variant, url, backend)
                    for key in ("drain_s", "cpu_s"):
                        samples.setdefault((variant, backend, key), []).append(out[key])
                    print(f"  round {round_ + 1} {backend:8} {variant:18} {out}", flush=True)
    print(
        f"\n== flow control: {N} no-op tasks, concurrency {CONCURRENCY}, median of {ROUNDS} "
        f"round(s), ×ratio vs {REF} on the same backend ==\n"
    )
    print("| backend | variant | drain s | worker CPU s | tasks/s |")
    print("|---|---|---|---|---|")
    for backend in BACKENDS:
        for variant in VARIANTS:
            ref = None if variant == REF else samples[(REF, backend, "drain_s")]
            ref_cpu = None if variant == REF else samples[(REF, backend, "cpu_s")]
            drain = samples[(variant, backend, "drain_s")]
            print(
                f"| {backend} | {variant} | {_cell(drain, ref)} | "
                f"{_cell(samples[(variant, backend, 'cpu_s')], ref_cpu)} | "
                f"{N / statistics.median(drain):,.0f} |"
            )
