"""Dead letters and operations: listing, replaying and purging dead letters; a minimal ACL user."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

import anyio
import redis

from streaq import Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE)
# an older deployment of the same queue that does not know ``send_invoice`` yet
old_worker: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE)


@worker.task
async def send_invoice(customer: str) -> str:
    return f"invoice sent to {customer}"


async def dead_letters() -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(old_worker.run_async)
        async with worker:
            task = await send_invoice.enqueue("acme")
            outcome = await task.result(timeout=10)  # the old worker dead-letters it
        assert not outcome.success
        tg.cancel_scope.cancel()

    # --8<-- [start:dlq]
    async with worker:
        letters = await worker.dead_letters()  # the oldest 100; limit=None for all
        assert [letter.task_id for letter in letters] == [task.id]
        assert letters[0].reason.startswith("unknown function")
        print(letters[0].fn_name, letters[0].reason, letters[0].time, letters[0].tries)

        # once workers that know the function run, queue it again: same id, no tries so far
        assert await worker.replay_dead_letters([task.id]) == [task.id]
        assert await worker.dead_letters() == []
        assert await worker.purge_dead_letters() == 0  # nothing left to delete
    # --8<-- [end:dlq]

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        replayed = await task.result(timeout=10)
        assert replayed.result == "invoice sent to acme"
        tg.cancel_scope.cancel()


async def acl_user() -> None:
    admin = redis.Redis.from_url(REDIS_URL)
    command: Callable[..., object] = admin.execute_command
    user, password = f"streaq-docs-{secrets.token_hex(4)}", secrets.token_hex(16)
    # --8<-- [start:acl]
    # what one queue's workers and producers need, and nothing more
    rules = f"~streaq:{{{QUEUE}}}:* &streaq:{{{QUEUE}}}:* +@read +@write +subscribe +publish +fcall"
    command("ACL", "SETUSER", user, "reset", "on", f">{password}", *rules.split())
    # --8<-- [end:acl]
    try:
        host = admin.connection_pool.connection_kwargs.get("host", "localhost")
        port = admin.connection_pool.connection_kwargs.get("port", 6379)
        db = admin.connection_pool.connection_kwargs.get("db", 0)
        limited: Worker[None] = Worker(
            redis_url=f"redis://{user}:{password}@{host}:{port}/{db}", queue_name=QUEUE
        )

        @limited.task
        async def ping() -> str:
            return "pong"

        async with anyio.create_task_group() as tg:
            await tg.start(limited.run_async)
            assert (await (await ping.enqueue()).result(timeout=10)).result == "pong"
            assert await limited.dead_letters() == []
            tg.cancel_scope.cancel()
    finally:
        command("ACL", "DELUSER", user)
        admin.close()


async def main() -> None:
    await dead_letters()
    await acl_user()


if __name__ == "__main__":
    anyio.run(main)
