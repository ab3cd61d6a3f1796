"""The kill scenario shared by the kill tests: workload, worker processes, end checks, figures.

A :class:`KillScenario` runs the durability app (``app.py``) in ``streaq run`` processes against a
throwaway Redis:

1. a *steady* process (cron on, never disrupted, two runners) starts first; the scenario waits
   for its first cron firing, so every later second has a process that fires it;
2. ``PROCESSES`` *disruptable* processes (cron on, plus the caller's environment, e.g.
   ``STREAQ_CRASHPOINTS``) start, and the producer enqueues waves of plain, delayed, retried,
   chained and fallback tasks while the caller's ``disrupt`` coroutine kills processes;
3. disruption ends; every process left gets SIGTERM and must stop on its own within its grace
   period (so nothing but a SIGKILL interrupts a run); fresh processes without cron or crash
   points drain what is left.

:meth:`KillScenario.check` then asserts what the durability issue asks for: every task ended as
it should with exactly one result (awaited, and announced exactly once on the ``done`` channel),
every cron firing of the covered window ran and has one result, nothing is queued, indexed or
pending, no key leaked, and every run not interrupted by a kill happened exactly once -- a run is
excused only when the process that started it was SIGKILLed.
"""

from __future__ import annotations

import collections
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import msgspec
import redis
from servers import RedisServer

from streaq._cron import cron_firing_id
from streaq.task import Task, TaskResult, TaskStatus
from streaq.utils import now_ms

from .app import CRON_NAME, App, build, record_prefix
from .conftest import ProcessFactory, WorkerProcesses, queue_leftovers

PROCESSES = 3
CONCURRENCY = 8
IDLE_TIMEOUT = 1.0
#: tasks per wave running longer than IDLE_TIMEOUT
LONG_TASKS = 6
#: tasks per wave of the concurrency-limited task
LIMITED_TASKS = 10
#: long enough for any task of the workload: a SIGTERMed worker finishes what it runs
GRACE_PERIOD = 10.0
#: a firing this close to the steady process' SIGTERM may have been cancelled mid-enqueue
CRON_MARGIN_MS = 2000
CRON_PREFIX = f"cron:{CRON_NAME}:"

