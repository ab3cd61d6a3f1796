"""Drain throughput of one worker process with Redis behind injected network latency.

Theory of operation
-------------------
A private ``redis-server`` (port ``BENCH_LATENCY_PORT``, default 6398) is reached through
:mod:`benchmarks.latency_proxy`, a delay line that holds every chunk for ``delay`` in each
direction (a round trip costs ``2 * delay`` more; pipelined commands still flow back to back).
Per round and per delay (``BENCH_DELAYS_MS``, default ``0,1``), for each variant: FLUSHALL,
enqueue ``BENCH_N`` no-op tasks directly (not through the proxy, not timed) with the shared
harness's bench module (``../shared/bench/libs/bench_streaq.py``, the one the ``queue``
benchmark drives), then time one ``streaq run --burst`` worker process (concurrency 32, its
default INFO logging to a file) through the proxy from spawn to exit. An empty-queue burst run
through the same proxy measures start-up and shutdown, which are subtracted for the
``tasks/s`` column (``raw`` keeps them). A drain counts only if the worker logged every task's
``■`` line and exited with status 0.

Variants: this checkout on each loop of ``BENCH_LATENCY_LOOPS`` (default ``uvloop``) and, with
``BENCH_LATENCY_REF=1``, streaq 7.2 (``/tmp/bench-venvs/streaq``, uvloop). Rounds interleave the
variants and delays (``BENCH_ROUNDS``, default 3); cells are medians.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .queue import HARNESS, REPO, VENVS, _ours_python

PORT = int(os.environ.get("BENCH_LATENCY_PORT", "6398"))
LIBS = HARNESS.parent / "libs"


@contextmanager
def redis_server(port: int) -> Iterator[None]:
    """A private ``redis-server`` on ``port`` (no persistence) while the ``with`` lasts.

    :param port: the port it listens on
    """
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            ping = ["redis-cli", "-p", str(port), "PING"]
            if subprocess.run(ping, capture_output=True, check=False).stdout.strip() == b"PONG":
                break
            time.sleep(0.05)
        yield
    finally:
        server.terminate()
        server.wait()


@contextmanager
def _proxy(delay_ms: float) -> Iterator[str]:
    """The URL of a delay proxy to the private server, running in its own process."""
    cmd = [sys.executable, "-m", "benchmarks.latency_proxy", "--upstream", f"127.0.0.1:{PORT}"]
    cmd += ["--delay-ms", str(delay_ms), "--backend", "uvloop"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("port "):
            raise SystemExit(f"the latency proxy did not start: {line!r}")
        yield f"redis://127.0.0.1:{line.split()[1]}"
    finally:
        proc.terminate()
        proc.wait()


def _env(url: str, loop: str) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(LIBS),
        BENCH_REDIS_URL=url,
        BENCH_LOOP=loop,
        BENCH_CONCURRENCY="32",
    )


def _drain(python: str, loop: str, url: str, n: int, log: Path) -> tuple[float, float] | None:
    """(seconds, worker CPU seconds) of one burst worker through ``url``; None if it failed."""
    direct = f"redis://127.0.0.1:{PORT}"
    subprocess.run(["redis-cli", "-p", str(PORT), "FLUSHALL"], check=True, capture_output=True)
    if n:
        client = [python, "bench_streaq.py", "enqueue", str(n), "0", "batch"]
        subprocess.run(
            client, env=_env(direct, loop), cwd=LIBS, check=True, stdout=subprocess.DEVNULL
        )
    exe = Path(python).parent / "streaq"  # the coredis shim's directory has none
    cmd = [str(exe)] if exe.exists() else [python, "-m", "streaq"]
    cmd += ["run", "--burst", "--workers", "1", "bench_streaq:worker"]
    with log.open("w") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=_env(url, loop), cwd=LIBS, stdout=sink, stderr=sink)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    done = sum(" ■ " in line for line in log.read_text(errors="replace").splitlines())
    if proc.returncode != 0 or done != n:
        print(f"    ! exit {proc.returncode}, {done}/{n} tasks logged done (log: {log})")
        return None
    return elapsed, usage.ru_utime + usage.ru_stime


def _variants() -> list[tuple[str, str, str]]:
    """(name, python, loop) of the variants measured."""
    ours = _ours_python()
    loops = os.environ.get("BENCH_LATENCY_LOOPS", "uvloop").split(",")
    found = [(f"ours/{loop}", ours, loop) for loop in loops if loop]
    ref = VENVS / "streaq" / "bin" / "python"
    if os.environ.get("BENCH_LATENCY_REF") == "1" and ref.exists():
        found.append(("streaq-7.2/uvloop", str(ref), "uvloop"))
    return found


def main() -> None:
    """Run the rounds and print the table."""
    n = int(os.environ.get("BENCH_N", "20000"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    delays = [float(d) for d in os.environ.get("BENCH_DELAYS_MS", "0,1").split(",")]
    variants = _variants()
    logs = Path(tempfile.mkdtemp(prefix="streaq-latency-"))
    # (variant, delay) -> lists of drain s, empty-run s, CPU s
    runs: dict[tuple[str, float], tuple[list[float], list[float], list[float]]] = {}
    print(f"N={n} no-op tasks, 1 worker process (concurrency 32), {rounds} round(s); logs {logs}")
    with redis_server(PORT):
        for rnd in range(rounds):
            for delay in delays:
                with _proxy(delay) as url:
                    for name, python, loop in variants:
                        log = logs / f"{name.replace('/', '-')}-{delay:g}ms-r{rnd + 1}.log"
                        empty = _drain(python, loop, url, 0, log.with_suffix(".empty.log"))
                        full = _drain(python, loop, url, n, log)
                        cells = runs.setdefault((name, delay), ([], [], []))
                        if empty is not None and full is not None:
                            cells[0].append(full[0])
                            cells[1].append(empty[0])
                            cells[2].append(full[1])
                            print(
                                f"  [r{rnd + 1}] {name} {delay:g} ms: drain {full[0]:.2f} s, "
                                f"empty run {empty[0]:.2f} s, CPU {full[1]:.2f} s"
                            )
    print(f"\n== latency: {n} no-op tasks, 1 worker, through a delay proxy (median) ==\n")
    print("| variant | delay (one way) | drain s | empty run s | tasks/s | raw tasks/s | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for (name, delay), (drains, empties, cpus) in runs.items():
        if not drains:
            print(f"| {name} | {delay:g} ms | failed | | | | |")
            continue
        drain, startup = statistics.median(drains), statistics.median(empties)
        net = n / (drain - startup) if drain > startup else float("nan")
        cpu = statistics.median(cpus)
        print(
            f"| {name} | {delay:g} ms | {drain:.2f} | {startup:.2f} | {net:,.0f} | "
            f"{n / drain:,.0f} | {cpu:.2f} |"
        )
