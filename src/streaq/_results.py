"""Waiting for results without polling: one shared subscription per client.

Workers publish, after each batch of results, the ids (and the records of results that are not
stored) on the queue's ``done`` channel. The first ``wait`` of a client starts a listener task
holding one pub/sub connection; every later wait only registers an event. A result stored already
is returned by a single GET and never touches the subscription. After the subscription reconnects
(messages may have been missed) the listener fetches every awaited result once more.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.abc
import msgspec
from redis import exceptions as rex

from ._keys import QueueKeys
from ._redis import RedisClient, is_transient, retry_transient

logger = logging.getLogger("streaq")

_done_decoder = msgspec.msgpack.Decoder(list[tuple[str, bytes | None]])


class _Waiter:
    __slots__ = ("event", "record")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.record: bytes | None = None


class ResultWaiter:
    """Delivers result records to the tasks awaiting them.

    :param client: the Redis client
    :param keys: the queue's keys
    """

    def __init__(self, client: RedisClient, keys: QueueKeys) -> None:
        self._client = client
        self._keys = keys
        self._waiters: dict[str, list[_Waiter]] = {}
        self._started = False
        self._lock = anyio.Lock()

    async def _ensure_listening(self, tg: anyio.abc.TaskGroup) -> None:
        if self._started:
            return
        async with self._lock:
            if not self._started:
                await tg.start(self._listen)
                self._started = True

    async def _listen(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with self._client.pubsub() as ps:
            await ps.subscribe(self._keys.done_channel)
            task_status.started()
            async for msg in ps:
                if msg.kind == b"reconnected":
                    await self._refetch(list(self._waiters))
                    continue
                try:
                    entries = _done_decoder.decode(msg.data)
                except msgspec.DecodeError:
                    continue
                missing = []
                for task_id, record in entries:
                    if task_id in self._waiters:
                        if record is None:
                            missing.append(task_id)
                        else:
                            self._deliver(task_id, record)
                if missing:
                    await self._refetch(missing)

    async def _refetch(self, task_ids: list[str]) -> None:
        if not task_ids:
            return
        keys = [self._keys.result(t) for t in task_ids]

        def retrying(error: Exception, delay: float) -> None:
            logger.warning("cannot fetch finished results (%s); retrying in %.1fs", error, delay)

        # e.g. LOADING right after a restart: a failure here must not end the listener, or every
        # later wait would miss its wake-up
        records = await retry_transient(
            lambda: self._client.execute("MGET", *keys), on_retry=retrying
        )
        for task_id, record in zip(task_ids, records, strict=True):
            if record is not None:
                self._deliver(task_id, record)

    async def _get(self, key: str) -> Any:
        """GET, waiting out a server that refuses commands for now (BUSY, LOADING, OOM...):
        waiting for a result is waiting, and the caller's timeout bounds it."""
        return await retry_transient(
            lambda: self._client.execute("GET", key), transient=_refused_for_now
        )

    def _deliver(self, task_id: str, record: bytes) -> None:
        for waiter in self._waiters.pop(task_id, ()):
            waiter.record = record
            waiter.event.set()

    async def wait(self, task_id: str, timeout: float | None, tg: anyio.abc.TaskGroup) -> bytes:
        """The result record of ``task_id``, once it exists.

        :param task_id: the task to wait for
        :param timeout: seconds to wait at most (``None``: no limit)
        :param tg: task group that owns the listener if it has to be started
        :raises TimeoutError: when no result arrived in time
        """
        deadline = None if timeout is None else anyio.current_time() + timeout
        with _waiting(task_id, timeout), anyio.fail_after(timeout):
            record: Any = await self._get(self._keys.result(task_id))
        if record is not None:
            return bytes(record)
        async with self.watch(task_id, tg) as watch:
            left = None if deadline is None else max(0.0, deadline - anyio.current_time())
            return await watch.result(left, timeout)

    @asynccontextmanager
    async def watch(self, task_id: str, tg: anyio.abc.TaskGroup) -> AsyncIterator[Watch]:
        """Listen for the result of ``task_id`` from now on (``async with``).

        For a caller that is about to cause the result itself (an abort): a result published
        but not stored (``ttl=0``) reaches only those listening when it is published.

        :param task_id: the task to wait for
        :param tg: task group that owns the listener if it has to be started
        """
        waiter = _Waiter()
        self._waiters.setdefault(task_id, []).append(waiter)
        try:
            await self._ensure_listening(tg)
            yield Watch(self, task_id, waiter)
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[task_id]


class Watch:
    """The result of one task, listened for since :meth:`ResultWaiter.watch` was entered."""

    def __init__(self, results: ResultWaiter, task_id: str, waiter: _Waiter) -> None:
        self._results = results
        self._task_id = task_id
        self._waiter = waiter

    async def result(self, timeout: float | None, told: float | None = None) -> bytes:
        """The result record, once it exists.

        :param timeout: seconds to wait at most (``None``: no limit)
        :param told: the limit to name in the error (the caller's whole timeout), if not that
        :raises TimeoutError: when no result arrived in time
        """
        with _waiting(self._task_id, timeout if told is None else told), anyio.fail_after(timeout):
            if self._waiter.record is None:
                # stored before the subscription started: it was never announced to us
                record = await self._results._get(self._results._keys.result(self._task_id))
                if record is not None:
                    return bytes(record)
            await self._waiter.event.wait()
        assert self._waiter.record is not None
        return self._waiter.record


def _refused_for_now(error: Exception) -> bool:
    # an unreachable server is the caller's to know about; one that answers "not now" is not
    return isinstance(error, rex.ResponseError) and is_transient(error)


@contextmanager
def _waiting(task_id: str, timeout: float | None) -> Iterator[None]:
    """Turn the bare ``TimeoutError`` of ``fail_after`` into one that says what was awaited."""
    try:
        yield
    except TimeoutError:
        raise TimeoutError(
            f"no result for task {task_id} within {timeout:g} s: it is still queued, scheduled or "
            "running (or no worker serves its queue)"
        ) from None
