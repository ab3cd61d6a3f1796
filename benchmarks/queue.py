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
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HARNESS = Path(os.environ.get("STREAQ_BENCH_HARNESS", REPO.parent / "shared" / "bench" / "run.sh"))
VENVS = Path(os.environ.get("BENCH_VENVS", "/tmp/bench-venvs"))
REF = "streaq-7.2/uvloop"
OURS = ["ours/asyncio", "ours/uvloop", "ours/trio"]
PEERS = ["saq", "taskiq", "arq"]
VARIANTS = [REF, *OURS, *PEERS]
OURS_PYTHON = sys.executable
RSS_PORT = int(os.environ.get("BENCH_RSS_PORT", "6397"))

#: (column title, metric, sample key, format)
COLUMNS: list[tuple[str, str, str, str]] = [
    ("enqueue batch s", "enqueue", "value", "{:.2f}"),
    ("enqueue 32× single s", "enqueue_single", "value", "{:.2f}"),
    ("drain 1w s", "drain_w1", "value", "{:.2f}"),
    ("drain 2w s", "drain_w2", "value", "{:.2f}"),
    ("sleep 1w s", "sleep_drain_w1", "value", "{:.2f}"),
    ("sleep 2w s", "sleep_drain_w2", "value", "{:.2f}"),
    ("p50 ms", "p50_ms", "value", "{:.2f}"),
    ("p99 ms", "p99_ms", "value", "{:.2f}"),
    ("worker CPU 1w s", "drain_w1", "worker_cpu_s", "{:.2f}"),
    ("worker RSS MiB", "rss_mib", "value", "{:.0f}"),
]

#: (column title, metric) for Redis commands per task
COMMANDS: list[tuple[str, str]] = [
    ("batch", "enqueue"),
    ("single", "enqueue_single"),
    ("drain", "drain_w1"),
]


def _ours_python() -> str:
    """The interpreter the harness runs as "ours": this one, without coredis by default.

    The harness's bench module imports coredis whenever it can (to tune it); this streaq never
    uses coredis, but the dev venv has it (bench group), which would add its import time and
    memory to our worker. ``BENCH_COREDIS=1`` keeps it importable.
    """
    if os.environ.get("BENCH_COREDIS") == "1":
        return sys.executable
    shim = Path(tempfile.mkdtemp(prefix="streaq-bench-shim-"))
    (shim / "coredis").mkdir()
    (shim / "coredis" / "__init__.py").write_text(
        'raise ImportError("coredis is hidden from the streaq benchmark")\n'
    )
    wrapper = shim / "python"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{shim}${{PYTHONPATH:+:$PYTHONPATH}}" exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def _harness_args(out: Path, ours: str) -> list[str]:
    env = os.environ
    return [
        "bash", str(HARNESS),
        "--ours", ours,
        "--streaq-loops", "uvloop",
        "--ref", REF,
        "--phases", env.get("BENCH_PHASES", "noop,sleep,latency,redis"),
        "--workers", "1,2",
        "--concurrency", "32",
        "--noop-n", env.get("BENCH_N", "20000"),
        "--latency-n", env.get("BENCH_LATENCY_N", "1000"),
        "--latency-loops", env.get("BENCH_LATENCY_LOOPS", "asyncio,uvloop,trio"),
        "--rounds", env.get("BENCH_ROUNDS", "3"),
        "--out", str(out),
        *shlex.split(env.get("BENCH_EXTRA", "")),
    ]  # fmt: skip


def _values(samples: list[dict[str, Any]], variant: str, metric: str, key: str) -> list[float]:
    return [
        float(s[key])
        for s in samples
        if s["variant"] == variant
        and _metric(s) == metric
        and s.get(key) is not None
        and s.get("ok", True) is not False
    ]


def _metric(sample: dict[str, Any]) -> str:
    if sample.get("phase") == "sleep":
        return "sleep_" + str(sample["metric"])
    return str(sample["metric"])


def _stat(samples: list[dict[str, Any]], variant: str, metric: str, key: str) -> float | None:
    values = _values(samples, variant, metric, key)
    return statistics.median(values) if values else None


def _cell(samples: list[dict[str, Any]], variant: str, metric: str, key: str, fmt: str) -> str:
    values = _values(samples, variant, metric, key)
    if not values:
        return "—"
    med = statistics.median(values)
    text = fmt.format(med)
    if len(values) > 1:
        text += f" ({fmt.format(min(values))})"
    ref = None if variant == REF else _stat(samples, REF, metric, key)
    return f"{text} ×{med / ref:.2f}" if ref else text


