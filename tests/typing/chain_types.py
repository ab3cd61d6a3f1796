"""Type tests of task chains (``then``, ``otherwise``, ``|``, ``^``): checked, never run.

mypy (``nox -s typecheck``) and pyright (``nox -s pyright``) both read this file.

``assert_type`` pins what must pass. A line that must fail carries an ignore for each checker,
with the exact error code: ``# type: ignore[<code>]`` for mypy (``warn_unused_ignores``), then
``# pyright: ignore[<rule>]`` for pyright (strict, ``reportUnnecessaryTypeIgnoreComment``, and
``enableTypeIgnoreComments = false`` so that mypy's comments hide nothing from it). Either check
fails the day a checker stops rejecting a line, or starts rejecting one more.
Task functions take positional-only parameters where a test spells out a ``Task[[...], R]``:
mypy compares parameter names too, and a literal ``[int, str]`` has none.
"""

from __future__ import annotations

from typing import NamedTuple, assert_type

from streaq import Worker
from streaq._generated_chains import TupleResultIsUnpacked
from streaq.task import AsyncRegisteredTask, SyncRegisteredTask, Task, TaskResult

worker: Worker[None] = Worker()


class Point(NamedTuple):
    x: int
    label: str


# parents


@worker.task
async def number() -> int:
    return 1


@worker.task
async def maybe_number() -> int | None:
    return None


@worker.task
async def nothing() -> None:
    return None


@worker.task
async def pair() -> tuple[int, str]:
    return 1, "a"


@worker.task
def pair_sync() -> tuple[int, str]:
    return 1, "a"


@worker.task
async def split(n: int) -> tuple[int, int]:
    return n // 2, n - n // 2


@worker.task
async def triple() -> tuple[int, str, bytes]:
    return 1, "a", b""


@worker.task
async def octuple() -> tuple[int, int, int, int, int, int, int, str]:
    return 1, 2, 3, 4, 5, 6, 7, "eight"


@worker.task
async def long_tuple() -> tuple[int, int, int, int, int, int, int, int, int]:
    return 1, 2, 3, 4, 5, 6, 7, 8, 9


@worker.task
async def point() -> Point:
    return Point(1, "a")


@worker.task
async def many(n: int) -> tuple[int, ...]:
    return tuple(range(n))


# links


@worker.task
async def double(n: int, /) -> int:
    return 2 * n


@worker.task
def halve(n: float, /) -> float:
    return n / 2


@worker.task
async def scale(n: int, factor: float, /, *, offset: int = 0) -> float:
    return n * factor + offset


@worker.task
async def with_default(n: int, /, *, offset: int = 0) -> float:
    return n + offset


@worker.task
def double_sync(n: int, /) -> str:
    return str(2 * n)


@worker.task
async def labelled(n: int, label: str, /) -> str:
    return f"{label}{n}"


@worker.task
def labelled_sync(n: int, label: str, /) -> bytes:
    return f"{label}{n}".encode()


@worker.task
async def labelled_wide(n: float, label: object, /) -> str:
    return f"{label}{n}"


@worker.task
async def labelled_extra(n: int, label: str, /, *, upper: bool, sep: str = ":") -> str:
    return f"{label}{sep}{n}"


@worker.task
async def three(n: int, label: str, data: bytes, /) -> int:
    return n + len(label) + len(data)


@worker.task
async def eight(a: int, b: int, c: int, d: int, e: int, f: int, g: int, h: str, /) -> str:
    return h * (a + b + c + d + e + f + g)


@worker.task
async def add_all(*xs: int) -> int:
    return sum(xs)


@worker.task
async def add_all_scaled(*xs: int, factor: int = 1) -> int:
    return factor * sum(xs)


@worker.task
async def join_all(*parts: str) -> str:
    return "".join(parts)


@worker.task
async def add(a: int, b: int, /) -> int:
    return a + b


@worker.task
async def whole_pair(value: tuple[int, str], /) -> str:
    return value[1]


@worker.task
async def whole_split(pair: tuple[int, int], /) -> int:
    return sum(pair)


@worker.task
async def whole_point(value: Point, /, *, upper: bool = False) -> str:
    return value.label


@worker.task
async def whole_many(values: tuple[int, ...], /) -> int:
    return sum(values)


@worker.task
async def after_nothing(value: None, /) -> bool:
    return value is None


@worker.task
async def fallback_number() -> int:
    return 0


