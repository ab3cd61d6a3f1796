"""Fixtures of the durability suite: worker subprocesses started through the CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import redis

HERE = Path(__file__).parent


class WorkerProcesses:
    """``streaq run app:worker`` subprocesses; every one is killed in teardown.

    :param log_dir: where each process' stderr goes (``worker-<n>.log``).
    :param env: the ``STREAQ_DUR_*`` settings of the app.
    """

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ)
        self.env.pop("STREAQ_TEST_BACKEND", None)
        # crash points are per process, set by the tests that want them (start(env=...))
        self.env.pop("STREAQ_CRASHPOINTS", None)
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(HERE), self.env.get("PYTHONPATH")])
        )
        self.env.update(env)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self.started = 0

    def start(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start one more worker process.

        :param env: variables set for this process only, on top of the group's
        """
        log = open(self.log_dir / f"worker-{self.started}.log", "wb")  # noqa: SIM115
        self._logs.append(log)
        self.started += 1
        proc = subprocess.Popen(
            [sys.executable, "-m", "streaq", "run", "app:worker"],
            cwd=HERE,
            env={**self.env, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        """The processes still running."""
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL one process and reap it."""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def terminate(self, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
        """SIGTERM ``procs`` and wait for them all (blocking).

        :raises subprocess.TimeoutExpired: when one is still running after ``timeout`` seconds
        """
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def stop_all(self) -> None:
        """SIGTERM every live process (SIGKILL after 10 s) and close the logs."""
        for proc in self.alive():
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        """What one process wrote to stderr."""
        n = self.procs.index(proc)
        self._logs[n].flush()
        return (self.log_dir / f"worker-{n}.log").read_text(errors="replace")

    def logs(self) -> str:
        """Everything the processes wrote to stderr so far."""
        for log in self._logs:
            log.flush()
        return "".join(
            (self.log_dir / f"worker-{n}.log").read_text(errors="replace")
            for n in range(self.started)
        )


class ProcessFactory:
    """Creates :class:`WorkerProcesses` groups and stops them all in teardown."""

    def __init__(self, tmp_path: Path, backend: str) -> None:
        self.tmp_path = tmp_path
        self.backend = backend
        self.groups: list[WorkerProcesses] = []

    def __call__(
        self,
        redis_url: str,
        queue: str,
        *,
        idle_timeout: float = 1.0,
        concurrency: int = 8,
        record: bool = True,
        ca_file: str | None = None,
        cron: bool = False,
        grace_period: float = 0.0,
    ) -> WorkerProcesses:
        log_dir = self.tmp_path / f"workers-{len(self.groups)}"
        log_dir.mkdir()
        env = {
            "STREAQ_DUR_URL": redis_url,
            "STREAQ_DUR_QUEUE": queue,
            "STREAQ_DUR_BACKEND": self.backend,
            "STREAQ_DUR_IDLE": str(idle_timeout),
            "STREAQ_DUR_CONCURRENCY": str(concurrency),
            "STREAQ_DUR_RECORD": "1" if record else "0",
            "STREAQ_DUR_CA": ca_file or "",
            "STREAQ_DUR_CRON": "1" if cron else "0",
            "STREAQ_DUR_GRACE": str(grace_period),
        }
        group = WorkerProcesses(log_dir, env)
        self.groups.append(group)
        return group

    def stop_all(self) -> None:
        for group in self.groups:
            with contextlib.suppress(Exception):
                group.stop_all()


@pytest.fixture
def worker_processes(tmp_path: Path, backend_name: str) -> Iterator[ProcessFactory]:
    """Start ``streaq run app:worker`` subprocesses on the test's backend; all stopped after."""
    factory = ProcessFactory(tmp_path, backend_name)
    try:
        yield factory
    finally:
        factory.stop_all()


def queue_leftovers(client: redis.Redis, queue: str) -> list[str]:
    """Every key of ``queue`` that should not be there once all its tasks are done."""
    prefix = f"streaq:{{{queue}}}:"
    bad: list[str] = []
    for raw in client.scan_iter(match=prefix + "*", count=1000):
        name = raw.decode()[len(prefix) :]
        if name.startswith(("r:", "fc:", "wi:", "pg:")) or name == "ev":
            # results, the kept calls of failed tasks, tasks' progress, workers' reports and the
            # bounded event stream all expire
            if client.pttl(raw) <= 0:
                bad.append(f"{name}: without a TTL")
        elif name.startswith("s:"):
            if client.xlen(raw):
                bad.append(f"{name}: stream not empty")
            pending: Any = client.xpending(raw, "g")
            if pending["pending"]:
                bad.append(f"{name}: {pending['pending']} pending")
        elif name in ("workers", "lim"):
            # heartbeats of the workers that served the queue, and the flow limits of its tasks:
            # not task state
            continue
        else:
            bad.append(f"{name} ({client.type(raw)!r})")
    return bad


def delete_keys(redis_url: str, *patterns: str) -> None:
    """Delete every key matching ``patterns`` (SCAN + DEL)."""
    client = redis.Redis.from_url(redis_url)
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()
