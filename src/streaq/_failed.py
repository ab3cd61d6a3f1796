"""Failed tasks after the fact: their kept call, retrying them, deleting their results.

When a task fails (an exception, a timeout, an abort, a failed dependency, a dead letter) the same
server call that stores its failed result keeps the task's *call*: its priority and the fields of
its last stream entry, under ``fc:<id>`` with the result's expiry (``keep_call`` in
``lua/base.lua``). The fields are kept exactly as they were written, so arguments encrypted with
``encryption_key`` stay encrypted at rest and the signature made by a holder of
``signing_secret`` stays with them. A successful result keeps nothing: its arguments are of no
use once the task succeeded.

With the kept call, :meth:`Worker.arguments_by_id <streaq.Worker.arguments_by_id>` shows what a
failed task was called with, and :meth:`~streaq.Worker.retry_by_id` queues it again under its id,
as ``replay_dead_letters`` does for a dead letter: no tries so far, no last error, no expiry
deadline, signed afresh -- after checking the kept signature, so that a forged ``fc:`` key cannot
make this process sign a call of someone else's choosing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._codec import encode_fields
from ._schema import F_EXPIRE, F_LAST_ERROR, F_PAYLOAD, F_TRIES
from ._signing import F_SIGNATURE
from .types import StreaqError
from .utils import now_ms

if TYPE_CHECKING:
    from ._queue import QueueClient

#: the fields a retried task starts without
_NOT_RETRIED = (F_TRIES, F_LAST_ERROR, F_EXPIRE, F_SIGNATURE)


def _bytes(value: Any) -> bytes:
    # fields that passed through the index (delayed, waiting) come back with numbers as numbers
    return str(value).encode() if isinstance(value, int) else bytes(value)


def _fields(flat: list[Any]) -> dict[str, bytes]:
    return {_bytes(flat[n]).decode(): _bytes(flat[n + 1]) for n in range(0, len(flat), 2)}


async def kept_arguments(
    client: QueueClient, task_id: str
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The arguments of the failed task ``task_id`` while its call is kept, else ``None``.

    :raises StreaqError: when they cannot be decoded, decrypted, or their signature is wrong
    """
    kept = await client.functions.kept_call(task_id)
    if kept is None:
        return None
    fields = _fields(kept[1])
    client.codec.verify_task(task_id, fields)
    payload = fields.get(F_PAYLOAD)
    if payload is None:  # a dead letter may be any message at all
        raise StreaqError(f"task {task_id} was kept without arguments")
    args, kwargs = client.codec.decode_call(task_id, payload)
    return tuple(args), kwargs


async def retry_failed(client: QueueClient, task_id: str) -> bool:
    """Queue the failed task ``task_id`` again from its kept call.

    :return: ``False`` when no call is kept (the task did not fail, its result expired or was
        deleted, or it was retried already)
    :raises StreaqError: when a live task holds the id, or the kept call's signature is wrong
    """
    kept = await client.functions.kept_call(task_id)
    priority, fresh = client.priorities[0], {}
    # with nothing kept the call still goes out: the server tells a live task from a missing one
    if kept is not None:
        priority, flat = kept
        fields = _fields(flat)
        client.codec.verify_task(task_id, fields)
        fresh = {k: v for k, v in fields.items() if k not in _NOT_RETRIED}
        signature = client.codec.sign_task(fresh)
        if signature is not None:
            fresh[F_SIGNATURE] = signature
        if priority not in client.priorities:
            # kept by a worker with other priorities: the lowest of this one
            priority = client.priorities[0]
    packed = encode_fields([item for pair in fresh.items() for item in pair])
    outcome = await client.functions.retry_failed(task_id, now_ms(), priority, packed)
    if outcome < 0:
        raise StreaqError(f"task {task_id} is queued, scheduled or running: it cannot be retried")
    return outcome == 1


async def delete_result(client: QueueClient, task_id: str) -> bool:
    """Delete the result (and kept call) of the finished task ``task_id``.

    :return: ``False`` when there was no result
    :raises StreaqError: when a live task holds the id (a repeating task between runs)
    """
    outcome = await client.functions.delete_result(task_id)
    if outcome < 0:
        raise StreaqError(f"task {task_id} is queued, scheduled or running: abort it instead")
    return outcome == 1