Popen = subprocess.Popen[bytes]
#: what disrupts the workers while the workload runs (cancelled when the disruption ends)
Disruption = Callable[[], Coroutine[Any, Any, None]]


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class DoneListener:
    """Counts the ids announced on the queue's ``done`` channel (a thread, sync redis-py)."""

    def __init__(self, port: int, queue: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._announced = threading.Condition()
        self._client = redis.Redis(port=port)
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(f"streaq:{{{queue}}}:done")
        self._pubsub.get_message(timeout=5)  # the subscription confirmation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is None or message["type"] != "message":
                continue
            with self._announced:
                for item in msgspec.msgpack.decode(message["data"]):
                    self.counts[_text(item[0])] += 1
                self._announced.notify_all()

    def wait_for(self, prefix: str, timeout: float) -> list[str]:
        """Block until an id starting with ``prefix`` was announced; all such ids so far.

        :raises TimeoutError: when none is announced within ``timeout`` seconds
        """

        def found() -> list[str]:
            return [t for t in self.counts if t.startswith(prefix)]

        with self._announced:
            if not self._announced.wait_for(found, timeout):
                raise TimeoutError(f"no {prefix}* result announced in {timeout} s")
            return found()

    def stop(self) -> None:
        """Unsubscribe and join the thread."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()
        self._client.close()


class Workload:
    """The tasks enqueued, what each should end with, and how often each should run."""

    def __init__(self, app: App, rng: random.Random) -> None:
        self.app = app
        self.rng = rng
        self.tasks: list[Task[Any, Any]] = []
        #: task id -> (success, value) expected
        self.expected: dict[str, tuple[bool, Any]] = {}
        #: task id -> the executions it needs when nothing goes wrong
        self.ideal: dict[str, int] = {}
        self._n = 0

    def _add(self, task: Task[Any, Any], success: bool, value: Any, runs: int) -> None:
        self.tasks.append(task)
        self.expected[task.id] = (success, value)
        self.ideal[task.id] = runs

    async def wave(self) -> None:
        """Enqueue 248 tasks: plain, long, delayed, retried, concurrency-limited, 3-link chains,
        fallbacks, groups of plain and retried tasks with their collector (which must run once).

        The long ones run longer than ``IDLE_TIMEOUT``, so that with prefetch on (the default)
        claimed messages wait longer than a lease behind them: they must run once all the same.
        """
        app, rng = self.app, self.rng
        batch: list[tuple[Task[Any, Any], int, int]] = []
        for _ in range(120):
            self._n += 1
            batch.append((app.plain.enqueue(self._n, rng.uniform(0, 0.05)), self._n, 1))
        for _ in range(LONG_TASKS):
            self._n += 1
            duration = rng.uniform(1.5, 3) * IDLE_TIMEOUT
            batch.append((app.plain.enqueue(self._n, duration), self._n, 1))
        for _ in range(20):
            self._n += 1
            delay = timedelta(seconds=rng.uniform(0.1, 3))
            batch.append((app.plain.enqueue(self._n, 0.01).start(delay=delay), self._n, 1))
        for _ in range(20):
            self._n += 1
            batch.append((app.retried.enqueue(self._n), self._n, 3))
        for _ in range(LIMITED_TASKS):
            # flow control under kills: a killed worker's admitted task keeps its slot until
            # another worker has taken it over and finished it
            self._n += 1
            batch.append((app.limited.enqueue(self._n, rng.uniform(0, 0.05)), self._n, 1))
        await app.worker.enqueue_many([t for t, _, _ in batch])
        for task, value, runs in batch:
            self._add(task, True, value, runs)
        for _ in range(10):
            self._n += 1
            head = app.plain.enqueue(self._n, rng.uniform(0, 0.02))
            middle = head.then(app.step)
            tail = await middle.then(app.step)
            self._add(head, True, self._n, 1)
            self._add(middle, True, self._n + 1, 1)
            self._add(tail, True, self._n + 2, 1)
        for _ in range(5):
            self._n += 1
            doomed = app.failing.enqueue(self._n)
            rescue = await doomed.otherwise(app.fallback)
            self._add(doomed, False, ValueError, 1)
            self._add(rescue, True, -self._n, 1)
        for _ in range(5):
            self._n += 1
            fine = app.plain.enqueue(self._n, 0.01)
            unneeded = await fine.otherwise(app.plain_fallback)
            self._add(fine, True, self._n, 1)
            self._add(unneeded, True, self._n, 0)
        for _ in range(2):
            members: list[Task[Any, int]] = []
            for k in range(10):
                self._n += 1
                if k % 3 == 0:
                    members.append(app.retried.enqueue(self._n))
                    self._add(members[-1], True, self._n, 3)
                else:
                    members.append(app.plain.enqueue(self._n, rng.uniform(0, 0.05)))
                    self._add(members[-1], True, self._n, 1)
            collector = await app.worker.group(members).then(app.total)
            self._add(collector, True, sum(range(self._n - 9, self._n + 1)), 1)


@dataclass
class Execution:
    """One recorded start of a task body."""

    pid: int
    worker_id: str


@dataclass
class Figures:
    """What a scenario measured; :meth:`line` prints it."""

    tasks: int = 0
    kills: int = 0
    duplicates: int = 0
    max_recovery: float = 0.0
    slowest: str = ""
    drain: float = 0.0
    total: float = 0.0
    cron_window: int = 0
    cron_ran: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self, label: str) -> str:
        """One line of figures, for the test's output."""
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"\n[{label}] tasks={self.tasks} kills={self.kills}{extra} "
            f"duplicates={self.duplicates} max recovery={self.max_recovery:.2f}s "
            f"({self.slowest}; first start of an interrupted task -> its result) "
            f"cron firings={self.cron_ran} ({self.cron_window} in the covered window) "
            f"drain={self.drain:.2f}s total={self.total:.1f}s"
        )


