"""Deployment on Redis Sentinel and Redis Cluster: the Worker parameters (nothing connects here)."""

from __future__ import annotations

import os

import anyio

from streaq import StreaqError, Worker

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
QUEUE = os.environ.get("STREAQ_QUEUE", "docs")


def sentinel_worker() -> Worker[None]:
    # --8<-- [start:sentinel]
    worker: Worker[None] = Worker(
        # the URL's password, db and TLS settings are those of the master
        redis_url="redis://:master-password@unused:6379/0",
        sentinel_nodes=[("sentinel-1", 26379), ("sentinel-2", 26379), ("sentinel-3", 26379)],
        sentinel_master="mymaster",  # the name the sentinels monitor (default "mymaster")
        sentinel_kwargs={"password": "sentinel-password"},  # only if the sentinels need auth
        queue_name="billing",
    )
    # --8<-- [end:sentinel]
    return worker


def cluster_workers() -> list[Worker[None]]:
    # --8<-- [start:cluster]
    startup = [("redis-a", 7000), ("redis-b", 7000), ("redis-c", 7000)]
    # one queue lives in one slot; several queues spread over the masters
    shards: list[Worker[None]] = [
        Worker(cluster_nodes=startup, queue_name=f"thumbnails-{n}") for n in range(3)
    ]
    # --8<-- [end:cluster]
    return shards


async def main() -> None:
    assert sentinel_worker().sentinel_master == "mymaster"
    shards = cluster_workers()
    assert [w.queue_name for w in shards] == ["thumbnails-0", "thumbnails-1", "thumbnails-2"]
    try:
        Worker(sentinel_nodes=[("s", 26379)], cluster_nodes=[("c", 7000)])
    except StreaqError as error:
        print(error)  # use either sentinel_nodes or cluster_nodes, not both
    else:
        raise AssertionError("Sentinel and Cluster together must be refused")


if __name__ == "__main__":
    anyio.run(main)
