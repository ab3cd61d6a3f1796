"""Every Redis key and channel of a queue.

All of them carry the hash tag ``{<queue>}`` so that a queue lives in one cluster slot and the
server-side functions, which touch many of its keys at once, stay atomic under Cluster. What each
key holds is described at the top of ``lua/base.lua``, whose ``KEY`` table names the same
suffixes as :data:`SUFFIXES` (``tests/test_schema.py`` checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: the consumer group of every stream
GROUP: Final = "g"

#: what follows the queue's prefix in each key (a trailing ``:`` takes an id, priority or name)
SUFFIXES: Final = {
    "stream": "s:",
    "tasks": "t",
    "running": "run:",
    "result": "r:",
    "delayed": "z",
    "dependencies": "dp:",
    "dependents": "dn:",
    "has_dependents": "hd",
    "abort": "ab",
    "lock": "u:",
    "workers": "workers",
    "dead_letters": "dlq",
    "done_channel": "done",
    "abort_channel": "abort",
    "wake_channel": "wake",
    "limits": "lim",
    "gate_queue": "gq:",
    "gate_ring": "gk:",
    "gated_functions": "gw",
    "gate_count": "gc:",
    "admit_window": "ga:",
    "start_window": "gs:",
    "gate_block": "gb:",
    "admitted": "adm",
    "gated_total": "gn",
    "gate_timers": "gt",
    "pause_channel": "pause",
    "dedup": "dd:",
    "dedup_index": "ddi",
    "scale": "cc",
    "scale_channel": "scale",
    "worker_info": "wi:",
    "failed_call": "fc:",
    "group_members": "gm:",
    "group_results": "gr:",
    "events": "ev",
    "progress": "pg:",
    "progressed": "pgd",
}


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Names of one queue's keys.

    :param queue_name: the queue's name (``Worker(queue_name=...)``)
    """

    queue_name: str

    @property
    def prefix(self) -> str:
        """The prefix every key starts with; passed to server functions as ``KEYS[1]``."""
        return f"streaq:{{{self.queue_name}}}:"

    def _key(self, name: str, tail: str = "") -> str:
        return f"{self.prefix}{SUFFIXES[name]}{tail}"

    def stream(self, priority: str) -> str:
        """The stream holding queued tasks of ``priority``."""
        return self._key("stream", priority)

    @property
    def tasks(self) -> str:
        """The index of unfinished tasks: id -> state."""
        return self._key("tasks")

    def running(self, priority: str) -> str:
        """The set of ids of ``priority``'s claimed messages whose function was called."""
        return self._key("running", priority)

    def result(self, task_id: str) -> str:
        """The stored result record of a task."""
        return self._key("result", task_id)

    @property
    def result_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern of every stored result of the queue."""
        return self._key("result", "*")

    @property
    def delayed(self) -> str:
        """The delayed tasks: a sorted set of ids by due time."""
        return self._key("delayed")

    @property
    def abort_set(self) -> str:
        """The set of ids of claimed tasks asked to abort."""
        return self._key("abort")

    def lock(self, fn_name: str) -> str:
        """The unique lock of a function."""
        return self._key("lock", fn_name)

    @property
    def workers(self) -> str:
        """Hash of live workers: id -> last heartbeat (ms)."""
        return self._key("workers")

    def worker_info(self, worker_id: str) -> str:
        """What a worker reports of itself with each heartbeat (JSON; see ``WorkerReport``)."""
        return self._key("worker_info", worker_id)

    def failed_call(self, task_id: str) -> str:
        """The call (priority and stream fields) of a failed task, kept as long as its result."""
        return self._key("failed_call", task_id)

    @property
    def events(self) -> str:
        """The queue's event stream (bounded; see ``lua/events.lua``)."""
        return self._key("events")

    def progress(self, task_id: str) -> str:
        """The latest progress a task reported (its encoded value)."""
        return self._key("progress", task_id)

    @property
    def dead_letters(self) -> str:
        """The stream of dead letters."""
        return self._key("dead_letters")

    @property
    def done_channel(self) -> str:
        """Channel on which workers announce results."""
        return self._key("done_channel")

    @property
    def abort_channel(self) -> str:
        """Channel on which abort requests for running tasks are announced."""
        return self._key("abort_channel")

    @property
    def limits(self) -> str:
        """Hash of the flow configuration of each limited or paused function (``*``: the queue)."""
        return self._key("limits")

    @property
    def pause_channel(self) -> str:
        """Channel announcing a function (or ``*``, the queue) paused or resumed."""
        return self._key("pause_channel")

    def dedup(self, mode: str, fn_name: str, key: str) -> str:
        """The record of a dedup key of ``fn_name`` in ``mode`` (a letter of ``DEDUP_MODES``)."""
        return self._key("dedup", f"{mode}:{len(fn_name)}:{fn_name}:{key}")

    @property
    def dedup_index(self) -> str:
        """Hash of the live tasks holding (or following) a dedup key: id -> key name."""
        return self._key("dedup_index")

    @property
    def scale(self) -> str:
        """The last fleet-wide concurrency command (``Worker.scale``): ``<n>:<nonce>``."""
        return self._key("scale")

    @property
    def scale_channel(self) -> str:
        """Channel announcing a fleet-wide concurrency command."""
        return self._key("scale_channel")

    @property
    def wake_channel(self) -> str:
        """Channel announcing a delayed task that became the earliest one due."""
        return self._key("wake_channel")