@worker.task
def fallback_number_sync() -> int:
    return 0


@worker.task
async def fallback_str() -> str:
    return ""


@worker.task
async def fallback_maybe_number() -> int | None:
    return None


@worker.task
async def fallback_double(n: int, /) -> int:
    return n


@worker.task
async def fallback_with_arg(n: int, /) -> int:
    return n


async def not_registered(n: int, /) -> int:
    return n


async def scalar_results() -> None:
    assert_type(number.enqueue().then(double), Task[[int], int])
    assert_type(number.enqueue().then(halve), Task[[int], float])  # int result, float parameter
    assert_type(number.enqueue().then(double_sync), Task[[int], str])
    assert_type(number.enqueue().then(with_default), Task[[int], float])  # optional keyword: unset
    assert_type(await number.enqueue().then(with_default, offset=2).result(), TaskResult[float])
    assert_type(await number.enqueue().then(scale, 2.5, offset=1).result(), TaskResult[float])
    assert_type(nothing.enqueue().then(after_nothing), Task[[None], bool])
    number.enqueue().then(scale, "2.5")  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    number.enqueue().then(scale)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue]
    number.enqueue().then(scale, 2.5, offset="1")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    number.enqueue().then(scale, 2.5, shift=1)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    number.enqueue().then(labelled)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue]
    maybe_number.enqueue().then(double)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    nothing.enqueue().then(double)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    number.enqueue().then(not_registered)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def tuple_results() -> None:
    assert_type(pair.enqueue().then(labelled), Task[[int, str], str])
    assert_type(pair.enqueue().then(labelled_sync), Task[[int, str], bytes])
    assert_type(pair.enqueue().then(labelled_wide), Task[[int, str], str])  # wider parameters
    assert_type(pair_sync.enqueue().then(labelled), Task[[int, str], str])
    assert_type(split.enqueue(1).then(add), Task[[int, int], int])
    assert_type(split.enqueue(1).then(add_all), Task[[int, int], int])  # into *xs: int
    assert_type(triple.enqueue().then(three), Task[[int, str, bytes], int])
    assert_type(pair.enqueue().then(three, b"data"), Task[[int, str, bytes], int])
    assert_type(octuple.enqueue().then(eight), Task[[int, int, int, int, int, int, int, str], str])
    chained = pair.enqueue().then(labelled_extra, upper=True)
    assert_type(await chained.result(), TaskResult[str])
    pair.enqueue().then(labelled_extra, upper=True, sep="-").then(double)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    pair.enqueue().then(labelled_extra)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue]
    pair.enqueue().then(labelled_extra, upper=1)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]
    pair.enqueue().then(labelled_extra, upper=True, lower=False)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue]
    pair.enqueue().then(labelled, "extra")  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue]
    pair.enqueue().then(three)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue]
    triple.enqueue().then(labelled)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    pair.enqueue().then(double)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def named_tuple_results() -> None:
    assert_type(point.enqueue().then(labelled), Task[[int, str], str])
    assert_type(point.enqueue().then(three, b"data"), Task[[int, str, bytes], int])
    assert_type(point.enqueue() | labelled, Task[[int, str], str])
    point.enqueue().then(three)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue]


async def whole_tuple_is_rejected() -> None:
    # the worker unpacks a tuple result: a task taking it whole would be called with its elements.
    # Such a link has a type that cannot be awaited, enqueued or asked for a result, so using it
    # is an error with any checker's default settings; the call itself is reported as deprecated
    # where that check is on (mypy's `deprecated` error code, pyright's strict mode)
    link = split.enqueue(1).then(whole_split)  # type: ignore[deprecated]  # pyright: ignore[reportDeprecated]
    assert_type(link, TupleResultIsUnpacked)
    await link  # type: ignore[misc]  # pyright: ignore[reportGeneralTypeIssues]
    await link.result()  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    await worker.enqueue_many([link])  # type: ignore[list-item]  # pyright: ignore[reportArgumentType]
    await pair.enqueue().then(whole_pair)  # type: ignore[deprecated, misc]  # pyright: ignore[reportDeprecated, reportGeneralTypeIssues]
    await point.enqueue().then(whole_point, upper=True)  # type: ignore[deprecated, misc]  # pyright: ignore[reportDeprecated, reportGeneralTypeIssues]
    await many.enqueue(3).then(whole_many)  # type: ignore[deprecated, misc]  # pyright: ignore[reportDeprecated, reportGeneralTypeIssues]
    await (split.enqueue(1) | whole_split)  # type: ignore[deprecated, misc]  # pyright: ignore[reportDeprecated, reportGeneralTypeIssues]


