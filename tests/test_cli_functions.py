"""``streaq functions list|prune module:worker``: the libraries of old streaq versions go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from servers import ServerFactory
from test_cli_dlq import MODULE, streaq

from streaq import Worker
from streaq._library import LIBRARY

OLD = "streaq_0123456789"
OLD_CODE = f"#!lua name={OLD}\nredis.register_function('{OLD}_ping', function() return 1 end)"
OTHER = (
    "#!lua name=someone_else\nredis.register_function('someone_else_ping', function() return 1 end)"
)


@pytest.mark.slow
def test_prune_deletes_old_streaq_libraries_only(
    redis_server: ServerFactory, tmp_path: Path, queue_name: str
) -> None:
    server = redis_server()
    (tmp_path / "dlqapp.py").write_text(MODULE.format(url=server.url, queue=queue_name))

    async def connect() -> None:
        async with Worker(redis_url=server.url, queue_name=queue_name):
            pass  # loads this version's library

    anyio.run(connect)
    client = redis.Redis.from_url(server.url)
    try:
        client.function_load(OLD_CODE)
        client.function_load(OTHER)
        listed = streaq(tmp_path, "functions", "list", "dlqapp:worker")
        assert listed.returncode == 0, listed.stderr
        assert f"* {LIBRARY.name}" in listed.stdout
        assert f"  {OLD}" in listed.stdout
        assert "someone_else" not in listed.stdout
        pruned = streaq(tmp_path, "functions", "prune", "dlqapp:worker")
        assert pruned.returncode == 0, pruned.stderr
        assert "deleted 1 old library" in pruned.stdout
        assert _library_names(client) == {LIBRARY.name, "someone_else"}
    finally:
        client.close()


def _library_names(client: redis.Redis) -> set[str]:
    reply: list[Any] = client.function_list()
    # RESP2: each library is a flat [name, value, ...] list
    return {bytes(lib[lib.index(b"library_name") + 1]).decode() for lib in reply}
