"""A snapshot of a queue's state for operators: ``streaq info`` and the Prometheus exporter.

Everything is read straight from the queue's keys (layout: the header of ``lua/base.lua``) in
two round trips and nothing is written, so inspecting a busy production queue is safe:

1. per priority ``XLEN`` and ``XINFO GROUPS`` of its stream; ``ZCARD`` of the delayed set; ``XLEN``
   of the dead-letter stream;
   ``HLEN`` of the task index; the ``workers`` heartbeat hash; the server's ``TIME``;
2. per priority, the oldest entry the consumer group has not delivered yet (``XRANGE`` from just
   after the group's ``last-delivered-id``).

How the numbers are derived, and why:

- A message leaves its stream only in the call that records its result (``XACK`` + ``XDEL``), so
  a stream's length is queued + claimed, where claimed is the group's pending count:
  ``queued = XLEN - pending``. Of the claimed messages, ``running`` are those whose function a
  worker has called (the priority's ``run:`` set); the rest are ``prefetched``, held by a worker
  until a runner is free.
- ``lag`` is the age of the oldest message no worker has claimed yet, from its entry id's
  timestamp (ids are the server's clock at ``XADD``; a handed-back or promoted task is added
  anew, so its lag counts from then). ``None`` when nothing waits. Ages use the server's
  ``TIME`` so a skewed client clock does not distort them.
- ``waiting`` is the rest of the task index: tasks waiting for dependencies (``after=``) or for a
  ``unique`` lock.
- A worker is *alive* while its heartbeat has not expired (:mod:`._liveness`): it beats every
  ``idle_timeout / 4`` and is dead after missing two beats, half of ``idle_timeout``, so a crashed
  worker shows as dead well before other workers take over its tasks (at ``idle_timeout``). A
  worker that stops retires its heartbeat; entries of workers that crashed stay in the hash for
  an hour and are shown as dead.
- With each heartbeat a worker also writes a :class:`WorkerReport` of itself (host, pid, async
  backend, concurrency, the ids of the tasks it runs) to a key of its own (``wi:<worker>``,
  expiring an hour after the last beat). The ``workers`` hash keeps its plain ``id -> ms`` shape,
  so readers that know only the heartbeat go on working; a worker of a version that writes no
  report shows without these details.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

import msgspec

from ._cron import CronSchedule, cron_firing_id
from ._flow import FlowInfo, parse_flow_info
from ._keys import GROUP, QueueKeys
from ._library import QueueFunctions
from ._liveness import heartbeat_expiry_ms
from ._words import plural
from .utils import to_ms

if TYPE_CHECKING:
    from ._redis import RedisClient
    from .task import AnyRegisteredTask
    from .worker import Worker

#: the group keys listed per function
FLOW_GROUPS = 20

__all__ = [
    "CronInfo",
    "PriorityInfo",
    "QueueSnapshot",
    "WorkerBeat",
    "WorkerReport",
    "cron_infos",
    "decode_report",
    "inspect_worker",
    "read_beats",
    "render_snapshot",
    "snapshot",
]


@dataclass(frozen=True, slots=True)
class PriorityInfo:
    """One priority's stream.

    :param name: the priority's name
    :param queued: messages no worker has claimed yet
    :param running: messages whose function a worker is running
    :param lag_ms: age of the oldest unclaimed message in ms, ``None`` when none waits
    :param prefetched: messages a worker holds but has not started yet
    """

    name: str
    queued: int
    running: int
    lag_ms: int | None
    prefetched: int = 0


class WorkerReport(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=False):
    """What a worker writes of itself with each heartbeat (JSON, so that any tool can read it;
    fields may be added, never renamed).

    :param host: the host name of its machine
    :param pid: its process id
    :param backend: its async backend (``asyncio``, ``asyncio+uvloop``, ``trio``)
    :param concurrency: the tasks it runs at once at most
    :param running: the ids of tasks it runs now (at most :data:`REPORTED_RUNNING`)
    :param running_count: how many it runs now (``running`` may list fewer)
    :param started_ms: when it started (ms since the epoch)
    """

    host: str = ""
    pid: int = 0
    backend: str = ""
    concurrency: int = 0
    running: list[str] = msgspec.field(default_factory=list)
    running_count: int = 0
    started_ms: int = 0


#: the most running task ids a worker report lists
REPORTED_RUNNING = 100
_report_decoder = msgspec.json.Decoder(WorkerReport)


def decode_report(raw: Any) -> WorkerReport | None:
    """The report of a ``wi:`` key's value, or ``None`` when absent or unreadable."""
    if raw is None or isinstance(raw, Exception):
        return None
    try:
        return _report_decoder.decode(bytes(raw))
    except msgspec.DecodeError:
        return None


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """A worker's last heartbeat, and what it reported of itself with it.

    :param id: the worker's id
    :param last_beat_ms: time of its last heartbeat (ms since the epoch)
    :param age_ms: how long ago that was
    :param alive: whether the beat has not expired yet (:mod:`streaq._liveness`)
    :param host: the host name of its machine (``None``: the worker reported nothing)
    :param pid: its process id
    :param backend: its async backend
    :param concurrency: the tasks it runs at once at most
    :param running: the ids of tasks it was running at its last beat (at most 100 listed)
    :param running_count: how many tasks it was running then
    :param started_ms: when it started (ms since the epoch)
    """

    id: str
    last_beat_ms: int
    age_ms: int
    alive: bool
    host: str | None = None
    pid: int | None = None
    backend: str | None = None
    concurrency: int | None = None
    running: tuple[str, ...] = ()
    running_count: int = 0
    started_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CronInfo:
    """A registered cron job and its next firing.

    :param name: the job's registered name
    :param crontab: its crontab expression
    :param next_fire_ms: its next firing after the snapshot's time (ms since the epoch)
    """

    name: str
    crontab: str
    next_fire_ms: int

    @property
    def next_task_id(self) -> str:
        """The id of the task of the next firing (the same in every worker)."""
        return cron_firing_id(self.name, self.next_fire_ms)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """What ``streaq info`` shows: a queue's state at one moment.

    :param queue_name: the queue's name
    :param now_ms: the server's time when the snapshot was taken
    :param priorities: one entry per priority, lowest first
    :param delayed: tasks scheduled for later (delays, schedules, retries waiting their delay)
    :param waiting: tasks waiting for dependencies or for a unique lock
    :param workers: heartbeats of the workers that ever served the queue, newest first
    :param crons: registered cron jobs with their next firing, soonest first
    :param dead_letters: messages in the dead-letter stream (``streaq dlq list``)
    :param paused: whether the whole queue is paused
    :param flows: the flow control of each function with limits or paused
    """

    queue_name: str
    now_ms: int
    priorities: list[PriorityInfo]
    delayed: int
    waiting: int
    workers: list[WorkerBeat]
    crons: list[CronInfo] = field(default_factory=list)
    dead_letters: int = 0
    paused: bool = False
    flows: list[FlowInfo] = field(default_factory=list)

    @property
    def queued(self) -> int:
        """Unclaimed messages over all priorities."""
        return sum(p.queued for p in self.priorities)

    @property
    def running(self) -> int:
        """Running messages over all priorities."""
        return sum(p.running for p in self.priorities)

    @property
    def prefetched(self) -> int:
        """Claimed messages not started yet, over all priorities."""
        return sum(p.prefetched for p in self.priorities)

    @property
    def lag_ms(self) -> int | None:
        """The largest lag over all priorities."""
        lags = [p.lag_ms for p in self.priorities if p.lag_ms is not None]
        return max(lags) if lags else None

    @property
    def workers_alive(self) -> int:
        """Workers whose last heartbeat is recent enough."""
        return sum(w.alive for w in self.workers)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the fields plus the totals (``queued``, ``running``, ...)."""
        data = asdict(self)
        data.update(
            queued=self.queued,
            running=self.running,
            prefetched=self.prefetched,
            lag_ms=self.lag_ms,
            workers_alive=self.workers_alive,
        )
        return data


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _mapping(reply: Any) -> Mapping[Any, Any]:
    """A RESP3 map as it is, a RESP2 flat list as a dict."""
    if isinstance(reply, Mapping):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _group(reply: Any) -> Mapping[bytes, Any] | None:
    if isinstance(reply, Exception):
        # the stream does not exist yet: nobody prepared the queue, so it is empty
        return None
    for entry in reply:
        info = _mapping(entry)
        if _text(info.get(b"name", b"")) == GROUP:
            return info
    return None


def _entry_ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-", 1)[0])


def _beat(
    wid: str, ms: int, now: int, idle_timeout_ms: int, report: WorkerReport | None
) -> WorkerBeat:
    alive = now - ms < heartbeat_expiry_ms(idle_timeout_ms)
    beat = WorkerBeat(wid, ms, max(0, now - ms), alive)
    if report is None:
        return beat
    return replace(
        beat,
        host=report.host,
        pid=report.pid,
        backend=report.backend,
        concurrency=report.concurrency,
        running=tuple(report.running),
        running_count=report.running_count,
        started_ms=report.started_ms or None,
    )


def _heartbeats(reply: Any) -> list[tuple[str, int]]:
    """The ``HGETALL`` of the ``workers`` hash as (id, last beat ms), newest first."""
    beats = [(_text(wid), int(_text(ms))) for wid, ms in _mapping(reply).items() if ms is not None]
    return sorted(beats, key=lambda b: (-b[1], b[0]))


def _server_ms(reply: Any) -> int:
    seconds, micros = (int(_text(part)) for part in reply)
    return seconds * 1000 + micros // 1000


async def read_beats(
    redis: RedisClient, keys: QueueKeys, *, idle_timeout_ms: int
) -> tuple[int, list[WorkerBeat]]:
    """The server's time and the heartbeats of a queue's workers (one round trip, no writes).

    :param redis: a connected client
    :param keys: the queue's keys
    :param idle_timeout_ms: the workers' ``idle_timeout``, which says when a beat expires
    :return: the server's time (ms) and the heartbeats, newest first
    :raises redis.exceptions.RedisError: when Redis cannot be read
    """
    now, raw = await redis.pipeline([["TIME"], ["HGETALL", keys.workers]])
    now_ms = _server_ms(now)
    return now_ms, [_beat(wid, ms, now_ms, idle_timeout_ms, None) for wid, ms in _heartbeats(raw)]


def cron_infos(registry: Iterable[AnyRegisteredTask], tz: tzinfo, now_ms: int) -> list[CronInfo]:
    """Next firings of the cron jobs among ``registry``, soonest first."""
    crons = [
        CronInfo(task.fn_name, task.crontab, CronSchedule(task.crontab, tz).next_fire_ms(now_ms))
        for task in registry
        if task.crontab
    ]
    return sorted(crons, key=lambda c: (c.next_fire_ms, c.name))


async def snapshot(
    redis: RedisClient,
    keys: QueueKeys,
    priorities: Sequence[str],
    *,
    idle_timeout_ms: int,
) -> QueueSnapshot:
    """Read a queue's state (two round trips, no writes); see the module docstring.

    :param redis: a connected client
    :param keys: the queue's keys
    :param priorities: its priority names, lowest first
    :param idle_timeout_ms: the workers' ``idle_timeout``, which says when a beat expires
    :return: the snapshot, without cron jobs (they live in the worker's registry, not in Redis)
    :raises redis.exceptions.RedisError: when Redis cannot be read
    """
    commands: list[list[str]] = [["TIME"], ["ZCARD", keys.delayed], ["HLEN", keys.tasks]]
    commands.append(["HGETALL", keys.workers])
    commands.append(["XLEN", keys.dead_letters])
    for priority in priorities:
        commands += [
            ["XLEN", keys.stream(priority)],
            ["XINFO", "GROUPS", keys.stream(priority)],
            ["SCARD", keys.running(priority)],
        ]
    replies = await redis.pipeline(commands, raise_on_error=False)
    for reply in replies[:4]:
        if isinstance(reply, Exception):
            raise reply
    now = _server_ms(replies[0])
    delayed, indexed = int(replies[1]), int(replies[2])

    beats = _heartbeats(replies[3])
    lengths: list[tuple[str, int, int, int]] = []
    oldest: list[list[str]] = []
    for n, priority in enumerate(priorities):
        length, groups, started = replies[5 + 3 * n : 8 + 3 * n]
        group = _group(groups)
        length = 0 if isinstance(length, Exception) else int(length)
        pending = int(group.get(b"pending", 0)) if group is not None else 0
        running = 0 if isinstance(started, Exception) else min(int(started), pending)
        lengths.append((priority, length, pending, running))
        last = _text(group.get(b"last-delivered-id", b"0-0")) if group is not None else "0-0"
        # "(" makes the start exclusive: the first entry the group has not delivered
        oldest.append(["XRANGE", keys.stream(priority), f"({last}", "+", "COUNT", "1"])
    reports = [["GET", keys.worker_info(wid)] for wid, _ in beats]
    replies_2 = await redis.pipeline(oldest + reports, raise_on_error=False)
    firsts = replies_2[: len(oldest)]
    reported = {
        wid: decode_report(r) for (wid, _), r in zip(beats, replies_2[len(oldest) :], strict=True)
    }

    infos: list[PriorityInfo] = []
    for (priority, length, pending, running), first in zip(lengths, firsts, strict=True):
        lag = None
        if first and not isinstance(first, Exception):
            lag = max(0, now - _entry_ms(first[0][0]))
        queued = max(0, length - pending)
        infos.append(PriorityInfo(priority, queued, running, lag, pending - running))

    workers = [_beat(wid, ms, now, idle_timeout_ms, reported.get(wid)) for wid, ms in beats]
    in_streams = sum(length for _, length, _, _ in lengths)
    # the index holds every unfinished task once: in a stream (q), delayed (d), or waiting (w)
    waiting = max(0, indexed - in_streams - delayed)
    dead = replies[4]
    dead_letters = 0 if isinstance(dead, Exception) else int(dead)
    paused, flows = parse_flow_info(await QueueFunctions(redis, keys.prefix).flow_info(FLOW_GROUPS))
    # tasks waiting at gates are in the index too: they show with their function
    waiting = max(0, waiting - sum(f.waiting for f in flows))
    return QueueSnapshot(
        keys.queue_name,
        now,
        infos,
        delayed,
        waiting,
        workers,
        dead_letters=dead_letters,
        paused=paused,
        flows=flows,
    )


async def inspect_worker(worker: Worker[Any]) -> QueueSnapshot:
    """Snapshot the queue of ``worker``, with its cron jobs, on a connection of its own.

    The worker is not entered (``async with worker:`` would prepare the queue, a write), so this
    works the same whether or not the worker runs in this process.

    :param worker: the worker whose queue to read
    :return: the snapshot
    :raises redis.exceptions.RedisError: when Redis cannot be read
    """
    idle_ms = to_ms(worker.idle_timeout) or 60_000
    # the worker's own topology: under Sentinel or Cluster its URL names no server to read
    async with worker._open_redis() as redis:
        found = await snapshot(redis, worker.keys, worker.priorities, idle_timeout_ms=idle_ms)
    return replace(found, crons=cron_infos(worker.registry.values(), worker.tz, found.now_ms))


#: what ``streaq info`` and ``streaq check`` say when no worker of the queue is alive
NO_WORKER_ALIVE = "no worker of this queue is alive: nothing runs its tasks"


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _limits(flow: FlowInfo) -> str:
    parts = []
    if flow.concurrency_limit:
        parts.append(f"{flow.concurrency_limit} at once")
    if flow.rate_limit:
        parts.append(flow.rate_limit)
    if flow.group_concurrency:
        parts.append(f"{flow.group_concurrency} at once per group")
    if flow.group_rate_limit:
        parts.append(f"{flow.group_rate_limit} per group")
    return ", ".join(parts) or "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    # the first column is text (left-aligned), the others are numbers or short words
    widths = [max(len(row[n]) for row in [header, *rows]) for n in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def render_snapshot(found: QueueSnapshot, tz: tzinfo) -> str:
    """The human form of ``streaq info``: tables of priorities, workers and cron jobs.

    :param found: the snapshot
    :param tz: time zone of the times shown (the worker's)
    :return: the text, without a trailing newline
    """
    from datetime import datetime

    def when(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S %Z")

    lines = [f"queue {found.queue_name} at {when(found.now_ms)}", ""]
    rows = [
        [p.name, str(p.queued), str(p.prefetched), str(p.running), _age(p.lag_ms)]
        for p in found.priorities
    ]
    totals = [str(found.queued), str(found.prefetched), str(found.running), _age(found.lag_ms)]
    rows.append(["total", *totals])
    lines += _table(["priority", "queued", "prefetched", "running", "lag"], rows)
    lines += ["", f"delayed {found.delayed}, waiting for dependencies {found.waiting}"]
    lines += [f"dead letters {found.dead_letters}"]
    if found.paused:
        lines += ["", "the queue is PAUSED: no task starts until `streaq resume`"]
    if found.flows:
        lines += ["", f"flow control: {plural(len(found.flows), 'task')}"]
        lines += _table(
            ["task", "limits", "paused", "admitted", "waiting", "waiting per group"],
            [
                [
                    f.name,
                    _limits(f),
                    "yes" if f.paused else "no",
                    str(f.admitted),
                    str(f.waiting),
                    ", ".join(f"{k}: {n}" for k, n in f.groups.items()) or "-",
                ]
                for f in found.flows
            ],
        )
    lines += ["", f"workers alive: {found.workers_alive} of {len(found.workers)} seen"]
    if not found.workers_alive:
        lines += [f"WARNING: {NO_WORKER_ALIVE}"]
    if found.workers:
        beats = [
            [w.id, when(w.last_beat_ms), _age(w.age_ms), "yes" if w.alive else "no"]
            for w in found.workers
        ]
        lines += _table(["worker", "last beat", "ago", "alive"], beats)
    lines += ["", f"cron jobs: {len(found.crons)}"]
    if found.crons:
        jobs = [[c.name, c.crontab, when(c.next_fire_ms)] for c in found.crons]
        lines += _table(["name", "crontab", "next firing"], jobs)
    return "\n".join(lines)
