"""Fixtures of the UI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._support import delete_queue_keys

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")


@pytest.fixture
def clean_queue(redis_url: str, queue_name: str) -> Iterator[str]:
    """The test's queue name; the queue's keys are deleted after the test."""
    yield queue_name
    delete_queue_keys(redis_url, queue_name)
