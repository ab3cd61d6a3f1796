"""A TCP proxy whose connections can be frozen: a peer that vanishes without closing anything.

Theory of operation
-------------------
:func:`open_proxy` listens on a free local port and forwards every connection it accepts to the
upstream server, in both directions, as a *link*. :meth:`FreezingProxy.freeze` freezes the links
open at that moment: they keep their sockets open but forward nothing more (bytes that arrive are
held back), which is what a client sees when the server's host crashes or a network path drops
its packets -- no FIN, no RST, just silence. Links opened afterwards work normally, like a
reconnect that reaches a healthy server; :meth:`FreezingProxy.thaw` lets the frozen links deliver
what they held and forward again. Everything runs in the caller's task group and stops when it is
cancelled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc

__all__ = ["FreezingProxy", "open_proxy"]


class _Link:
    """One proxied connection: frozen while ``gate`` is set, until that event is."""

    def __init__(self) -> None:
        self.gate: anyio.Event | None = None

    async def pump(self, source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        """Forward ``source`` to ``sink`` until either side goes away."""
        try:
            async for chunk in source:
                while self.gate is not None:
                    await self.gate.wait()
                await sink.send(chunk)
            await sink.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # one side went away: so does this direction


class FreezingProxy:
    """See the module doc. Create with :func:`open_proxy`.

    :param upstream: ``(host, port)`` of the server to forward to.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._links: list[_Link] = []

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` of the proxy."""
        return f"redis://127.0.0.1:{self.port}"

    def freeze(self) -> None:
        """Stop forwarding on every link open now (new links are not affected)."""
        for link in self._links:
            if link.gate is None:
                link.gate = anyio.Event()

    def thaw(self) -> None:
        """Let the frozen links forward again, held bytes first."""
        for link in self._links:
            gate, link.gate = link.gate, None
            if gate is not None:
                gate.set()

    async def _handle(self, downstream: anyio.abc.SocketStream) -> None:
        link = _Link()
        self._links.append(link)
        try:
            async with (
                downstream,
                await anyio.connect_tcp(*self.upstream) as upstream,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(link.pump, downstream, upstream)
                tg.start_soon(link.pump, upstream, downstream)
        finally:
            self._links.remove(link)


@asynccontextmanager
async def open_proxy(upstream: tuple[str, int]) -> AsyncIterator[FreezingProxy]:
    """Run a :class:`FreezingProxy` to ``upstream`` for the duration of the ``async with``.

    :param upstream: ``(host, port)`` of the server.
    :return: the running proxy (as the context value).
    """
    proxy = FreezingProxy(upstream)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            proxy.thaw()
            tg.cancel_scope.cancel()
