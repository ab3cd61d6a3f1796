"""Fixtures of the harness tests: a fresh worker per test on the shared Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from children import delete_queue_keys

from streaq import Worker


@pytest.fixture
def worker(redis_url: str, queue_name: str) -> Iterator[Worker[Any]]:
    """A worker on the test's queue (register tasks on it, then open a harness on it)."""
    yield Worker(redis_url=redis_url, queue_name=queue_name, concurrency=4, idle_timeout=5)
    delete_queue_keys(redis_url, queue_name)
