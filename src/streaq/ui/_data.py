"""What the UI's pages show, read from the queue; no FastAPI here, so it is easy to test alone."""

from __future__ import annotations

import time
import traceback
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..worker import Worker


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
    :param complete: whether the whole database was scanned; when not, the figures count the
        results found in the part scanned
    """

    stored: int
    failed: int
    buckets: list[Bucket]
    complete: bool = True


async def result_stats(
    worker: Worker[Any], now_ms: int, minutes: int = 15, scan_limit: int | None = None
) -> ResultStats:
    """Count the stored results and bucket their finish times per minute.

    Throughput comes from the result records' finish times rather than from a counter: nothing
    has to run in the background (the UI may be one of several processes, or restarted), and
    every worker's finishes count, not only this process's (see
    :meth:`~streaq.Worker.finish_times`). Results stored with ``ttl=0`` or already expired are
    not seen.

    :param worker: an entered worker
    :param now_ms: the end of the last bucket (the server's time)
    :param minutes: buckets to return
    :param scan_limit: examine at most about this many keys of the database (``None``: all)
    """
    first_ms = (now_ms // 60_000 - minutes + 1) * 60_000
    counts = [[0, 0] for _ in range(minutes)]
    if scan_limit is None:
        finishes, complete = await worker.finish_times(), True
    else:
        finishes, complete = await worker.sample_finish_times(scan_limit)
    failed = 0
    for finish_ms, success in finishes:
        failed += not success
        slot = (finish_ms - first_ms) // 60_000
        if 0 <= slot < minutes:
            counts[slot][0 if success else 1] += 1
    buckets = [Bucket(first_ms + n * 60_000, ok, bad) for n, (ok, bad) in enumerate(counts)]
    return ResultStats(len(finishes), failed, buckets, complete)


class StatsCache:
    """:func:`result_stats` per worker, reused for ``ttl`` seconds.

    Reading the results walks up to ``scan_limit`` keys of the database; many page views in a
    few seconds (several people, reloads) share one walk.

    :param ttl: seconds an answer is reused
    :param scan_limit: see :func:`result_stats`
    """

    def __init__(self, ttl: float, scan_limit: int | None) -> None:
        self._ttl = ttl
        self._scan_limit = scan_limit
        self._found: weakref.WeakKeyDictionary[Worker[Any], tuple[float, ResultStats]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, worker: Worker[Any], now_ms: int) -> ResultStats:
        """The stats of ``worker``'s queue, at most ``ttl`` seconds old."""
        cached = self._found.get(worker)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        stats = await result_stats(worker, now_ms, scan_limit=self._scan_limit)
        self._found[worker] = (time.monotonic() + self._ttl, stats)
        return stats


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


@dataclass(frozen=True, slots=True)
class Tick:
    """A labelled tick of an axis: its position (x or y, SVG user units) and text."""

    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """The throughput chart laid out for an inline SVG: a plot area framed by a y axis (tasks
    per minute) on the left and a time axis (UTC) below.

    :param width: the whole drawing's width
    :param height: the whole drawing's height
    :param left: x of the y axis
    :param bottom: y of the time axis
    :param bars: stacked bars, successes below and failures on top
    :param y_ticks: labelled counts on the y axis
    :param x_ticks: labelled minutes on the time axis
    """

    width: float
    height: float
    left: float
    bottom: float
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]


#: room for the axes' labels: left of the plot, below it, above it
_LEFT, _BELOW, _ABOVE = 34.0, 30.0, 18.0


def _nice_top(most: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 ... at least ``most``: round tick values."""
    top = 1
    while True:
        for factor in (1, 2, 5):
            if top * factor >= most:
                return top * factor
        top *= 10


def chart(buckets: Sequence[Bucket], width: float, height: float) -> Chart:
    """Lay out the chart of ``buckets`` in a drawing of ``width`` by ``height``."""
    from datetime import UTC, datetime

    def minute(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")

    plot_w, plot_h = width - _LEFT - 4, height - _BELOW - _ABOVE
    bottom = _ABOVE + plot_h
    top = _nice_top(max((b.total for b in buckets), default=0))
    step = plot_w / max(1, len(buckets))
    bars = []
    for n, bucket in enumerate(buckets):
        ok_h = plot_h * bucket.succeeded / top
        fail_h = plot_h * bucket.failed / top
        label = (
            f"{minute(bucket.start_ms)} UTC: {bucket.succeeded} succeeded, {bucket.failed} failed"
        )
        bars.append(
            Bar(
                x=_LEFT + n * step + 1,
                width=max(1.0, step - 2),
                ok_y=bottom - ok_h,
                ok_height=ok_h,
                fail_y=bottom - ok_h - fail_h,
                fail_height=fail_h,
                label=label,
            )
        )
    y_ticks = [Tick(bottom - plot_h * v / top, str(v)) for v in sorted({0, top // 2, top})]
    picks = sorted({0, len(buckets) // 2, len(buckets) - 1}) if buckets else []
    x_ticks = [Tick(_LEFT + (n + 0.5) * step, minute(buckets[n].start_ms)) for n in picks]
    return Chart(width, height, _LEFT, bottom, bars, y_ticks, x_ticks)


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
