"""The benchmarks' delay proxy: every chunk arrives ``delay`` late, in order, back to back."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import anyio.abc
import pytest

# the benchmarks package lives next to tests/, outside the installed streaq
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.latency_proxy import open_delay_proxy

pytestmark = pytest.mark.anyio

DELAY = 0.05


async def _echo(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send(chunk)


async def test_delays_each_direction_and_keeps_the_bytes() -> None:
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as server,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(server.serve, _echo)
        port = server.extra(anyio.abc.SocketAttribute.local_port)
        async with (
            open_delay_proxy(("127.0.0.1", port), DELAY) as proxy,
            await anyio.connect_tcp("127.0.0.1", proxy.port) as client,
        ):
            sent = b"".join(b"%05d;" % n for n in range(2000))
            received = bytearray()
            with anyio.fail_after(10):
                start = anyio.current_time()
                # sent back to back: a delay line delivers them ~2 x DELAY later, not 100 x
                for n in range(0, len(sent), 120):
                    await client.send(sent[n : n + 120])
                first = await client.receive()
                first_at = anyio.current_time() - start
                received += first
                while len(received) < len(sent):
                    received += await client.receive()
                last_at = anyio.current_time() - start
            assert bytes(received) == sent
            assert first_at >= 2 * DELAY * 0.9
            assert last_at < 2 * DELAY + 1.0
        tg.cancel_scope.cancel()


async def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        async with open_delay_proxy(("127.0.0.1", 1), -1):
            pass
