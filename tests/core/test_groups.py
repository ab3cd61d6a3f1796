"""Groups: fan-out / fan-in. Results in member order, one release of the collector, failure
policies, fallbacks, chains, abort, bad input."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis

from streaq import Worker
from streaq._queue import ENQUEUE_CHUNK, _chunks
from streaq.task import Task, TaskResult, TaskStatus
from streaq.types import StreaqCancelled, StreaqError, StreaqRetry

from ._support import RunWorker, WorkerFactory, wait_for_status

pytestmark = pytest.mark.anyio


class Counts:
    """How often each task ran, with the arguments of its runs."""

    def __init__(self) -> None:
        self.runs: dict[str, list[Any]] = {}

    def add(self, name: str, value: Any) -> None:
        self.runs.setdefault(name, []).append(value)

    def of(self, name: str) -> list[Any]:
        return self.runs.get(name, [])


def _register(worker: Worker[Any], counts: Counts) -> Any:
    @worker.task
    async def square(x: int) -> int:
        counts.add("square", x)
        await anyio.sleep(0.001 * (x % 4))  # members end out of order
        return x * x

    @worker.task
    async def pair(x: int) -> tuple[int, str]:
        return x, str(x)

    @worker.task
    async def noop(x: int) -> int:
        return x

    @worker.task
    async def picky(x: int) -> int:
        counts.add("picky", x)
        if x < 0:
            raise ValueError(f"negative {x}")
        return x

    @worker.task(max_tries=5)
    async def flaky(x: int) -> int:
        counts.add("flaky", x)
        if flaky.context.tries < 3:
            raise StreaqRetry("not yet", delay=0)
        return x

    @worker.task
    async def total(xs: list[int], offset: int = 0) -> int:
        counts.add("total", list(xs))
        return sum(xs) + offset

    @worker.task
    async def count(xs: list[int]) -> int:
        counts.add("count", len(xs))
        return len(xs)

    @worker.task
    async def names(pairs: list[tuple[int, str]]) -> str:
        return ",".join(f"{n}:{s}" for n, s in pairs)

    @worker.task
    async def outcomes(results: list[TaskResult[int]]) -> list[str]:
        counts.add("outcomes", len(results))
        return [str(r.result) if r.success else type(r.exception).__name__ for r in results]

    @worker.task
    async def rescue(reason: str) -> list[int]:
        counts.add("rescue", reason)
        return []

    @worker.task
    async def double(x: int) -> int:
        return 2 * x

    @worker.task
    async def blocker(x: int) -> int:
        await anyio.sleep(60)
        return x

    return {
        "square": square,
        "pair": pair,
        "noop": noop,
        "picky": picky,
        "flaky": flaky,
        "total": total,
        "count": count,
        "names": names,
        "outcomes": outcomes,
        "rescue": rescue,
        "double": double,
        "blocker": blocker,
    }


async def test_results_in_member_order(worker: Worker[Any], run_worker: RunWorker) -> None:
    counts = Counts()
    t = _register(worker, counts)
    async with run_worker(worker):
        with anyio.fail_after(10):
            group = await worker.enqueue_group([t["square"].enqueue(x) for x in range(12)])
            results = await group.result()
            assert [r.result for r in results] == [x * x for x in range(12)]
            assert [r.task_id for r in results] == [m.id for m in group.tasks]
            assert await group.status() == TaskStatus.DONE
            # a collector linked after the group ended gets its stored outcome
            late = await group.then(t["total"], offset=1)
            assert (await late.result()).result == sum(x * x for x in range(12)) + 1
            # tuple results are converted into the collector's element type
            pairs = await worker.group([t["pair"].enqueue(x) for x in (2, 1)]).then(t["names"])
            assert (await pairs.result()).result == "2:2,1:1"


async def test_collector_runs_once_for_a_thousand_members(
    worker: Worker[Any], worker_factory: WorkerFactory, run_worker: RunWorker
) -> None:
    counts = Counts()
    t = _register(worker, counts)
    second = worker_factory()
    _register(second, counts)
    async with run_worker(worker), run_worker(second):
        with anyio.fail_after(60):
            group = worker.group([t["noop"].enqueue(x) for x in range(1000)])
            collector = await group.then(t["count"])
            assert (await collector.result()).result == 1000
            results = await group.result()
    assert [r.result for r in results] == list(range(1000))
    assert counts.of("count") == [1000]


async def test_retried_member_releases_once(worker: Worker[Any], run_worker: RunWorker) -> None:
    counts = Counts()
    t = _register(worker, counts)
    async with run_worker(worker):
        with anyio.fail_after(10):
            group = worker.group([t["flaky"].enqueue(1), t["noop"].enqueue(2)])
            collector = await group.then(t["total"])
            assert (await collector.result()).result == 3
            assert [r.tries for r in await group.result()] == [3, 1]
    assert counts.of("flaky") == [1, 1, 1]
    assert counts.of("total") == [[1, 2]]


async def test_failed_member_fails_the_collector_and_runs_the_fallback(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    counts = Counts()
    t = _register(worker, counts)
    async with run_worker(worker):
        with anyio.fail_after(10):
            members = [t["picky"].enqueue(x) for x in (1, -2, 3, -4)]
            group = worker.group(members)
            collector = group.then(t["total"])
            fallback = group.otherwise(t["rescue"], "a member failed")
            after = collector.then(t["double"])
            await worker.enqueue_many([collector, fallback, after])
            res = await collector.result()
            assert not res.success
            assert isinstance(res.exception, StreaqError)
            # the first failed member in member order, whatever order they ended in
            assert f"member {members[1].id} of group {group.id} failed" in str(res.exception)
            assert (await fallback.result()).result == []
            assert not (await after.result()).success
            results = await group.result()
            assert [r.success for r in results] == [True, False, True, False]
    assert counts.of("total") == []
    assert counts.of("rescue") == ["a member failed"]


async def test_fallback_ends_with_the_values_when_no_member_failed(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    counts = Counts()
    t = _register(worker, counts)
    async with run_worker(worker):
        with anyio.fail_after(10):
            group = worker.group([t["picky"].enqueue(x) for x in (1, 2)])
            fallback = await group.otherwise(t["rescue"], "unused")
            assert (await fallback.result()).result == [1, 2]
    assert counts.of("rescue") == []


async def test_settled_collector_gets_every_result(
    worker: Worker[Any], run_worker: RunWorker
) -> None:
    counts = Counts()
    t = _register(worker, counts)
    async with run_worker(worker):
        with anyio.fail_after(10):
            group = worker.group([t["picky"].enqueue(x) for x in (5, -1, 7)])
            collector = await group.then_settled(t["outcomes"])
            assert (await collector.result()).result == ["5", "ValueError", "7"]
    assert counts.of("outcomes") == [3]


async def test_group_in_chains(worker: Worker[Any], run_worker: RunWorker) -> None:
    counts = Counts()
    t = _register(worker, counts)
    async with run_worker(worker):
        with anyio.fail_after(10):
            # members may be chains, the collector may be followed, and a group's collector may
            # be a member of another group
            inner = worker.group([t["square"].enqueue(x).then(t["double"]) for x in (1, 2)])
            other = worker.group([t["noop"].enqueue(10)])
            outer = worker.group([inner.then(t["total"]), other.then(t["total"])])
            last = await outer.then(t["total"]).then(t["double"])
            assert (await last.result()).result == 2 * ((2 * 1 + 2 * 4) + 10)


async def test_abort(worker: Worker[Any], run_worker: RunWorker) -> None:
    counts = Counts()
    t = _register(worker, counts)
    async with run_worker(worker):
        with anyio.fail_after(10):
            members: list[Task[Any, int]] = [t["blocker"].enqueue(1), t["noop"].enqueue(2)]
            group = worker.group(members)
            collector = group.then(t["total"])
            fallback = group.otherwise(t["rescue"], "aborted")
            await worker.enqueue_many([collector, fallback])
            await wait_for_status(members[0], TaskStatus.RUNNING)
            assert await group.abort()
            assert not (await collector.result()).success
            assert (await fallback.result()).result == []
            res = await members[0].result()
            assert isinstance(res.exception, StreaqCancelled)
            with pytest.raises(StreaqError, match="ended early"):
                await group.result()
            assert not await group.abort()  # ended already
    assert counts.of("total") == []


async def test_bad_input(worker: Worker[Any], worker_factory: WorkerFactory) -> None:
    counts = Counts()
    t = _register(worker, counts)
    other = worker_factory()
    o = _register(other, counts)
    with pytest.raises(StreaqError, match="at least one task"):
        worker.group([])
    with pytest.raises(StreaqError, match="another worker"):
        worker.group([t["noop"].enqueue(1), o["noop"].enqueue(2)])
    with pytest.raises(StreaqError, match="another worker"):
        worker.group([o["noop"].enqueue(1)])
    twice = t["noop"].enqueue(1)
    with pytest.raises(StreaqError, match="twice"):
        worker.group([twice, twice])
    with pytest.raises(StreaqError, match="not Group"):
        worker.group([worker.group([t["noop"].enqueue(1)])])  # type: ignore[arg-type]
    with pytest.raises(StreaqError, match="dedup key"):
        worker.group([t["noop"].enqueue(1).start(dedup_key="k", dedup=5)])
    async with worker:
        done = await t["noop"].enqueue(1)
        with pytest.raises(StreaqError, match="enqueued already"):
            worker.group([done])
        group = worker.group([t["noop"].enqueue(2)])
        with pytest.raises(Exception, match="rescue"):
            group.otherwise(t["rescue"])  # the fallback's arguments are checked


async def test_group_keys_are_deleted(
    worker: Worker[Any], run_worker: RunWorker, redis_url: str, queue_name: str
) -> None:
    counts = Counts()
    t = _register(worker, counts)
    async with run_worker(worker):
        with anyio.fail_after(10):
            group = worker.group([t["noop"].enqueue(x) for x in range(5)])
            await (await group.then(t["total"])).result()
            aborted = worker.group([t["blocker"].enqueue(1)])
            await aborted
            await aborted.abort()
    client = redis.Redis.from_url(redis_url)
    try:
        leftovers = [
            k
            for k in client.scan_iter(match=f"streaq:{{{queue_name}}}:g[mr]:*")
            if isinstance(k, bytes)
        ]
    finally:
        client.close()
    assert leftovers == []


async def test_signed_group(worker_factory: WorkerFactory, run_worker: RunWorker) -> None:
    """With a signing secret, each member's sealed result is checked when the group is read."""
    counts = Counts()
    worker = worker_factory(signing_secret="group secret")
    t = _register(worker, counts)
    async with run_worker(worker):
        with anyio.fail_after(10):
            group = worker.group([t["picky"].enqueue(x) for x in (3, -1)])
            settled = group.then_settled(t["outcomes"])
            await worker.enqueue_many([settled, group.then(t["total"])])
            assert (await settled.result()).result == ["3", "ValueError"]
            assert [r.success for r in await group.result()] == [True, False]


async def test_a_group_is_enqueued_in_one_call_with_its_collector(worker: Worker[Any]) -> None:
    """Enqueue calls hold about ENQUEUE_CHUNK tasks, but never split a group from its members
    or from the tasks linked to it (a member ending before its group is there would be lost)."""
    t = _register(worker, Counts())
    plain = [t["noop"].enqueue(x) for x in range(2 * ENQUEUE_CHUNK + 1)]
    assert list(_chunks(plain)) == [
        (0, ENQUEUE_CHUNK),
        (ENQUEUE_CHUNK, 2 * ENQUEUE_CHUNK),
        (2 * ENQUEUE_CHUNK, 2 * ENQUEUE_CHUNK + 1),
    ]
    group = worker.group([t["noop"].enqueue(x) for x in range(ENQUEUE_CHUNK + 10)])
    collector = group.then(t["total"])
    ordered = [*plain[:3], *collector.chain(), *plain[3:6]]
    size = len(ordered)
    assert list(_chunks(ordered)) == [(0, ENQUEUE_CHUNK + 15), (ENQUEUE_CHUNK + 15, size)]
