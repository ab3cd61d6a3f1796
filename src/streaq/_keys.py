"""Every Redis key and channel of a queue.

All of them carry the hash tag ``{<queue>}`` so that a queue lives in one cluster slot and the
server-side functions, which touch many of its keys at once, stay atomic under Cluster. The layout
itself is described at the top of ``lua/streaq.lua``; Python names only the keys it reads directly.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "g"


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

    def stream(self, priority: str) -> str:
        """The stream holding queued tasks of ``priority``."""
        return f"{self.prefix}s:{priority}"

    def running(self, priority: str) -> str:
        """The set of ids of ``priority``'s claimed messages whose function was called."""
        return f"{self.prefix}run:{priority}"

    @property
    def abort_set(self) -> str:
        """The set of ids of claimed tasks asked to abort."""
        return f"{self.prefix}ab"

    def result(self, task_id: str) -> str:
        """The stored result record of a task."""
        return f"{self.prefix}r:{task_id}"

    @property
    def done_channel(self) -> str:
        """Channel on which workers announce results."""
        return f"{self.prefix}done"

    @property
    def abort_channel(self) -> str:
        """Channel on which abort requests for running tasks are announced."""
        return f"{self.prefix}abort"

    @property
    def wake_channel(self) -> str:
        """Channel announcing a delayed task that became the earliest one due."""
        return f"{self.prefix}wake"

    @property
    def workers(self) -> str:
        """Hash of live workers: id -> last heartbeat (ms)."""
        return f"{self.prefix}workers"