async def variable_length_tuples() -> None:
    # a tuple[int, ...] result is unpacked too: it feeds a task taking exactly its elements
    assert_type(many.enqueue(3).then(add_all), Task[..., int])
    assert_type(many.enqueue(3) | add_all, Task[..., int])
    assert_type(await many.enqueue(3).then(add_all).result(), TaskResult[int])
    many.enqueue(3).then(join_all)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    many.enqueue(3).then(double)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    await (many.enqueue(3) | add)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]


async def limitations() -> None:
    # the number of elements is unknown, so extra arguments cannot be placed after them
    many.enqueue(3).then(add_all_scaled, factor=2)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def long_tuples() -> None:
    # beyond the generated arities, a link into a task taking exactly the elements is typed like a
    # variable-length one; any other link is accepted unchecked, keeping only its result type
    assert_type(long_tuple.enqueue().then(add_all), Task[..., int])
    assert_type(long_tuple.enqueue() | add_all, Task[..., int])
    assert_type(long_tuple.enqueue().then(add_all_scaled, factor=2), Task[..., int])
    assert_type(long_tuple.enqueue().then(double), Task[..., int])  # unchecked: wrong, accepted


async def operators() -> None:
    assert_type(number.enqueue() | double, Task[[int], int])
    assert_type(number.enqueue() | halve, Task[[int], float])
    assert_type(pair.enqueue() | labelled, Task[[int, str], str])
    assert_type(pair.enqueue() | labelled_sync, Task[[int, str], bytes])
    assert_type(pair.enqueue() | labelled_wide, Task[[int, str], str])
    assert_type(number.enqueue() | double | halve, Task[[int], float])
    assert_type(number.enqueue() | with_default, Task[[int], float])  # optional keyword: unset
    await (number.enqueue() | scale)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
    await (number.enqueue() | labelled)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
    await (pair.enqueue() | labelled_extra)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
    await (pair.enqueue() | three)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
    assert_type(fallback_number.enqueue() ^ fallback_number_sync, Task[[], int])
    await (fallback_number.enqueue() ^ fallback_str)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]


async def fallbacks() -> None:
    assert_type(fallback_number.enqueue().otherwise(fallback_number), Task[[], int])
    assert_type(fallback_number.enqueue().otherwise(fallback_number_sync), Task[[], int])
    assert_type(
        fallback_maybe_number.enqueue().otherwise(fallback_maybe_number), Task[[], int | None]
    )
    assert_type(double.enqueue(1).otherwise(fallback_double), Task[[int], int])
    assert_type((await double.enqueue(1).otherwise(fallback_double).result()).result, int)
    assert_type(number.enqueue().then(double).otherwise(fallback_double), Task[[int], int])
    fallback_number.enqueue().otherwise(fallback_str)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    fallback_number.enqueue().otherwise(fallback_with_arg)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    double.enqueue(1).otherwise(fallback_number)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    # the fallback's return type must be the task's own (registered tasks are invariant in R)
    fallback_maybe_number.enqueue().otherwise(fallback_number)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


async def results_and_registration() -> None:
    assert_type(await number.enqueue().result(), TaskResult[int])
    assert_type((await pair.enqueue().result()).result, tuple[int, str])
    assert_type(await pair.enqueue().then(labelled).result(), TaskResult[str])
    assert_type(number, AsyncRegisteredTask[[], int])
    assert_type(double, AsyncRegisteredTask[[int], int])
    assert_type(halve, SyncRegisteredTask[[float], float])
    assert_type(double.enqueue(1), Task[[int], int])
    double.enqueue("1")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


@worker.task(timeout=5, max_tries=2, name="optioned")
async def optioned(n: int, label: str, /) -> bytes:
    return b""


@worker.task(unique=True)
def optioned_sync(n: int, /) -> list[int]:
    return [n]


def registration_with_options() -> None:
    assert_type(optioned, AsyncRegisteredTask[[int, str], bytes])
    assert_type(optioned_sync, SyncRegisteredTask[[int], list[int]])
    assert_type(pair.enqueue().then(optioned), Task[[int, str], bytes])
    assert_type(number.enqueue() | optioned_sync, Task[[int], list[int]])