def _table(samples: list[dict[str, Any]]) -> str:
    variants = [v for v in VARIANTS if any(s["variant"] == v for s in samples)]
    head = ["variant"] + [c[0] for c in COLUMNS] + [f"cmds/task {c[0]}" for c in COMMANDS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in variants:
        row = [variant]
        for _, metric, key, fmt in COLUMNS:
            row.append(_cell(samples, variant, metric, key, fmt))
        for _, metric in COMMANDS:
            value = _stat(samples, variant, metric, "redis_cmds_per_task")
            row.append("—" if value is None else f"{value:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _floor(samples: list[dict[str, Any]]) -> str:
    rows = [s for s in samples if s.get("phase") == "redis"]
    if not rows:
        return ""
    lines = ["| redis-benchmark | ops/s (median) | p50 ms |", "|---|---|---|"]
    for label in dict.fromkeys(str(s["metric"]) for s in rows):
        ops = statistics.median(float(s["value"]) for s in rows if s["metric"] == label)
        p50 = statistics.median(float(s["p50_ms"]) for s in rows if s["metric"] == label)
        lines.append(f"| {label} | {ops:,.0f} | {p50:.3f} |")
    return "\n\nRedis floor (same server, same run):\n\n" + "\n".join(lines)


def _drain_note(samples: list[dict[str, Any]]) -> str:
    exits = [s for s in samples if s["metric"] == "drain_w1" and s.get("detect") == "exit"]
    if not exits:
        return ""
    names = ", ".join(sorted({s["variant"] for s in exits}))
    return (
        f"\n\nDrain times of {names} are the burst-mode exit of the worker (the harness cannot "
        f"poll this key layout, so start-up *and* shutdown are included); {REF}'s is the moment "
        "its stream is empty. Cells: median (min) ×ratio of medians vs " + REF + "."
    )


def report(results: Path) -> str:
    """The compact table of a harness results file (plus the RSS samples stored next to it).

    :param results: the ``.json`` file the harness wrote
    :return: markdown text
    """
    data: dict[str, Any] = json.loads(results.read_text())
    meta: dict[str, Any] = data["meta"]
    samples: list[dict[str, Any]] = [s for s in data["samples"] if s.get("variant")]
    rss_file = results.with_suffix(".rss.json")
    if rss_file.is_file():
        samples += json.loads(rss_file.read_text())
    args: dict[str, Any] = meta["args"]
    text = (
        f"{meta['started']}: N={args['noop_n']} no-op tasks, concurrency {args['concurrency']}, "
        f"sleep N={args['sleep_n']}×{args['sleep_s']}s, {args['rounds']} round(s), latency "
        f"n={args['latency_n']}, redis {meta['redis']}, {meta['cpus']} CPUs; "
        f"median (min) ×ratio vs {REF}\n\n"
        + _table(samples)
        + _drain_note(samples)
        + _floor(samples)
    )
    if meta.get("errors"):
        text += "\n\nHARNESS ERRORS:\n  " + "\n  ".join(meta["errors"])
    return text


def _rss_variants() -> list[tuple[str, str, str]]:
    """(variant, python, loop) of the streaq-API variants whose worker RSS is measured."""
    found = [(REF, str(VENVS / "streaq" / "bin" / "python"), "uvloop")]
    found += [(f"ours/{loop}", OURS_PYTHON, loop) for loop in ("asyncio", "uvloop", "trio")]
    return [v for v in found if Path(v[1]).exists()]


def measure_rss(rounds: int, n: int) -> list[dict[str, Any]]:
    """Peak RSS (``ru_maxrss`` from ``wait4``) of one burst worker draining ``n`` no-op tasks.

    The harness does not report memory, so this runs its streaq bench module itself against a
    private ``redis-server`` (port ``BENCH_RSS_PORT``): enqueue ``n`` tasks, run
    ``streaq run --burst`` (one process, concurrency 32), read the peak RSS of that process.
    """
    libs = HARNESS.parent / "libs"
    url = f"redis://127.0.0.1:{RSS_PORT}"
    server = subprocess.Popen(
        ["redis-server", "--port", str(RSS_PORT), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    out: list[dict[str, Any]] = []
    try:
        time.sleep(0.5)
        for rnd in range(rounds):
            for variant, python, loop in _rss_variants():
                env = dict(
                    os.environ,
                    PYTHONPATH=str(libs),
                    BENCH_REDIS_URL=url,
                    BENCH_LOOP=loop,
                    BENCH_CONCURRENCY="32",
                )
                flush = ["redis-cli", "-p", str(RSS_PORT), "FLUSHALL"]
                subprocess.run(flush, check=True, stdout=subprocess.DEVNULL)
                client = [python, "bench_streaq.py", "enqueue", str(n), "0", "batch"]
                subprocess.run(client, env=env, cwd=libs, check=True, stdout=subprocess.DEVNULL)
                streaq_exe = Path(python).parent / "streaq"  # the shim's directory has none
                cmd = [str(streaq_exe)] if streaq_exe.exists() else [python, "-m", "streaq"]
                cmd += ["run", "--burst", "--workers", "1", "bench_streaq:worker"]
                with open(os.devnull, "w") as sink:
                    proc = subprocess.Popen(cmd, env=env, cwd=libs, stdout=sink, stderr=sink)
                    _, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                mib = usage.ru_maxrss / 1024
                print(f"  [rss r{rnd + 1}] {variant}: {mib:.0f} MiB (exit {proc.returncode})")
                if proc.returncode == 0:
                    out.append({"variant": variant, "metric": "rss_mib", "value": mib})
    finally:
        server.terminate()
        server.wait()
    return out


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
    global OURS_PYTHON
    OURS_PYTHON = _ours_python()
    status = subprocess.run(_harness_args(out, OURS_PYTHON), check=False).returncode
    written = sorted(set(out.glob("*.json")) - before)
    if status != 0 or not written:
        raise SystemExit(f"the benchmark harness failed (exit status {status}); see above")
    if os.environ.get("BENCH_RSS", "1") == "1":
        rss = measure_rss(
            int(os.environ.get("BENCH_RSS_ROUNDS", "3")), int(os.environ.get("BENCH_N", "20000"))
        )
        written[-1].with_suffix(".rss.json").write_text(json.dumps(rss))
    print(f"\n== queue: ours vs {REF} and peers ({written[-1]}) ==\n")
    print(report(written[-1]))
