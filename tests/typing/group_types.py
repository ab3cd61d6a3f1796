"""Type tests of groups (``Worker.group``, ``Group.then``, ``then_settled``, ``otherwise``):
checked, never run.

As in ``chain_types.py``: ``assert_type`` pins what must pass; a line that must fail carries
``# type: ignore[<code>]`` for mypy, then ``# pyright: ignore[<rule>]`` for pyright. Task
functions take positional-only parameters where a test spells out a ``Task[[...], R]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, assert_type

from streaq import Group, Worker
from streaq.task import Task, TaskResult

worker: Worker[None] = Worker()


@worker.task
async def fetch(url: str) -> int:
    return len(url)


@worker.task
async def label(n: int) -> str:
    return str(n)


@worker.task
async def collect(sizes: list[int], /) -> float:
    return sum(sizes) / len(sizes)


@worker.task
async def collect_wide(sizes: Sequence[float], /) -> float:
    return sum(sizes)


@worker.task
def collect_sync(sizes: list[int], /) -> str:
    return str(sizes)


@worker.task
async def collect_with(sizes: list[int], /, scale: float, *, offset: int = 0) -> float:
    return sum(sizes) * scale + offset


@worker.task
async def rounded(x: float, /) -> int:
    return round(x)


@worker.task
async def collect_strings(labels: list[str], /) -> int:
    return len(labels)


@worker.task
async def settle(results: list[TaskResult[int]], /) -> int:
    return sum(r.result for r in results if r.success)


@worker.task
async def fallback(reason: str, /) -> list[int]:
    return []


@worker.task
async def wrong_fallback(reason: str, /) -> list[str]:
    return []


async def groups() -> None:
    urls = ["a", "bb"]
    group = worker.group([fetch.enqueue(u) for u in urls])
    assert_type(group, Group[int])
    assert_type(await group, Group[int])
    assert_type(await worker.enqueue_group([fetch.enqueue(u) for u in urls]), Group[int])
    assert_type(await group.result(), list[TaskResult[int]])
    assert_type(group.tasks, list[Task[Any, int]])

    # `then`: the collector takes the members' values as a list
    assert_type(group.then(collect), Task[[list[int]], float])
    assert_type(group.then(collect_wide), Task[[list[int]], float])  # wider parameter
    assert_type(group.then(collect_sync), Task[[list[int]], str])
    assert_type(await group.then(collect_with, 2.0, offset=1).result(), TaskResult[float])
    assert_type(group.then(collect).then(rounded), Task[[float], int])
    group.then(collect_strings)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType, reportCallIssue]
    group.then(collect_with, "2")  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    group.then(label)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType, reportCallIssue]

    # `then_settled`: the collector takes every member's result
    assert_type(group.then_settled(settle), Task[[list[TaskResult[int]]], int])
    group.then_settled(collect)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType, reportCallIssue]

    # `otherwise`: the fallback stands for the members' values
    assert_type(group.otherwise(fallback, "why"), Task[[str], list[int]])
    group.otherwise(wrong_fallback, "why")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType, reportCallIssue]
    group.otherwise(fallback, 1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]

    # a group's collector may be a member of another group
    outer = worker.group([group.then(collect), worker.group([fetch.enqueue("c")]).then(collect)])
    assert_type(outer, Group[float])
