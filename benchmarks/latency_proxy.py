"""A TCP delay line: every byte crosses the proxy ``delay`` later, in both directions.

Theory of operation
-------------------
:func:`open_delay_proxy` listens on a local port and forwards every connection it accepts to the
upstream server as two *lines*, one per direction. A line's *feeder* reads whatever arrives and
stamps each chunk with the moment it is due (arrival + ``delay``); its *deliverer* sleeps until the
oldest chunk is due, then sends every chunk due by then in one write. Stamping happens on arrival,
so the proxy is a delay line, not stop-and-wait: chunks sent back to back arrive back to back,
each ``delay`` late, and a pipelined client keeps its throughput (a round trip costs ``2 * delay``
more, whatever is in flight). Order is kept (one FIFO per direction); an end of stream is passed on
after the bytes before it; an error on either side drops the connection.

Run it alone with ``python -m benchmarks.latency_proxy --upstream 127.0.0.1:6379 --delay-ms 1``:
it prints ``port <n>`` once it listens and serves until interrupted.
"""

from __future__ import annotations

import argparse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial

import anyio
import anyio.abc

__all__ = ["DelayProxy", "main", "open_delay_proxy"]

#: errors that mean one side of a connection went away
GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class _Line:
    """One direction of a proxied connection: chunks in flight, each with the time it is due."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.ended = False
        self._wake = anyio.Event()

    async def feed(self, source: anyio.abc.ByteReceiveStream) -> None:
        """Stamp everything ``source`` sends until it ends."""
        try:
            async for chunk in source:
                self.chunks.append((anyio.current_time() + self.delay, chunk))
                self._wake.set()
        finally:
            self.ended = True
            self._wake.set()

    async def deliver(self, sink: anyio.abc.ByteStream) -> None:
        """Send each chunk to ``sink`` once it is due, then pass the end of stream on."""
        chunks = self.chunks
        while True:
            while not chunks:
                if self.ended:
                    await sink.send_eof()
                    return
                wake = self._wake = anyio.Event()
                await wake.wait()
            await anyio.sleep_until(chunks[0][0])
            # everything due by now goes in one write: a timer that woke late must not turn a
            # burst of small chunks into one late write per chunk
            now = anyio.current_time()
            parts = []
            while chunks and chunks[0][0] <= now:
                parts.append(chunks.popleft()[1])
            await sink.send(b"".join(parts))


class DelayProxy:
    """See the module doc. Create with :func:`open_delay_proxy`.

    :param upstream: ``(host, port)`` of the server to forward to
    :param delay: the one-way delay, in seconds
    """

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = 0

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` of the proxy."""
        return f"redis://127.0.0.1:{self.port}"

    async def _handle(self, downstream: anyio.abc.SocketStream) -> None:
        async with downstream:
            try:
                upstream = await anyio.connect_tcp(*self.upstream)
            except OSError:
                return  # the client sees its connection close, as with a refused one
            async with upstream, anyio.create_task_group() as tg:

                async def guarded(duty: Callable[[], Awaitable[None]]) -> None:
                    try:
                        await duty()
                    except GONE:
                        tg.cancel_scope.cancel()  # one side is gone: drop the connection

                for source, sink in ((downstream, upstream), (upstream, downstream)):
                    line = _Line(self.delay)
                    tg.start_soon(guarded, partial(line.feed, source))
                    tg.start_soon(guarded, partial(line.deliver, sink))


@asynccontextmanager
async def open_delay_proxy(
    upstream: tuple[str, int], delay: float, port: int = 0
) -> AsyncIterator[DelayProxy]:
    """Run a :class:`DelayProxy` to ``upstream`` for the duration of the ``async with``.

    :param upstream: ``(host, port)`` of the server
    :param delay: the one-way delay in seconds (0 forwards at once)
    :param port: the local port to listen on (0: a free one)
    :return: the running proxy, whose ``port`` is set
    :raises ValueError: for a negative delay
    """
    if delay < 0:
        raise ValueError(f"the delay must not be negative, got {delay!r}")
    proxy = DelayProxy(upstream, delay)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()


async def _serve(upstream: tuple[str, int], delay: float, port: int) -> None:
    async with open_delay_proxy(upstream, delay, port) as proxy:
        print(f"port {proxy.port}", flush=True)
        await anyio.sleep_forever()


def main(argv: list[str] | None = None) -> None:
    """Run the proxy from the command line until interrupted.

    :param argv: the arguments (default ``sys.argv[1:]``)
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_proxy")
    parser.add_argument("--upstream", default="127.0.0.1:6379", help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="one-way delay (ms)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument("--backend", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    backend = "trio" if args.backend == "trio" else "asyncio"
    options = {"use_uvloop": True} if args.backend == "uvloop" else {}
    with suppress(KeyboardInterrupt):
        anyio.run(
            _serve,
            (host, int(port)),
            args.delay_ms / 1000,
            args.port,
            backend=backend,
            backend_options=options,
        )


if __name__ == "__main__":
    main()
