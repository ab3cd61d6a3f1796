"""The queue's event stream and the progress of tasks, read and encoded on the client side.

Theory of operation
-------------------
The server-side library writes one entry to the stream ``ev`` per transition of a task, in the
same call that makes the transition (``emit`` in ``lua/base.lua``): a task's events are therefore
complete, in order and never doubled, and the stream is bounded (``MAXLEN ~ events_maxlen``).
:func:`read_events` follows it with ``XREAD BLOCK`` on a dedicated connection, as the worker's
reader does, remembering the id of the last entry it saw: a connection that fails is opened again
and the read resumes after that id, so an outage loses nothing the stream still holds. Closing the
iterator (or cancelling its reader) closes the connection.

Progress values are encoded like results (msgpack, or the worker's serializer; sealed and
encrypted when those are on), so that one decoder reads them wherever they are shown.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING, Any

import anyio

from ._codec import KIND_VALUE, Codec
from ._redis import Backoff, is_transient
from ._schema import EV_FN, EV_ID, EV_KIND, EV_TIME, EV_TRIES, EV_VALUE, EVENT_KINDS
from .task import EventKind, TaskEvent, TaskStatus
from .types import StreaqError

if TYPE_CHECKING:
    from ._queue import QueueClient

logger = logging.getLogger("streaq")

#: the largest encoded progress value (bytes): events stay small
MAX_PROGRESS = 4096
#: the default bound of the event stream (``Worker(events_maxlen=...)``)
DEFAULT_EVENTS_MAXLEN = 10_000
#: entries read per round trip
READ_COUNT = 500
#: how long one blocking read waits (ms); its round trip is allowed that on top of the timeout
BLOCK_MS = 2000

_KIND_OF = {letter: EventKind(name) for name, letter in EVENT_KINDS.items()}
_STREAM_ID = re.compile(r"\d+(-\d+)?")


def encode_progress(codec: Codec, value: Any) -> bytes:
    """The encoded progress ``value`` (a tuple is encoded as a list).

    :raises StreaqError: when it cannot be encoded or is larger than :data:`MAX_PROGRESS`
    """
    try:
        _, payload = codec.encode_value(list(value) if isinstance(value, tuple) else value)
    except StreaqError:
        raise
    except Exception as e:
        raise StreaqError(f"the progress value cannot be serialized: {e}") from None
    if len(payload) > MAX_PROGRESS:
        raise StreaqError(
            f"a progress value is at most {MAX_PROGRESS} bytes encoded, not {len(payload)}: "
            "report a small summary (a fraction, a count, a short message)"
        )
    return payload


def decode_progress(codec: Codec, task_id: str, payload: bytes | None) -> Any:
    """The progress value of ``payload`` (``None`` for none, or one this client cannot read)."""
    if payload is None:
        return None
    try:
        return codec.decode_value(task_id, KIND_VALUE, bytes(payload))
    except Exception as e:
        logger.warning("cannot decode the progress of task %s: %s", task_id, e)
        return None


def check_since(since: str) -> str:
    """``since`` when it is a stream id (``"0"`` or ``TaskEvent.id``).

    :raises StreaqError: otherwise
    """
    if not _STREAM_ID.fullmatch(str(since)):
        raise StreaqError(
            f"since is a stream id such as an event's id ('1700000000000-0'), or '0' for the "
            f"whole history, not {since!r}"
        )
    return since


def check_kinds(kinds: Iterable[EventKind | str] | None) -> frozenset[EventKind] | None:
    """The event kinds to yield (``None``: all).

    :raises StreaqError: for an unknown kind
    """
    if kinds is None:
        return None
    if isinstance(kinds, str):
        kinds = [kinds]
    chosen = set()
    for kind in kinds:
        try:
            chosen.add(EventKind(kind))
        except ValueError:
            names = ", ".join(k.value for k in EventKind)
            raise StreaqError(f"unknown event kind {kind!r}; the kinds are {names}") from None
    return frozenset(chosen)


def _parse(codec: Codec, entry_id: str, flat: list[Any]) -> TaskEvent | None:
    fields = {bytes(flat[n]).decode(): flat[n + 1] for n in range(0, len(flat), 2)}
    kind = _KIND_OF.get(bytes(fields.get(EV_KIND, b"")).decode())
    if kind is None or EV_ID not in fields:
        return None
    task_id = bytes(fields[EV_ID]).decode()
    return TaskEvent(
        id=entry_id,
        kind=kind,
        task_id=task_id,
        fn_name=bytes(fields.get(EV_FN, b"")).decode(),
        time=int(fields.get(EV_TIME, 0)),
        tries=int(fields.get(EV_TRIES, 0)),
        progress=decode_progress(codec, task_id, fields.get(EV_VALUE)),
    )


def _entries(reply: Any) -> list[tuple[str, list[Any]]]:
    """The (id, fields) entries of an ``XREAD`` reply on one stream, RESP2 or RESP3."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else [entries for _, entries in reply]
    return [(bytes(i).decode(), flat) for entries in streams for i, flat in entries if flat]


