"""What the UI's pages show, read from the queue; no FastAPI here, so it is easy to test alone."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any

from .._codec import decode_record

if TYPE_CHECKING:
    from ..worker import Worker

#: result keys read per SCAN step
_SCAN_PAGE = 500
_KIND_ERROR = 2


@dataclass(frozen=True, slots=True)
class Bucket:
    """Finished tasks in one minute of the throughput chart.

    :param start_ms: the minute's start (ms since the epoch)
    :param succeeded: tasks that finished successfully in it
    :param failed: tasks that failed (errors, timeouts, aborts) in it
    """

    start_ms: int
    succeeded: int
    failed: int

    @property
    def total(self) -> int:
        """All tasks finished in the minute."""
        return self.succeeded + self.failed


@dataclass(frozen=True, slots=True)
class ResultStats:
    """Stored results of a queue: how many, and when they finished.

    :param stored: result keys that exist (results expire with their task's ``ttl``)
    :param failed: how many of those hold a failure
    :param buckets: finishes per minute over the last minutes, oldest first
    """

    stored: int
    failed: int
    buckets: list[Bucket]


async def result_stats(worker: Worker[Any], now_ms: int, minutes: int = 15) -> ResultStats:
    """Count the stored results and bucket their finish times per minute.

    Throughput comes from the result records' finish times rather than from a counter: nothing
    has to run in the background (the UI may be one of several processes, or restarted), and
    every worker's finishes count, not only this process's. Only the record headers are decoded,
    never the payloads. Results stored with ``ttl=0`` or already expired are not seen.

    :param worker: an entered worker
    :param now_ms: the end of the last bucket (the server's time)
    :param minutes: buckets to return
    """
    redis = worker._client.redis
    pattern = worker.keys.prefix + "r:*"
    first_ms = (now_ms // 60_000 - minutes + 1) * 60_000
    counts = [[0, 0] for _ in range(minutes)]
    stored = failed = 0
    cursor: Any = 0
    while True:
        cursor, keys = await redis.execute("SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_PAGE)
        if keys:
            for record in await redis.execute("MGET", *keys):
                if record is None:  # expired between SCAN and MGET
                    continue
                try:
                    header = decode_record(bytes(record))
                except Exception:
                    continue  # not a result record (a foreign key matching the pattern)
                stored += 1
                is_error = header.kind == _KIND_ERROR
                failed += is_error
                slot = (header.finish - first_ms) // 60_000
                if 0 <= slot < minutes:
                    counts[slot][1 if is_error else 0] += 1
        if int(cursor) == 0:
            break
    buckets = [Bucket(first_ms + n * 60_000, ok, bad) for n, (ok, bad) in enumerate(counts)]
    return ResultStats(stored, failed, buckets)


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of the throughput chart, in SVG user units."""

    x: float
    width: float
    ok_y: float
    ok_height: float
    fail_y: float
    fail_height: float
    label: str


def chart_bars(buckets: Sequence[Bucket], width: float, height: float) -> list[Bar]:
    """Lay out stacked bars (successes below, failures on top) for the inline SVG chart."""
    from datetime import UTC, datetime

    top = max((b.total for b in buckets), default=0) or 1
    step = width / max(1, len(buckets))
    bars = []
    for n, bucket in enumerate(buckets):
        ok_h = height * bucket.succeeded / top
        fail_h = height * bucket.failed / top
        minute = datetime.fromtimestamp(bucket.start_ms / 1000, UTC).strftime("%H:%M")
        label = f"{minute} UTC: {bucket.succeeded} succeeded, {bucket.failed} failed"
        bars.append(
            Bar(
                x=n * step + 1,
                width=max(1.0, step - 2),
                ok_y=height - ok_h,
                ok_height=ok_h,
                fail_y=height - ok_h - fail_h,
                fail_height=fail_h,
                label=label,
            )
        )
    return bars


def remote_traceback(exc: BaseException) -> str:
    """The traceback the worker saw, when the failure carries one, else this side's."""
    from ..types import RemoteTaskError

    if isinstance(exc, RemoteTaskError) and exc.remote_traceback:
        return exc.remote_traceback
    # rebuilt exceptions carry the worker's traceback as a note (see streaq._codec)
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith("remote traceback:\n"):
            return note.removeprefix("remote traceback:\n")
    return "".join(traceback.format_exception(exc))


# dead letters belong to another part of streaq that may not be present: use it by duck typing


def dead_letters_supported(worker: Worker[Any]) -> bool:
    """Whether this streaq has dead letters (``Worker.dead_letters``)."""
    return callable(getattr(worker, "dead_letters", None))


async def list_dead_letters(worker: Worker[Any], limit: int, offset: int) -> list[Any]:
    """Dead letters ``offset .. offset + limit`` (plus one more, to know there is a next page)."""
    method = getattr(worker, "dead_letters")  # noqa: B009
    params = inspect.signature(method).parameters
    wanted = offset + limit + 1
    kwargs: dict[str, Any] = {}
    if "limit" in params:
        kwargs["limit"] = wanted
    if "count" in params:
        kwargs["count"] = wanted
    found = method(**kwargs)
    if inspect.isawaitable(found):
        found = await found
    return list(found)[offset : offset + limit + 1]


def letter_id(letter: Any) -> str:
    """The task id of a dead letter, whatever shape the dead-letter API gives it."""
    if isinstance(letter, str):
        return letter
    if isinstance(letter, dict):
        return str(letter.get("task_id") or letter.get("id") or "")
    return str(getattr(letter, "task_id", None) or getattr(letter, "id", None) or "")


def letter_fields(letter: Any) -> dict[str, Any]:
    """A dead letter's fields, for a generic table."""
    if isinstance(letter, dict):
        return dict(letter)
    to_json = getattr(letter, "to_json", None)
    if callable(to_json):  # streaq's DeadLetter: readable values, without the raw payload
        return dict(to_json())
    if is_dataclass(letter) and not isinstance(letter, type):
        return {f.name: getattr(letter, f.name) for f in fields(letter)}
    struct_fields = getattr(letter, "__struct_fields__", None)
    if struct_fields is not None:  # a msgspec Struct
        return {name: getattr(letter, name) for name in struct_fields}
    return {"value": letter}


async def replay_dead_letter(worker: Worker[Any], task_id: str) -> Any:
    """Put the dead letter ``task_id`` back on the queue."""
    method = getattr(worker, "replay_dead_letters")  # noqa: B009
    params = [
        p
        for p in inspect.signature(method).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if not params:
        raise RuntimeError("this streaq cannot replay a single dead letter")
    result = method(task_id) if params[0].kind == params[0].VAR_POSITIONAL else method([task_id])
    if inspect.isawaitable(result):
        result = await result
    return result