class KillScenario:
    """One run of the kill workload (see the module docstring).

    :param server: the throwaway Redis
    :param factory: the ``worker_processes`` fixture
    :param backend: the test's anyio backend
    :param queue: the test's queue
    :param seed: seeds the workload and the caller's random choices (:attr:`rng`)
    :param env: extra variables of the disruptable processes (e.g. ``STREAQ_CRASHPOINTS``)
    """

    def __init__(
        self,
        server: RedisServer,
        factory: ProcessFactory,
        backend: str,
        queue: str,
        seed: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.server = server
        self.queue = queue
        self.app = build(server.url, queue, backend=backend)
        self.procs: WorkerProcesses = factory(
            server.url,
            queue,
            idle_timeout=IDLE_TIMEOUT,
            concurrency=CONCURRENCY,
            cron=True,
            grace_period=GRACE_PERIOD,
        )
        self.rng = random.Random(seed)
        self.workload = Workload(self.app, self.rng)
        self.env = dict(env or {})
        self.steady: Popen | None = None
        self.results: dict[str, TaskResult[Any]] = {}
        self.cron_results: dict[str, TaskResult[Any]] = {}
        self.cron_from = 0
        self.cron_until = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.figures = Figures()
        self._reaped: set[Popen] = set()

    # used by the caller's disruption

    def start_worker(self) -> Popen:
        """Start a disruptable worker process."""
        return self.procs.start(self.env)

    def disruptable(self) -> list[Popen]:
        """The disruptable processes still running."""
        return [p for p in self.procs.alive() if p is not self.steady]

    def reap(self) -> list[Popen]:
        """The processes found dead since the last call."""
        dead = [p for p in self.procs.procs if p not in self._reaped and p.poll() is not None]
        self._reaped.update(dead)
        return dead

    # the run

    async def run(
        self,
        disrupt: Disruption,
        *,
        waves: int,
        seconds: float,
        enough: anyio.Event | None = None,
        max_seconds: float = 60.0,
    ) -> None:
        """Run the scenario; :meth:`check` asserts on what it left.

        :param disrupt: runs (cancelled at the end of the disruption) beside the producer
        :param waves: workload waves, enqueued evenly over ``seconds - 5``
        :param seconds: the disruption lasts at least this long...
        :param enough: ...and, when given, until this is set (with more waves)...
        :param max_seconds: ...but no longer than this
        """
        procs, app = self.procs, self.app
        listener = DoneListener(self.server.port, self.queue)
        began = time.monotonic()
        try:
            async with app.worker:
                self.steady = procs.start({"STREAQ_DUR_CONCURRENCY": "2"})
                # every firing from the steady process' first on is covered by it
                fired = await anyio.to_thread.run_sync(listener.wait_for, CRON_PREFIX, 30)
                self.cron_from = min(int(t.rsplit(":", 1)[1]) for t in fired)
                for _ in range(PROCESSES):
                    self.start_worker()
                await self._disrupt(disrupt, waves, seconds, enough, max_seconds)
                disrupted = time.monotonic()
                self.cron_until = now_ms() - CRON_MARGIN_MS
                # SIGTERM: each process must finish its runs and stop by itself
                alive = procs.alive()
                await anyio.to_thread.run_sync(procs.terminate, alive, GRACE_PERIOD + 20)
                stopped = now_ms()
                procs.env["STREAQ_DUR_CRON"] = "0"
                for _ in range(PROCESSES):
                    procs.start()
                with anyio.fail_after(60):
                    self.results = {t.id: await t.result(timeout=60) for t in self.workload.tasks}
                    # nothing fires any more: the firings that exist are all there will be
                    for fire_ms in range(self.cron_from, stopped + 1, 1000):
                        task_id = cron_firing_id(CRON_NAME, fire_ms)
                        if fire_ms <= self.cron_until or (
                            await app.worker.status_by_id(task_id) != TaskStatus.NOT_FOUND
                        ):
                            self.cron_results[task_id] = await app.worker.result_by_id(
                                task_id, timeout=60
                            )
                self.figures.drain = time.monotonic() - disrupted
                assert await app.worker.queue_size() == 0
        finally:
            listener.stop()
        self.counts = listener.counts
        self.figures.total = time.monotonic() - began

    async def _disrupt(
        self,
        disrupt: Disruption,
        waves: int,
        seconds: float,
        enough: anyio.Event | None,
        max_seconds: float,
    ) -> None:
        start = time.monotonic()
        with anyio.fail_after(max_seconds + 30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(disrupt)
                pause = max(0.0, seconds - 5) / waves
                for _ in range(waves):
                    await self.workload.wave()
                    await anyio.sleep(pause)
                if enough is not None:
                    # more waves: most disruptions need tasks passing through the workers
                    with anyio.move_on_after(max_seconds - (time.monotonic() - start)):
                        while not enough.is_set():
                            await self.workload.wave()
                            with anyio.move_on_after(pause):
                                await enough.wait()
                await anyio.sleep(max(0.0, seconds - (time.monotonic() - start)))
                tg.cancel_scope.cancel()

    # the checks

    def _starting_when_stopped(self, proc: Popen) -> bool:
        # SIGTERM reached a process before its worker handled signals (a replacement started
        # just before the disruption ended): the default action killed it, as SIGKILL would
        return proc.returncode == -signal.SIGTERM and "started:" not in self.procs.log_of(proc)

    def killed_pids(self) -> set[int]:
        """The processes that died by SIGKILL (the test's or a crash point's), or by a SIGTERM
        that came before their worker started."""
        return {
            p.pid
            for p in self.procs.procs
            if p.returncode == -signal.SIGKILL or self._starting_when_stopped(p)
        }

    def self_crashes(self) -> list[str]:
        """The logs of processes that ended otherwise than by a kill or a clean stop."""
        return [
            self.procs.log_of(p)
            for p in self.procs.procs
            if p.poll() not in (None, 0, -signal.SIGKILL) and not self._starting_when_stopped(p)
        ]

    def check(self) -> Figures:
        """Assert the end state (see the module docstring) and return the figures."""
        crashes = self.self_crashes()
        assert not crashes, f"a worker died by itself: {crashes[0][-3000:]}"
        self._check_results()
        client = redis.Redis(port=self.server.port)
        try:
            assert client.hlen(f"{self.app.worker.keys.prefix}t") == 0
            assert queue_leftovers(client, self.queue) == []
            prefix = record_prefix(self.queue)
            execs: dict[str, list[Execution]] = collections.defaultdict(list)
            for raw in client.lrange(prefix + "execs", 0, -1):
                task_id, pid, worker_id = _text(raw).split(" ")
                execs[task_id].append(Execution(int(pid), worker_id))
            first = {_text(k): int(v) for k, v in client.hgetall(prefix + "first").items()}
        finally:
            client.close()
        self._check_runs(execs, first)
        fig = self.figures
        fig.tasks = len(self.workload.tasks)
        fig.cron_window = sum(
            1 for t in self.cron_results if int(t.rsplit(":", 1)[1]) <= self.cron_until
        )
        fig.cron_ran = sum(1 for t in self.cron_results if execs.get(t))
        return fig

    def _check_results(self) -> None:
        wrong: list[str] = []
        for task_id, (success, value) in self.workload.expected.items():
            res = self.results[task_id]
            if res.success != success:
                wrong.append(f"{task_id} ({res.fn_name}): success={res.success} {res._result!r}")
            elif success and res.result != value:
                wrong.append(f"{task_id} ({res.fn_name}): {res.result!r} != {value!r}")
            elif not success and not isinstance(res.exception, value):
                wrong.append(f"{task_id} ({res.fn_name}): {res.exception!r}")
        wrong += [f"{t}: {r._result!r}" for t, r in self.cron_results.items() if not r.success]
        assert wrong == []
        ours = set(self.workload.expected) | set(self.cron_results)
        announced = {t: n for t, n in self.counts.items() if t in ours or t.startswith(CRON_PREFIX)}
        twice = {t: n for t, n in announced.items() if n != 1}
        assert twice == {}, "tasks whose result was written more than once"
        missing = ours - set(announced)
        assert not missing, f"{len(missing)} results never announced: {sorted(missing)[:5]}"

    def _check_runs(self, execs: dict[str, list[Execution]], first: dict[str, int]) -> None:
        killed = self.killed_pids()
        ideal = dict(self.workload.ideal)
        ideal.update(dict.fromkeys(self.cron_results, 1))
        results = {**self.results, **self.cron_results}
        too_few: dict[str, int] = {}
        unexcused: dict[str, list[str]] = {}
        for task_id, needed in ideal.items():
            runs = execs.get(task_id, [])
            if len(runs) < needed:
                too_few[task_id] = len(runs)
            # a run on a process that lived on (or stopped cleanly) was not interrupted by a
            # kill: those must add up to no more than the task needs...
            kept = [r for r in runs if r.pid not in killed]
            bad = len(kept) > needed or (needed == 0 and bool(runs))
            # ...and a task run once ideally ran exactly once on the worker that wrote its result
            if needed == 1 and runs:
                writer = results[task_id].worker_id
                bad = bad or sum(1 for r in runs if r.worker_id == writer) != 1
            if bad:
                unexcused[task_id] = [f"{r.pid}/{r.worker_id}" for r in runs]
        assert too_few == {}, "tasks that ran less often than they must"
        assert unexcused == {}, f"runs repeated without a kill (killed: {sorted(killed)})"
        extra = {t: len(execs.get(t, [])) - n for t, n in ideal.items()}
        self.figures.duplicates = sum(extra.values())
        recoveries = {
            t: results[t].finish_time / 1000 - first[t] / 1000 for t, n in extra.items() if n > 0
        }
        if recoveries:
            slowest = max(recoveries, key=lambda t: recoveries[t])
            self.figures.max_recovery = recoveries[slowest]
            self.figures.slowest = f"{results[slowest].fn_name}, {len(execs[slowest])} runs"
