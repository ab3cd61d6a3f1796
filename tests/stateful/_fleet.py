"""The machinery under the model-based test: in-process workers that can crash, a run recorder,
a counter of result announcements and the end-of-run key check.

Theory of operation
-------------------
Every worker of a :class:`Fleet` runs in the test's event loop (the one of a blocking portal) and
reaches Redis only through a :class:`SeverableProxy` of its own. A *crash* severs the proxy first
-- every link is closed and every later connection is closed at once, so nothing the worker still
wants to say (a shielded hand-back, a retire, a lease) reaches Redis -- and then cancels the
worker's scope, which stops its task bodies. For Redis this is what a SIGKILL leaves: the messages
stay pending for a consumer that never renews them, and another worker takes them over after
``idle_timeout``. The proxy keeps its port while the worker lingers, so no other listener takes it.

Task bodies record each execution in a :class:`Recorder` (the argument ``n`` identifies the
enqueued instance, so a reused task id is told apart), together with the worker that ran it and
whether the body returned. A :class:`DoneCounter` thread counts the ids announced on the queue's
``done`` channel: a result written twice is announced twice.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import anyio.abc
import msgspec
import redis

from streaq import Worker
from streaq.task import AsyncRegisteredTask

#: runners per worker; prefetch is left at its default (as many again)
CONCURRENCY = 3
#: enough tries that repeated crashes never send a task to the dead letters
MAX_TRIES = 50
#: the values the task bodies return for their instance number ``n``
WORK_VALUE, ONLY_VALUE, HOLD_VALUE = 3, 5, 7


def work_value(n: int) -> int:
    """What ``work(n, ...)`` returns."""
    return n * WORK_VALUE + 1


def only_value(n: int) -> int:
    """What ``only(n, ...)`` returns."""
    return n * ONLY_VALUE + 2


def hold_value(n: int) -> int:
    """What ``hold(n)`` returns."""
    return n * HOLD_VALUE + 3


class SeverableProxy:
    """A TCP proxy to Redis that one call cuts for good (see the module docstring).

    :param upstream: ``(host, port)`` of the server.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.severed = False
        self._links: set[anyio.CancelScope] = set()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` of the proxy."""
        return f"redis://127.0.0.1:{self.port}"

    def sever(self) -> None:
        """Close every link now and every connection accepted from now on."""
        self.severed = True
        for scope in list(self._links):
            scope.cancel()

    async def _handle(self, downstream: anyio.abc.SocketStream) -> None:
        async with downstream:
            if self.severed:
                return
            try:
                upstream = await anyio.connect_tcp(*self.upstream)
            except OSError:
                return  # Redis is restarting: the client sees a closed connection and retries
            async with upstream, anyio.create_task_group() as tg:
                self._links.add(tg.cancel_scope)
                try:
                    tg.start_soon(_pump, downstream, upstream, tg.cancel_scope)
                    tg.start_soon(_pump, upstream, downstream, tg.cancel_scope)
                    await anyio.sleep_forever()
                finally:
                    self._links.discard(tg.cancel_scope)


async def _pump(
    source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, link: anyio.CancelScope
) -> None:
    """Forward ``source`` to ``sink``; when either side ends, end the whole link."""
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        link.cancel()


@asynccontextmanager
async def open_severable_proxy(upstream: tuple[str, int]) -> AsyncIterator[SeverableProxy]:
    """Run a :class:`SeverableProxy` for the duration of the ``async with``."""
    proxy = SeverableProxy(upstream)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()


@dataclass
class Run:
    """One execution of a task body."""

    n: int
    worker_id: str
    returned: bool = False


@dataclass
class Recorder:
    """What the task bodies did, shared by every worker of the fleet (one event loop)."""

    runs: dict[int, list[Run]] = field(default_factory=lambda: collections.defaultdict(list))
    active: list[Run] = field(default_factory=list)
    #: ``only`` bodies running now, and the most ever at once (unique: at most one)
    unique_now: int = 0
    unique_peak: int = 0
    releases: dict[int, anyio.Event] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def start(self, n: int, worker_id: str) -> Run:
        """Record that a body started."""
        run = Run(n, worker_id)
        self.runs[n].append(run)
        self.active.append(run)
        self.changed.set()
        self.changed = anyio.Event()
        return run

    def end(self, run: Run, returned: bool) -> None:
        """Record that a body ended (``returned``: normally, not cancelled)."""
        run.returned = returned
        self.active.remove(run)

    def release(self, n: int) -> anyio.Event:
        """The event that lets ``hold(n)`` return."""
        event = self.releases.get(n)
        if event is None:
            event = self.releases[n] = anyio.Event()
        return event


@dataclass
class Tasks:
    """The task functions of a worker of the fleet."""

    work: AsyncRegisteredTask[[int, float], int]
    only: AsyncRegisteredTask[[int, float], int]
    hold: AsyncRegisteredTask[[int], int]


def build_worker(
    url: str, queue: str, idle: float, recorder: Recorder, worker_id: str | None = None
) -> tuple[Worker[Any], Tasks]:
    """A worker of the fleet (or the producer) with the three task functions registered.

    ``work(n, pause)`` sleeps; ``only`` is the same, ``unique=True``; ``hold(n)`` waits until the
    test releases it, so that it is live for certain until then.
    """
    worker: Worker[Any] = Worker(
        redis_url=url,
        queue_name=queue,
        concurrency=CONCURRENCY,
        idle_timeout=timedelta(seconds=idle),
        handle_signals=False,
        id=worker_id,
    )

    async def body(n: int, wait: anyio.Event | float) -> None:
        run = recorder.start(n, worker.id)
        returned = False
        try:
            if isinstance(wait, float):
                await anyio.sleep(wait)
            else:
                await wait.wait()
            returned = True
        finally:
            recorder.end(run, returned)

    @worker.task(name="work", max_tries=MAX_TRIES)
    async def work(n: int, pause: float) -> int:
        await body(n, pause)
        return work_value(n)

    @worker.task(name="only", max_tries=MAX_TRIES, unique=True, timeout=60)
    async def only(n: int, pause: float) -> int:
        recorder.unique_now += 1
        recorder.unique_peak = max(recorder.unique_peak, recorder.unique_now)
        try:
            await body(n, pause)
        finally:
            recorder.unique_now -= 1
        return only_value(n)

    @worker.task(name="hold", max_tries=MAX_TRIES)
    async def hold(n: int) -> int:
        await body(n, recorder.release(n))
        return hold_value(n)

    return worker, Tasks(work, only, hold)


@dataclass
class Host:
    """One in-process worker of the fleet."""

    label: str
    worker: Worker[Any] | None = None
    proxy: SeverableProxy | None = None
    scope: anyio.CancelScope | None = None
    crashed: bool = False
    #: set when its run has returned (for a clean stop: after it retired)
    ended: anyio.Event = field(default_factory=anyio.Event)


class Fleet:
    """In-process workers of one queue, each behind its own :class:`SeverableProxy`.

    :param upstream: ``(host, port)`` of Redis
    :param queue: the queue
    :param idle: the workers' ``idle_timeout`` (seconds)
    :param recorder: where their task bodies record executions
    :param tg: the task group the workers run in
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        queue: str,
        idle: float,
        recorder: Recorder,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        self.upstream = upstream
        self.queue = queue
        self.idle = idle
        self.recorder = recorder
        self.hosts: list[Host] = []
        self._tg = tg

    def live(self) -> list[Host]:
        """The workers neither crashed nor stopped."""
        return [h for h in self.hosts if not h.crashed and h.scope is not None]

    async def start_worker(self) -> str:
        """Start one more worker; returns once it runs.

        :return: its worker id
        """
        host = Host(f"w{len(self.hosts)}-{self.queue[-6:]}")
        await self._tg.start(self._run, host)
        self.hosts.append(host)
        return host.label

    async def _run(self, host: Host, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with open_severable_proxy(self.upstream) as proxy:
                host.proxy = proxy
                host.worker, _ = build_worker(
                    proxy.url, self.queue, self.idle, self.recorder, host.label
                )
                with anyio.CancelScope() as scope:
                    host.scope = scope
                    await host.worker.run_async(task_status=task_status)
        finally:
            host.ended.set()

    async def crash(self, mid_run_within: float) -> str:
        """Crash a live worker, preferably one running a task body (waited for a moment).

        :param mid_run_within: how long to wait for a body to be running somewhere
        :return: the crashed worker's id
        """
        live = {h.label: h for h in self.live()}
        with anyio.move_on_after(mid_run_within):
            while not any(r.worker_id in live for r in self.recorder.active):
                await self.recorder.changed.wait()
        busy = [r.worker_id for r in self.recorder.active if r.worker_id in live]
        host = live[busy[0]] if busy else next(iter(live.values()))
        assert host.proxy is not None
        assert host.scope is not None
        host.crashed = True
        host.proxy.sever()
        host.scope.cancel()
        return host.label

    def stop_all(self) -> None:
        """Stop every live worker as a cancellation does (clean: hand back, retire)."""
        for host in self.live():
            assert host.scope is not None
            host.scope.cancel()

    async def stop_and_wait(self, timeout: float) -> None:
        """Stop every live worker and wait until each has retired."""
        live = self.live()
        self.stop_all()
        with anyio.fail_after(timeout):
            for host in live:
                await host.ended.wait()


@asynccontextmanager
async def open_fleet(
    upstream: tuple[str, int], queue: str, idle: float
) -> AsyncIterator[tuple[Fleet, Worker[Any], Tasks]]:
    """A fleet, and a producer (a worker that is entered, never run) connected directly.

    On exit the live workers stop cleanly and the crashed ones are waited for.
    """
    recorder = Recorder()
    host, port = upstream
    producer, tasks = build_worker(f"redis://{host}:{port}", queue, idle, recorder)
    async with anyio.create_task_group() as tg, producer:
        fleet = Fleet(upstream, queue, idle, recorder, tg)
        try:
            yield fleet, producer, tasks
        finally:
            fleet.stop_all()


class DoneCounter:
    """Counts the ids announced on a queue's ``done`` channel, from a thread (redis-py).

    A lost subscription (a Redis restart) sets :attr:`gaps`: announcements may have been missed.
    """

    def __init__(self, port: int, queue: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.gaps = 0
        self._port = port
        self._channel = f"streaq:{{{queue}}}:done"
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the done counter could not subscribe")

    def _run(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis(port=self._port, socket_timeout=2)
            try:
                pubsub = client.pubsub()
                pubsub.subscribe(self._channel)
                pubsub.get_message(timeout=2)  # the confirmation
                self._ready.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.1)
                    if message is None or message["type"] != "message":
                        continue
                    with self._cond:
                        for item in msgspec.msgpack.decode(message["data"]):
                            task_id = item[0]
                            self.counts[
                                task_id.decode() if isinstance(task_id, bytes) else task_id
                            ] += 1
                        self._cond.notify_all()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self.gaps += 1
                self._stop.wait(0.05)  # the server is restarting: subscribe again
            finally:
                client.close()

    def wait_for(self, expected: dict[str, int], timeout: float) -> None:
        """Block until each id was announced at least as often as ``expected`` says, or until
        ``timeout`` (the caller then compares the counts)."""
        with self._cond:
            self._cond.wait_for(
                lambda: all(self.counts[k] >= v for k, v in expected.items()), timeout
            )

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(timeout=5)


def leftovers(port: int, queue: str) -> list[str]:
    """The keys of ``queue`` that must not outlive its tasks.

    Persistent by design (``lua/base.lua``): the streams (empty, nothing pending) and the
    ``workers`` hash (heartbeats, pruned by the live workers). Every other key -- results, unique
    locks -- must carry a TTL; the index, the delayed set, dependency sets and the abort set must be
    gone.
    """
    client = redis.Redis(port=port)
    prefix = f"streaq:{{{queue}}}:"
    bad: list[str] = []
    try:
        for raw in client.scan_iter(match=prefix + "*", count=1000):
            name = raw.decode()[len(prefix) :]
            if name.startswith("s:"):
                if client.xlen(raw):
                    bad.append(f"{name}: stream not empty")
                pending: Any = client.xpending(raw, "g")
                if pending["pending"]:
                    bad.append(f"{name}: {pending['pending']} pending")
            elif name == "workers":
                continue
            elif client.pttl(raw) < 0:
                bad.append(f"{name} ({client.type(raw)!r}) without a TTL")
    finally:
        client.close()
    return bad
