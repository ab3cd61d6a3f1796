"""Dead letters: messages that can never succeed, kept aside instead of vanishing.

This module lists them; the worker decides what is poison (``streaq._runtime._poison``). A claimed
message is *poison* when

- it was delivered more than its task's ``max_tries`` times because the workers running it kept
  dying (a crash, an OOM kill, a SIGKILL mid-run: the delivery count of the stream's pending list
  grows with every reclaim),
- its payload cannot be decoded (garbage, truncated, or a signature that does not match when
  ``signing_secret`` is set), or
- it names a function no worker of the queue registered.

Such a message moves to the queue's dead-letter stream ``streaq:{<queue>}:dlq`` (its original
fields plus ``reason``, ``time``, ``priority``, ``tries`` and ``worker``) in the *same* server
call that acknowledges it and writes its failed result (the ``dead_letter`` function of
``lua/*.lua``): the failed result still wakes whoever waits for it and fails its dependents,
and the message is never lost in between. The stream is capped at ``DLQ_MAXLEN`` (10,000) entries,
oldest first, so a flood of bad input cannot grow Redis without bound.

:meth:`Worker.dead_letters <streaq.Worker.dead_letters>` lists them,
:meth:`~streaq.Worker.replay_dead_letters` queues them again as fresh tasks (same id, no tries
so far) and :meth:`~streaq.Worker.purge_dead_letters` deletes them; ``streaq dlq list|replay|purge
module:worker`` does the same from a shell.

A wrong argument *type* is not poison: the payload decodes, the task fails with a readable
:class:`~streaq.types.StreaqError` like any failing task (retrying it could not help either, but
the message itself is sound).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._codec import encode_fields
from ._schema import F_EXPIRE, F_FN, F_ID, F_LAST_ERROR, F_TRIES
from ._signing import F_SIGNATURE
from .utils import now_ms

if TYPE_CHECKING:
    from ._keys import QueueKeys
    from ._queue import QueueClient
    from ._redis import RedisClient

#: reasons a message is dead-lettered (the entry's ``reason`` field starts with one of them)
REASON_MAX_TRIES = "max_tries exceeded"
REASON_UNDECODABLE = "undecodable payload"
REASON_BAD_SIGNATURE = "invalid signature"
REASON_UNKNOWN_FUNCTION = "unknown function"
REASON_UNRECORDABLE = "outcome cannot be recorded"

_EXTRA_FIELDS = ("reason", "time", "priority", "tries", "worker")
#: the fields a replayed task starts without
_NOT_REPLAYED = (F_TRIES, F_LAST_ERROR, F_EXPIRE, F_SIGNATURE)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a queue's dead-letter stream.

    :param entry_id: the entry's id in the dead-letter stream
    :param task_id: the task's id (replay keeps it)
    :param fn_name: the registered name of the task's function
    :param reason: why it was dead-lettered, e.g. ``"max_tries exceeded: delivered 4 times ..."``
    :param time: when it was dead-lettered
    :param tries: deliveries counted when it was dead-lettered (retries included)
    :param priority: the priority it was queued with
    :param worker: the id of the worker that dead-lettered it
    :param fields: every field of the original stream entry (``d`` is the payload)
    """

    entry_id: str
    task_id: str
    fn_name: str
    reason: str
    time: datetime
    tries: int
    priority: str
    worker: str
    fields: dict[str, bytes]

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON-ready values (the payload and other raw fields are left out)."""
        return {
            "entry_id": self.entry_id,
            "task_id": self.task_id,
            "fn_name": self.fn_name,
            "reason": self.reason,
            "time": self.time.isoformat(),
            "tries": self.tries,
            "priority": self.priority,
            "worker": self.worker,
        }


def parse_dead_letter(entry_id: Any, flat: list[Any]) -> DeadLetter:
    """A :class:`DeadLetter` from an ``XRANGE`` entry of the dead-letter stream."""
    fields = {bytes(flat[n]).decode(): bytes(flat[n + 1]) for n in range(0, len(flat), 2)}

    def text(name: str, default: str = "") -> str:
        raw = fields.get(name)
        return default if raw is None else raw.decode(errors="replace")

    return DeadLetter(
        entry_id=bytes(entry_id).decode(),
        task_id=text(F_ID),
        fn_name=text(F_FN),
        reason=text("reason"),
        time=datetime.fromtimestamp(int(text("time", "0")) / 1000, UTC),
        tries=int(text("tries", "0")),
        priority=text("priority"),
        worker=text("worker"),
        fields={k: v for k, v in fields.items() if k not in _EXTRA_FIELDS},
    )


async def read_dead_letters(
    redis: RedisClient, keys: QueueKeys, limit: int | None
) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters of a queue (all when ``None``); one read, no writes.

    :param redis: a connected client (it need not have prepared the queue)
    :param keys: the queue's keys
    :param limit: the most entries to return
    """
    args: list[Any] = ["XRANGE", keys.dead_letters, "-", "+"]
    if limit is not None:
        args += ["COUNT", limit]
    reply = await redis.execute(*args)
    return [parse_dead_letter(entry_id, flat) for entry_id, flat in reply or []]


async def list_dead_letters(client: QueueClient, limit: int | None) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters of the client's queue (all when ``None``)."""
    return await read_dead_letters(client.redis, client.keys, limit)


async def replay_dead_letters(client: QueueClient, task_ids: Iterable[str] | None) -> list[str]:
    """Queue the dead letters of ``task_ids`` (all when ``None``) again as fresh tasks.

    A fresh task has no tries so far, no last error and no expiry deadline; with a signing secret
    its fields are signed afresh, as a producer would.

    :return: the ids queued again
    """
    wanted = None if task_ids is None else set(task_ids)
    groups: list[Any] = []
    for letter in await list_dead_letters(client, None):
        if wanted is not None and letter.task_id not in wanted:
            continue
        fields: dict[str, bytes] = {
            k: v for k, v in letter.fields.items() if k not in _NOT_REPLAYED
        }
        signature = client.codec.sign_task(fields)
        if signature is not None:
            fields[F_SIGNATURE] = signature
        flat: list[Any] = [item for pair in fields.items() for item in pair]
        groups += [letter.entry_id, letter.task_id, letter.priority, encode_fields(flat)]
    if not groups:
        return []
    return await client.functions.replay_dead_letters(now_ms(), groups)
