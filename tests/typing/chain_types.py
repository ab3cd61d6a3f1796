# mypy: enable-error-code="deprecated"
"""Type tests of task chains (``then``, ``otherwise``, ``|``, ``^``): read by mypy, never run.

``assert_type`` pins what must pass; each line that must fail carries ``# type: ignore[<code>]``
with the exact error code, so ``warn_unused_ignores`` fails the check the day it starts passing.
Task functions take positional-only parameters where a test spells out a ``Task[[...], R]``:
mypy compares parameter names too, and a literal ``[int, str]`` has none.
"""

from __future__ import annotations

from typing import NamedTuple, assert_type

from streaq import Worker
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
async def numbers() -> tuple[int, ...]:
    return (1, 2)


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
async def labelled_extra(n: int, label: str, /, *, upper: bool, sep: str = ":") -> str:
    return f"{label}{sep}{n}"


@worker.task
async def three(n: int, label: str, data: bytes, /) -> int:
    return n + len(label) + len(data)


@worker.task
async def eight(a: int, b: int, c: int, d: int, e: int, f: int, g: int, h: str, /) -> str:
    return h * (a + b + c + d + e + f + g)


@worker.task
async def nine(*values: int) -> int:
    return sum(values)


@worker.task
async def whole_pair(value: tuple[int, str], /) -> str:
    return value[1]


@worker.task
async def whole_numbers(values: tuple[int, ...], /) -> int:
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


async def scalar_results() -> None:
    assert_type(number.enqueue().then(double), Task[[int], int])
    assert_type(number.enqueue().then(halve), Task[[int], float])  # int result, float parameter
    assert_type(number.enqueue().then(double_sync), Task[[int], str])
    assert_type(await number.enqueue().then(with_default).result(), TaskResult[float])
    assert_type(await number.enqueue().then(with_default, offset=2).result(), TaskResult[float])
    assert_type((await number.enqueue().then(scale, 2.5, offset=1).result()), TaskResult[float])
    assert_type(nothing.enqueue().then(after_nothing), Task[[None], bool])
    number.enqueue().then(scale, "2.5")  # type: ignore[arg-type]
    number.enqueue().then(scale)  # type: ignore[call-arg]
    number.enqueue().then(scale, 2.5, offset="1")  # type: ignore[arg-type]
    number.enqueue().then(scale, 2.5, shift=1)  # type: ignore[call-arg]
    number.enqueue().then(labelled)  # type: ignore[call-arg]
    maybe_number.enqueue().then(double)  # type: ignore[arg-type]
    nothing.enqueue().then(double)  # type: ignore[arg-type]


async def tuple_results() -> None:
    assert_type(pair.enqueue().then(labelled), Task[[int, str], str])
    assert_type(pair.enqueue().then(labelled_sync), Task[[int, str], bytes])
    assert_type(pair_sync.enqueue().then(labelled), Task[[int, str], str])
    assert_type(point.enqueue().then(labelled), Task[[int, str], str])
    assert_type(triple.enqueue().then(three), Task[[int, str, bytes], int])
    assert_type(pair.enqueue().then(three, b"data"), Task[[int, str, bytes], int])
    assert_type(octuple.enqueue().then(eight), Task[[int, int, int, int, int, int, int, str], str])
    chained = pair.enqueue().then(labelled_extra, upper=True)
    assert_type(await chained.result(), TaskResult[str])
    pair.enqueue().then(labelled_extra, upper=True, sep="-").then(double)  # type: ignore[arg-type]
    # a tuple result goes through several overloads: mypy names none of them (call-overload)
    pair.enqueue().then(labelled_extra)  # type: ignore[call-overload]
    pair.enqueue().then(labelled_extra, upper=1)  # type: ignore[call-overload]
    pair.enqueue().then(labelled_extra, upper=True, lower=False)  # type: ignore[call-overload]
    pair.enqueue().then(labelled, "extra")  # type: ignore[call-overload]
    pair.enqueue().then(three)  # type: ignore[call-overload]
    triple.enqueue().then(labelled)  # type: ignore[call-overload]
    point.enqueue().then(three)  # type: ignore[call-overload]
    pair.enqueue().then(double)  # type: ignore[call-overload]


async def whole_tuple_is_rejected() -> None:
    # the run time unpacks a tuple result: a single tuple parameter would get its first element
    pair.enqueue().then(whole_pair)  # type: ignore[deprecated]
    pair.enqueue() | whole_pair  # type: ignore[deprecated]
    numbers.enqueue().then(whole_numbers)  # type: ignore[deprecated]


async def limitations() -> None:
    # a variable-length tuple result is unpacked at run time too, but no overload can check it
    numbers.enqueue().then(nine)  # type: ignore[call-overload]


async def long_tuples_are_unchecked() -> None:
    # beyond the generated arities the link is accepted as is; only its result type is kept
    assert_type(long_tuple.enqueue().then(nine), Task[..., int])
    assert_type(long_tuple.enqueue() | nine, Task[..., int])


async def operators() -> None:
    assert_type(number.enqueue() | double, Task[[int], int])
    assert_type(number.enqueue() | halve, Task[[int], float])
    assert_type(pair.enqueue() | labelled, Task[[int, str], str])
    assert_type(pair.enqueue() | labelled_sync, Task[[int, str], bytes])
    assert_type(point.enqueue() | labelled, Task[[int, str], str])
    assert_type(number.enqueue() | double | halve, Task[[int], float])
    assert_type(number.enqueue() | with_default, Task[[int], float])  # optional keyword: unset
    number.enqueue() | scale  # type: ignore[operator]
    number.enqueue() | labelled  # type: ignore[operator]
    pair.enqueue() | labelled_extra  # type: ignore[operator]
    pair.enqueue() | three  # type: ignore[operator]
    assert_type(fallback_number.enqueue() ^ fallback_number_sync, Task[[], int])
    fallback_number.enqueue() ^ fallback_str  # type: ignore[operator]


async def fallbacks() -> None:
    assert_type(fallback_number.enqueue().otherwise(fallback_number), Task[[], int])
    assert_type(fallback_number.enqueue().otherwise(fallback_number_sync), Task[[], int])
    assert_type(
        fallback_maybe_number.enqueue().otherwise(fallback_maybe_number), Task[[], int | None]
    )
    assert_type(double.enqueue(1).otherwise(fallback_double), Task[[int], int])
    assert_type((await double.enqueue(1).otherwise(fallback_double).result()).result, int)
    fallback_number.enqueue().otherwise(fallback_str)  # type: ignore[arg-type]
    fallback_number.enqueue().otherwise(fallback_with_arg)  # type: ignore[arg-type]
    double.enqueue(1).otherwise(fallback_number)  # type: ignore[arg-type]
    # the fallback's return type must be the task's own (registered tasks are invariant in R)
    fallback_maybe_number.enqueue().otherwise(fallback_number)  # type: ignore[arg-type]


async def results_and_registration() -> None:
    assert_type(await number.enqueue().result(), TaskResult[int])
    assert_type((await pair.enqueue().result()).result, tuple[int, str])
    assert_type(await pair.enqueue().then(labelled).result(), TaskResult[str])
    assert_type(number, AsyncRegisteredTask[[], int])
    assert_type(double, AsyncRegisteredTask[[int], int])
    assert_type(halve, SyncRegisteredTask[[float], float])
    assert_type(double.enqueue(1), Task[[int], int])
    double.enqueue("1")  # type: ignore[arg-type]


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
