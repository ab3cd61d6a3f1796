"""Fixtures of the core behaviour suite: a worker per test, a way to run it, and key cleanup."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from streaq import Worker

from ._support import RunWorker, WorkerFactory, delete_queue_keys, make_worker, running


@pytest.fixture
def clean_queue(redis_url: str, queue_name: str) -> Iterator[str]:
    """The test's queue name; the queue's keys are deleted after the test."""
    yield queue_name
    delete_queue_keys(redis_url, queue_name)


@pytest.fixture
def worker(redis_url: str, clean_queue: str) -> Worker[Any]:
    """A fresh worker on the test's queue (register tasks on it, then run it)."""
    return make_worker(redis_url, clean_queue)


@pytest.fixture
def worker_factory(redis_url: str, clean_queue: str) -> WorkerFactory:
    """Build more workers on the test's queue, e.g. ``worker_factory(concurrency=1)``."""

    def factory(**options: Any) -> Worker[Any]:
        return make_worker(redis_url, clean_queue, **options)

    return factory


@pytest.fixture
def run_worker() -> RunWorker:
    """``async with run_worker(worker):`` runs the worker for the duration of the block."""
    return running
