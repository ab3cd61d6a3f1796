"""Serialization and security: msgpack by default, signing, opt-in pickle, TLS and ACL users."""

from __future__ import annotations

import os
import pickle

import anyio

from streaq import Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")

# --8<-- [start:signing]
worker: Worker[None] = Worker(
    redis_url=REDIS_URL,
    queue_name=QUEUE,
    signing_secret=os.environ.get("STREAQ_SIGNING_SECRET", "change-me"),
)


@worker.task
async def transfer(amount: int, to: str) -> str:
    return f"sent {amount} to {to}"


# --8<-- [end:signing]

# --8<-- [start:pickle]
# opt in to pickle only when every producer and worker of the queue is trusted:
# unpickling queue data runs whatever code the data names
pickled: Worker[None] = Worker(
    redis_url=REDIS_URL,
    queue_name=f"{QUEUE}-pickle",
    serializer=pickle.dumps,
    deserializer=pickle.loads,
)


@pickled.task
async def pickled_sum(numbers: set[int]) -> int:
    return sum(numbers)


# --8<-- [end:pickle]


def tls_and_acl_workers() -> list[Worker[None]]:
    # --8<-- [start:tls]
    # TLS: the rediss:// scheme; certificates are verified by default
    tls: Worker[None] = Worker(
        redis_url="rediss://redis.internal:6380/0",
        redis_kwargs={"ssl_ca_certs": "/etc/ssl/redis-ca.pem"},
    )
    # mutual TLS: a client certificate and key as well
    mtls: Worker[None] = Worker(
        redis_url="rediss://redis.internal:6380/0",
        redis_kwargs={
            "ssl_ca_certs": "/etc/ssl/redis-ca.pem",
            "ssl_certfile": "/etc/ssl/worker.pem",
            "ssl_keyfile": "/etc/ssl/worker-key.pem",
        },
    )
    # an ACL user: user name and password in the URL (and a database number after the /)
    acl: Worker[None] = Worker(redis_url="redis://billing-worker:s3cret@redis.internal:6379/2")
    # --8<-- [end:tls]
    return [tls, mtls, acl]


async def main() -> None:
    assert len(tls_and_acl_workers()) == 3  # building a worker does not connect

    async with anyio.create_task_group() as tg:
        await tg.start(worker.run_async)
        await tg.start(pickled.run_async)

        sent = await (await transfer.enqueue(10, "alice")).result(timeout=10)
        assert sent.result == "sent 10 to alice"

        summed = await (await pickled_sum.enqueue({1, 2, 3})).result(timeout=10)
        assert summed.result == 6

        # --8<-- [start:forged]
        # a producer without the right secret cannot get work done
        forger: Worker[None] = Worker(redis_url=REDIS_URL, queue_name=QUEUE, signing_secret="x")
        async with forger:
            forged = await forger.enqueue_unsafe("transfer", 1_000_000, "mallory")
        outcome = await worker.result_by_id(forged.id, timeout=10)
        assert not outcome.success  # the worker refused it and kept running
        assert "invalid signature" in str(outcome.exception)
        # --8<-- [end:forged]

        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