async def _last_id(client: QueueClient) -> str:
    """The id of the stream's newest entry (``"0"`` when it has none): where "now" begins."""
    newest = await client.redis.execute("XREVRANGE", client.keys.events, "+", "-", "COUNT", 1)
    return bytes(newest[0][0]).decode() if newest else "0"


async def read_progress(client: QueueClient, task_id: str) -> Any:
    """The latest progress ``task_id`` reported, or ``None``."""
    raw = await client.redis.execute("GET", client.keys.progress(task_id))
    return decode_progress(client.codec, task_id, raw)


async def read_events(
    client: QueueClient,
    since: str | None,
    task_id: str | None,
    kinds: frozenset[EventKind] | None,
    until_final: bool,
) -> AsyncGenerator[TaskEvent, None]:
    """Follow the event stream (see the module doc).

    :param since: the id to read after; ``None`` starts with the events written from now on
    :param task_id: only this task's events
    :param kinds: only these kinds
    :param until_final: end after ``task_id``'s final event, or once the task is found ended
        without a final event left to read (trimmed, or written with events off)
    """
    last = await _last_id(client) if since is None else since
    key = client.keys.events
    # False while catching up (reads do not block); once caught up without a final event, True
    # when the task ended -- one more read takes what the stream holds (its final event, written
    # with its result, is in it if it was kept), then the iterator ends -- or None: it is live,
    # and reads block until its final event
    ending: bool | None = False
    backoff = Backoff()
    while True:
        try:
            async with client.redis.dedicated(home_key=client.keys.prefix) as conn:
                while True:
                    command: list[Any] = ["XREAD", "COUNT", READ_COUNT]
                    if not until_final or ending is None:
                        command += ["BLOCK", BLOCK_MS]
                    reply = await conn.execute(
                        *command, "STREAMS", key, last, block=BLOCK_MS / 1000
                    )
                    backoff.reset()
                    entries = _entries(reply)
                    for entry_id, flat in entries:
                        last = entry_id
                        event = _parse(client.codec, entry_id, flat)
                        if event is None or (task_id is not None and event.task_id != task_id):
                            continue
                        if kinds is None or event.kind in kinds:
                            yield event
                        if until_final and event.final:
                            return
                    if entries or not until_final or ending is None:
                        continue
                    if ending:
                        return
                    # caught up without the final event: has the task ended already?
                    assert task_id is not None
                    status = await client.status(task_id)
                    ending = True if status in (TaskStatus.DONE, TaskStatus.NOT_FOUND) else None
        except Exception as e:
            if not is_transient(e):
                raise
            delay = backoff.next()
            logger.warning(
                "cannot read the events of queue %s; again in %.1fs: %s",
                client.keys.queue_name,
                delay,
                e,
            )
            await anyio.sleep(delay)
