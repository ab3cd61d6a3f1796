"""Queue benchmark: this streaq against streaq 7.2 with the shared task-queue harness.

Theory of operation
-------------------
The comparison of the issue -- 20,000 no-op tasks at concurrency 32, enqueued one by one (32
concurrent producers) and with ``enqueue_many``, drained by one worker process, then sequential
enqueue -> result latency -- is measured by the shared harness (``../shared/bench/run.sh`` next to
the repository). It runs streaq 7.2.0 (uvloop) from its own virtualenv and this checkout
(``--ours sys.executable``) on asyncio, uvloop and trio in the same run, interleaved, on a private
``redis-server`` it starts itself (port ``BENCH_PORT``, default 6392) and FLUSHALLs between
samples; it never touches the Redis of the tests. Its own full tables are printed as it goes; this
module then reads its JSON and prints a compact table with ratios against streaq 7.2 (ratio of
medians, below 1.00 = faster) and Redis commands per task (``INFO commandstats``: the commands a
server function runs count too).

Environment: ``STREAQ_BENCH_HARNESS`` (path of ``run.sh``), ``BENCH_ROUNDS`` (default 1),
``BENCH_N`` (default 20000), ``BENCH_LATENCY_N`` (default 1000; streaq 7.2 needs ~0.1 s per
sample), ``BENCH_LATENCY_LOOPS`` (default ``asyncio,uvloop,trio``), ``BENCH_OUT`` (results
directory, default a temporary one), ``BENCH_EXTRA`` (more harness options, e.g. ``--quick``),
``BENCH_REPORT`` (only re-print the table of an earlier results ``.json``).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HARNESS = Path(os.environ.get("STREAQ_BENCH_HARNESS", REPO.parent / "shared" / "bench" / "run.sh"))
REF = "streaq-7.2/uvloop"
VARIANTS = [REF, "ours/asyncio", "ours/uvloop", "ours/trio"]

#: (column title, metric, sample key, format)
COLUMNS: list[tuple[str, str, str, str]] = [
    ("enqueue_many s", "enqueue", "value", "{:.2f}"),
    ("enqueue 32× single s", "enqueue_single", "value", "{:.2f}"),
    ("drain 1w s", "drain_w1", "value", "{:.2f}"),
    ("drain 1w exit s", "drain_w1", "exit_s", "{:.2f}"),
    ("worker CPU s", "drain_w1", "worker_cpu_s", "{:.2f}"),
    ("p50 ms", "p50_ms", "value", "{:.2f}"),
    ("p99 ms", "p99_ms", "value", "{:.2f}"),
]

#: (column title, metric) for Redis commands per task
COMMANDS: list[tuple[str, str]] = [
    ("enqueue_many", "enqueue"),
    ("32× single", "enqueue_single"),
    ("drain", "drain_w1"),
]


def _harness_args(out: Path) -> list[str]:
    env = os.environ
    return [
        "bash", str(HARNESS),
        "--ours", sys.executable,
        "--only", ",".join(VARIANTS),
        "--ref", REF,
        "--phases", "noop,latency",
        "--workers", "1",
        "--concurrency", "32",
        "--noop-n", env.get("BENCH_N", "20000"),
        "--latency-n", env.get("BENCH_LATENCY_N", "1000"),
        "--latency-loops", env.get("BENCH_LATENCY_LOOPS", "asyncio,uvloop,trio"),
        "--rounds", env.get("BENCH_ROUNDS", "1"),
        "--out", str(out),
        *shlex.split(env.get("BENCH_EXTRA", "")),
    ]  # fmt: skip


def _median(samples: list[dict[str, Any]], variant: str, metric: str, key: str) -> float | None:
    values = [
        float(s[key])
        for s in samples
        if s["variant"] == variant and s["metric"] == metric and s.get(key) is not None
    ]
    return statistics.median(values) if values else None


def _cell(value: float | None, ref: float | None, fmt: str) -> str:
    if value is None:
        return "—"
    text = fmt.format(value)
    return f"{text} (×{value / ref:.2f})" if ref else text


def _table(samples: list[dict[str, Any]]) -> str:
    variants = [v for v in VARIANTS if any(s["variant"] == v for s in samples)]
    head = ["variant"] + [c[0] for c in COLUMNS] + [f"cmds/task {c[0]}" for c in COMMANDS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in variants:
        row = [variant]
        for _, metric, key, fmt in COLUMNS:
            value = _median(samples, variant, metric, key)
            ref = None if variant == REF else _median(samples, REF, metric, key)
            row.append(_cell(value, ref, fmt))
        for _, metric in COMMANDS:
            value = _median(samples, variant, metric, "redis_cmds_per_task")
            row.append("—" if value is None else f"{value:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _drain_note(samples: list[dict[str, Any]]) -> str:
    exits = [s for s in samples if s["metric"] == "drain_w1" and s.get("detect") == "exit"]
    if not exits:
        return ""
    names = ", ".join(sorted({s["variant"] for s in exits}))
    return (
        f"\n\ndrain 1w s of {names} is the burst-mode exit of the worker (the harness cannot "
        f"poll this key layout), that of {REF} the moment its stream is empty; "
        "'drain 1w exit s' compares exit with exit."
    )


def report(results: Path) -> str:
    """The compact table of a harness results file.

    :param results: the ``.json`` file the harness wrote
    :return: markdown text
    """
    data: dict[str, Any] = json.loads(results.read_text())
    meta: dict[str, Any] = data["meta"]
    samples: list[dict[str, Any]] = [s for s in data["samples"] if s.get("variant")]
    args: dict[str, Any] = meta["args"]
    text = (
        f"{meta['started']}: N={args['noop_n']} no-op tasks, concurrency {args['concurrency']}, "
        f"1 worker process, {args['rounds']} round(s), latency n={args['latency_n']}, "
        f"redis {meta['redis']}, {meta['cpus']} CPUs; median, (×ratio) vs {REF}\n\n"
        + _table(samples)
        + _drain_note(samples)
    )
    if meta.get("errors"):
        text += "\n\nHARNESS ERRORS:\n  " + "\n  ".join(meta["errors"])
    return text


def main() -> None:
    """Run the harness and print the comparison."""
    if not HARNESS.is_file():
        raise SystemExit(
            f"shared benchmark harness not found at {HARNESS}: it lives next to the repository "
            "(../shared/bench/run.sh); set STREAQ_BENCH_HARNESS to its run.sh"
        )
    if os.environ.get("BENCH_REPORT"):  # re-print an earlier run
        print(report(Path(os.environ["BENCH_REPORT"])))
        return
    out = Path(os.environ.get("BENCH_OUT") or tempfile.mkdtemp(prefix="streaq-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.json"))
    status = subprocess.run(_harness_args(out), check=False).returncode
    written = sorted(set(out.glob("*.json")) - before)
    if status != 0 or not written:
        raise SystemExit(f"the benchmark harness failed (exit status {status}); see above")
    print(f"\n== queue: ours vs {REF} ({written[-1]}) ==\n")
    print(report(written[-1]))
