"""``examples/fastapi_app.py``: the app (its lifespan a producer) and a real worker process."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest

from ._support import spawn_streaq

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load_example(name: str) -> ModuleType:
    # a fresh module per test: the example reads its queue name from the environment on import
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / "fastapi_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_fastapi_example(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, clean_queue: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STREAQ_QUEUE", clean_queue)
    example = _load_example(f"fastapi_app_{clean_queue.replace('-', '_')}")
    app = example.app
    transport = httpx.ASGITransport(app=app)
    # httpx's ASGI transport does not run the lifespan; the app's own lifespan context does
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        task_id = (await client.post("/add", params={"a": 2, "b": 3})).json()["task_id"]
        # no worker runs yet: the task waits in the queue
        late = await client.get(f"/tasks/{task_id}", params={"timeout": 0.2})
        assert late.status_code == 504
        assert (await client.get("/tasks/nope")).status_code == 404

        worker = spawn_streaq(EXAMPLES, "run", "fastapi_app:worker")
        try:
            done = await client.get(f"/tasks/{task_id}", params={"timeout": 20}, timeout=30)
            assert done.status_code == 200, worker.poll()
            assert done.json() == {"task_id": task_id, "success": True, "result": 5}
            again = (await client.post("/add", params={"a": 40, "b": 2})).json()["task_id"]
            assert (await client.get(f"/tasks/{again}")).json()["result"] == 42
        finally:
            worker.send_signal(signal.SIGTERM)
            stderr = (await anyio.to_thread.run_sync(worker.communicate))[1]
        assert worker.returncode == 0, stderr
