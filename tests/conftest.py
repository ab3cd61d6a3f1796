"""Shared fixtures: the anyio backend matrix, the Redis URL and per-test queue names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import ServerFactory

_BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "asyncio+uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


def _selected_backends() -> list[str]:
    chosen = os.environ.get("STREAQ_TEST_BACKEND")
    return [chosen] if chosen else ["asyncio", "trio"]


@pytest.fixture(params=_selected_backends(), scope="session")
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Every async test runs once per backend (one backend when STREAQ_TEST_BACKEND is set)."""
    return _BACKENDS[request.param]


@pytest.fixture
def backend_name(anyio_backend: tuple[str, dict[str, Any]]) -> str:
    """``"asyncio"`` or ``"trio"``: the backend the current test runs on."""
    return anyio_backend[0]


@pytest.fixture(scope="session")
def shared_redis_url() -> str:
    """The shared Redis server of the test run (``REDIS_URL``, default localhost:6379)."""
    return os.environ.get("REDIS_URL", "redis://localhost:6379")


@pytest.fixture(scope="session")
def redis_url(shared_redis_url: str) -> str:
    """The Redis server a test talks to: the shared one (``tests/core`` overrides it per queue)."""
    return shared_redis_url


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test uses, so tests can run side by side."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start throwaway ``redis-server`` processes on free ports; all are killed in teardown.

    Call it: ``server = redis_server(password="s3cret")``, ``redis_server(tls=True)``.
    """
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
