"""A model-based test of the delivery protocol: random steps against a real Redis and real workers.

A Hypothesis :class:`~hypothesis.stateful.RuleBasedStateMachine` drives in-process workers (see
``_fleet.py``) on a throwaway ``redis-server`` with ``appendonly yes``. Its rules enqueue tasks --
short ones, long ones (longer than ``idle_timeout``, with prefetch on), delayed ones, ones after
others (``after=``), ``unique=True`` ones, ones held until the test releases them, ones with
explicit ids (a live id again must be refused with ``StreaqError``, and so must a task after its
own id; a finished one may be reused) -- abort tasks, crash workers mid-run (the others reclaim
after ``idle_timeout``), start workers, restart Redis, and await results. A reference model
records what each enqueued instance must end with. At the end of every example every instance is
awaited under one deadline (nothing stuck), and :meth:`DeliveryMachine.teardown` checks:

* every instance ended with the result the model allows (value, cancellation, failed dependency,
  unique refusal), and its id is DONE;
* every result was announced once on the ``done`` channel (at most once in an example with a
  Redis restart, when the counter's own subscription may have missed some);
* executions: no instance ran more than once on workers that never crashed, a result written by
  such a worker comes from its single run, tasks refused or failed before starting never ran;
  duplicates happen only on crashed workers; two ``unique`` bodies never ran at once;
* once the workers stopped, no key of the queue is left without a TTL except the persistent ones.

The steps run from the test thread; the workers run in a blocking portal's event loop on the
test's backend (a fresh one per example). ``STREAQ_STATEFUL_EXAMPLES``, ``STREAQ_STATEFUL_STEPS``,
``STREAQ_STATEFUL_IDLE`` and ``STREAQ_STATEFUL_SEED`` size it; ``nox -s stateful`` runs a long
version. A failure names the seed and the steps of the failing example.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import anyio
import anyio.from_thread
import hypothesis
import pytest
import redis
from anyio.from_thread import BlockingPortal
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    initialize,
    precondition,
    rule,
)
from servers import RedisServer, ServerFactory

from streaq import Worker
from streaq.task import Task, TaskResult, TaskStatus
from streaq.types import StreaqCancelled, StreaqError

from ._fleet import (
    DoneCounter,
    Fleet,
    Tasks,
    hold_value,
    leftovers,
    only_value,
    open_fleet,
    work_value,
)

EXAMPLES = int(os.environ.get("STREAQ_STATEFUL_EXAMPLES", "2"))
STEPS = int(os.environ.get("STREAQ_STATEFUL_STEPS", "12"))
IDLE = float(os.environ.get("STREAQ_STATEFUL_IDLE", "1"))
SEED = int(os.environ.get("STREAQ_STATEFUL_SEED", "20261205"))
#: how long all the tasks of an example may take to finish once its steps are done (seconds)
DRAIN_TIMEOUT = 60.0
#: a delayed task due later than this from now is certainly still live (seconds)
LIVE_MARGIN = 1.0
MAX_WORKERS = 3
MAX_HELD = 2
#: per example: the steps are mostly enqueues, aborts and waits
MAX_CRASHES = max(2, STEPS // 5)
MAX_RESTARTS = max(1, STEPS // 10)

pytestmark = pytest.mark.timeout(60 + EXAMPLES * (STEPS * 6 + 90))


#: one enqueue: function, long or not, delay, explicit id slot, dependencies (picks)
ENQUEUE = st.tuples(
    st.sampled_from(["work", "work", "only"]),
    st.booleans(),
    st.sampled_from([0.0, 0.0, 0.2, 2.5]),
    st.none() | st.none() | st.integers(0, 2),
    st.lists(st.integers(0, 1000), max_size=2),
)


@dataclass(eq=False)
class Instance:
    """One accepted enqueue, as the model knows it."""

    n: int
    task_id: str
    fn: str
    value: int
    deps: list[Instance]
    due: float = 0.0
    held: bool = False
    released: bool = False
    #: what ``abort`` returned (``None``: never aborted)
    aborted: bool | None = None
    result: TaskResult[Any] | None = None
    history: list[str] = field(default_factory=list)

    def may_fail(self) -> bool:
        """Whether it may end failed: aborted, unique, or after a task that may fail."""
        return self.fn == "only" or self.aborted is not None or any(d.may_fail() for d in self.deps)

    def blocked(self) -> bool:
        """Whether it may wait for the test: a held task not released (nor surely aborted), or
        after one."""
        if self.result is not None:
            return False
        if self.held and not self.released and self.aborted is not True:
            return True
        return any(d.blocked() for d in self.deps)

    def certainly_live(self, now: float) -> bool:
        """Whether it cannot have finished yet: held, due later, or waiting for such a task --
        unless a dependency may have failed, which fails it at once."""
        if self.result is not None or self.aborted is not None:
            return False
        if any(d.may_fail() for d in self.deps):
            return False
        if self.held and not self.released:
            return True
        if self.due > now + LIVE_MARGIN:
            return True
        return any(d.certainly_live(now) for d in self.deps)


@dataclass
class Environment:
    """What every example of one test shares: the server and the backend."""

    server: RedisServer
    backend: str
    backend_options: dict[str, Any]


class DeliveryMachine(RuleBasedStateMachine):
    """See the module docstring; a test binds :attr:`environment` in a subclass."""

    environment: ClassVar[Environment]

    def __init__(self) -> None:
        super().__init__()
        self.env = env = self.environment
        self.queue = f"stateful-{uuid.uuid4().hex[:10]}"
        self.log: list[str] = [f"queue {self.queue} on {env.backend}, seed {SEED}"]
        self.instances: list[Instance] = []
        self.by_id: dict[str, Instance] = {}
        self.crashed: set[str] = set()
        self.restarts = 0
        self._n = 0
        self._stack = contextlib.ExitStack()
        try:
            self.portal: BlockingPortal = self._stack.enter_context(
                anyio.from_thread.start_blocking_portal(env.backend, env.backend_options)
            )
            self.counter = DoneCounter(env.server.port, self.queue)
            self._stack.callback(self.counter.stop)
            upstream = ("127.0.0.1", env.server.port)
            fleet_cm = open_fleet(upstream, self.queue, IDLE)
            self.fleet: Fleet
            self.producer: Worker[Any]
            self.tasks: Tasks
            self.fleet, self.producer, self.tasks = self._stack.enter_context(
                self.portal.wrap_async_context_manager(fleet_cm)
            )
            for _ in range(2):
                self.portal.call(self.fleet.start_worker)
        except BaseException:
            self._stack.close()
            raise

    # helpers

    def _note(self, line: str) -> None:
        """Log a step (the failure message lists them)."""
        self.log.append(f"{time.monotonic():.2f} {line}")

    def _fail(self, problem: str) -> None:
        """Fail the example with ``problem`` and the steps that led to it."""
        steps = "\n  ".join(self.log)
        raise AssertionError(f"{problem}\nsteps (seed {SEED}):\n  {steps}")

    def _current(self) -> list[Instance]:
        """The latest instance of every id."""
        return list(self.by_id.values())

    def _pick(self, pick: int, among: list[Instance]) -> Instance | None:
        """The ``pick``-th of ``among`` (modulo its length), or ``None`` when it is empty."""
        return among[pick % len(among)] if among else None

    def _await(self, instance: Instance, timeout: float) -> TaskResult[Any]:
        """Wait for ``instance``'s result (it must come within ``timeout``)."""

        async def wait() -> TaskResult[Any]:
            result: TaskResult[Any] = await self.producer.result_by_id(
                instance.task_id, timeout=timeout
            )
            return result

        try:
            outcome: TaskResult[Any] = self.portal.call(wait)
        except TimeoutError:
            status = self.portal.call(self.producer.status_by_id, instance.task_id)
            self._fail(f"{instance.fn} {instance.task_id} (n={instance.n}) stuck: {status}")
            raise
        instance.result = outcome
        return outcome

    # rules

    @initialize(specs=st.lists(ENQUEUE, min_size=2, max_size=6))
    def first_tasks(self, specs: list[tuple[str, bool, float, int | None, list[int]]]) -> None:
        """Every example starts with a few tasks, so no example is empty."""
        for spec in specs:
            self._enqueue(*spec)

    @rule(specs=st.lists(ENQUEUE, min_size=1, max_size=4))
    def enqueue(self, specs: list[tuple[str, bool, float, int | None, list[int]]]) -> None:
        """Enqueue one to four tasks, one call each (see :meth:`_enqueue`)."""
        for spec in specs:
            self._enqueue(*spec)

    def _enqueue(
        self, fn: str, long: bool, delay: float, slot: int | None, deps: list[int]
    ) -> None:
        """Enqueue ``work`` or ``only``: short or longer than ``idle_timeout``, maybe delayed,
        with an explicit id (maybe one in use), maybe after other tasks."""
        self._n += 1
        n = self._n
        pause = IDLE * (1.3 + (n % 5) / 10) if long else 0.01 * (n % 4)
        registered = self.tasks.only if fn == "only" else self.tasks.work
        task: Task[Any, Any] = registered.enqueue(n, pause)
        after = list(
            dict.fromkeys(self._current()[p % len(self.by_id)] for p in deps if self.by_id)
        )
        if after or delay:
            task.start(
                after=[d.task_id for d in after] or None,
                delay=timedelta(seconds=delay) if delay else None,
            )
        generated = task.id
        if slot is not None:
            task.id = f"id-{slot}"
            current = self.by_id.get(task.id)
            refusal = None
            if current is not None and current.certainly_live(time.time()):
                refusal = "live"
            elif any(d.task_id == task.id for d in after):
                refusal = "after its own id"
            if refusal is not None:
                self._note(f"enqueue {fn} n={n} id={task.id}: {refusal}, must be refused")
                try:
                    self.portal.call(self.producer.enqueue_many, [task])
                except StreaqError:
                    return
                self._fail(f"an enqueue of {task.id} ({refusal}) was accepted")
            if current is not None and current.blocked():
                # it may or may not be live: the outcome of the enqueue is not known
                task.id = generated
            elif current is not None and current.result is None:
                # finished or about to: its result first, then the id may be given again
                self._await(current, DRAIN_TIMEOUT)
        value = only_value(n) if fn == "only" else work_value(n)
        instance = Instance(n, task.id, fn, value, after, due=time.time() + delay if delay else 0.0)
        self._note(
            f"enqueue {fn} n={n} id={task.id} pause={pause:.2f} delay={delay} "
            f"after={[d.n for d in after]}"
        )
        self.portal.call(self.producer.enqueue_many, [task])
        self.instances.append(instance)
        self.by_id[task.id] = instance

    @precondition(
        lambda self: sum(1 for i in self._current() if i.held and not i.released) < MAX_HELD
    )
    @rule()
    def enqueue_held(self) -> None:
        """Enqueue ``hold``: live for certain until released (or aborted)."""
        self._n += 1
        n = self._n
        task = self.tasks.hold.enqueue(n)
        self.portal.call(self.producer.enqueue_many, [task])
        instance = Instance(n, task.id, "hold", hold_value(n), [], held=True)
        self.instances.append(instance)
        self.by_id[task.id] = instance
        self._note(f"enqueue hold n={n} id={task.id}")

    @precondition(lambda self: any(i.held and not i.released for i in self._current()))
    @rule(pick=st.integers(0, 1000))
    def release(self, pick: int) -> None:
        """Let a held task return."""
        held = [i for i in self._current() if i.held and not i.released]
        instance = self._pick(pick, held)
        if instance is None:
            return
        instance.released = True
        self._note(f"release n={instance.n}")
        self.portal.call(self.fleet.recorder.release(instance.n).set)

    @precondition(lambda self: any(i.result is None for i in self.instances))
    @rule(pick=st.integers(0, 1000))
    def abort(self, pick: int) -> None:
        """Abort a task (finished or not)."""
        instance = self._pick(pick, self._current())
        if instance is None:
            return

        async def abort() -> bool:
            return await self.producer.abort_by_id(instance.task_id, timeout=3)

        stopped = self.portal.call(abort)
        self._note(f"abort n={instance.n} -> {stopped}")
        if instance.result is not None:
            if stopped:
                self._fail(f"abort of the finished task n={instance.n} returned True")
        elif instance.aborted is not True:
            instance.aborted = stopped

    @precondition(
        lambda self: (
            len(self.crashed) < MAX_CRASHES and any(i.result is None for i in self.instances)
        )
    )
    @rule()
    def crash(self) -> None:
        """SIGKILL-like crash of a worker, mid-run if one runs a task within a moment; a
        replacement starts when fewer than two are left, and reclaims after ``idle_timeout``."""
        label = self.portal.call(self.fleet.crash, 1.0)
        self.crashed.add(label)
        self._note(f"crash {label}")
        if len(self.fleet.live()) < 2:
            self._note(f"start {self.portal.call(self.fleet.start_worker)}")

    @precondition(lambda self: len(self.fleet.live()) < MAX_WORKERS)
    @rule()
    def start_worker(self) -> None:
        """One more worker."""
        self._note(f"start {self.portal.call(self.fleet.start_worker)}")

    @precondition(lambda self: self.restarts < MAX_RESTARTS and bool(self.instances))
    @rule()
    def restart_redis(self) -> None:
        """Restart Redis (SIGTERM: the AOF keeps everything)."""
        self._note("restart redis")
        self.env.server.restart()
        self.restarts += 1

    @precondition(lambda self: any(i.result is None for i in self.instances))
    @rule(pick=st.integers(0, 1000))
    def await_result(self, pick: int) -> None:
        """Wait for the result of a task that can finish."""
        # a delayed task is awaited too (it is due soon); one waiting for the test is not
        finishable = [i for i in self._current() if i.result is None and not i.blocked()]
        instance = self._pick(pick, finishable)
        if instance is None:
            return
        self._note(f"await n={instance.n}")
        self._await(instance, DRAIN_TIMEOUT)

    # the end

    def teardown(self) -> None:
        """Drain, then check every invariant (module docstring); always tears the example down."""
        try:
            self._drain_and_check()
        finally:
            self._stack.close()
            client = redis.Redis(port=self.env.server.port)
            try:
                keys = list(client.scan_iter(match=f"streaq:{{{self.queue}}}:*", count=1000))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()

    def _drain_and_check(self) -> None:
        self._note("drain")
        for instance in self._current():
            if instance.held and not instance.released:
                instance.released = True
                self.portal.call(self.fleet.recorder.release(instance.n).set)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for instance in self._current():
            if instance.result is None:
                self._await(instance, max(0.1, deadline - time.monotonic()))
        for instance in self._current():
            status = self.portal.call(self.producer.status_by_id, instance.task_id)
            if status != TaskStatus.DONE:
                self._fail(f"{instance.task_id} (n={instance.n}) is {status} after its result")
        expected: dict[str, int] = {}
        for instance in self.instances:
            expected[instance.task_id] = expected.get(instance.task_id, 0) + 1
        self.counter.wait_for(expected, 5.0)
        recorder = self.fleet.recorder
        problems = [p for i in self.instances for p in self._check(i, recorder.runs.get(i.n, []))]
        announced = dict(self.counter.counts)
        for task_id, count in expected.items():
            got = announced.get(task_id, 0)
            # after a Redis restart the counter's subscription may have missed announcements
            # (redis-py subscribes again by itself): then only "at most once" is checked
            exact = not (self.counter.gaps or self.restarts)
            if got > count or (got < count and exact):
                problems.append(f"{task_id}: announced {got} times for {count} instance(s)")
        if recorder.unique_peak > 1:
            problems.append(f"{recorder.unique_peak} unique tasks ran at once")
        # stop the workers cleanly (hand back, retire) before looking at the keys
        self.portal.call(self.fleet.stop_and_wait, 30.0)
        problems += leftovers(self.env.server.port, self.queue)
        runs = sum(len(recorder.runs.get(i.n, [])) for i in self.instances)
        self._note(
            f"checked {len(self.instances)} tasks, {runs} runs, crashes {len(self.crashed)}, "
            f"restarts {self.restarts}, aborts {sum(i.aborted is not None for i in self.instances)}"
        )
        if problems:
            self._fail("invariants broken:\n  " + "\n  ".join(problems))
        print(f"\n[stateful/{self.env.backend}] {self.log[-1]}")

    def _check(self, instance: Instance, runs: list[Any]) -> list[str]:
        """What is wrong with one instance's result and executions."""
        res = instance.result
        assert res is not None
        name = f"{instance.fn} {instance.task_id} (n={instance.n})"
        error = None if res.success else res.exception
        cancelled = isinstance(error, StreaqCancelled)
        deps_ok = all(d.result is not None and d.result.success for d in instance.deps)
        if instance.aborted is True and not cancelled:
            return [f"{name}: abort returned True, result {res._result!r}"]
        problems: list[str] = []
        if not deps_ok:
            if res.success or not (cancelled or "dependency" in str(error)):
                problems.append(f"{name}: a dependency failed, result {res._result!r}")
        elif res.success:
            if res.result != instance.value:
                problems.append(f"{name}: {res.result!r} != {instance.value!r}")
        elif cancelled:
            if instance.aborted is None:
                problems.append(f"{name}: cancelled, never aborted")
        elif not (instance.fn == "only" and "is unique" in str(error)):
            problems.append(f"{name}: failed: {error!r}")
        healthy = [r for r in runs if r.worker_id not in self.crashed]
        if len(healthy) > 1:
            problems.append(f"{name}: ran {len(healthy)} times on healthy workers: {healthy}")
        if res.success:
            if not any(r.worker_id == res.worker_id and r.returned for r in runs):
                problems.append(f"{name}: result by {res.worker_id}, which did not run it")
            elif res.worker_id not in self.crashed and len(healthy) != 1:
                problems.append(f"{name}: {len(healthy)} healthy runs")
        elif not cancelled and healthy:
            problems.append(f"{name}: refused or failed before starting, yet ran: {healthy}")
        return problems


def test_delivery_model(
    redis_server: ServerFactory, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    """Random step sequences against real workers agree with the reference model."""
    env = Environment(redis_server(appendonly=True), anyio_backend[0], anyio_backend[1])

    class BoundMachine(DeliveryMachine):
        environment = env

    test = get_state_machine_test(
        BoundMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            database=None,
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        ),
    )
    hypothesis.seed(SEED)(test)()
