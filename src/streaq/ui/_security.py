"""What keeps a browser from turning the UI against its user: the Host allow-list and the
security headers.

Host allow-list (DNS rebinding). A page of ``evil.example`` whose name the attacker later points
at 127.0.0.1 can make the browser send requests to a UI listening there, and read the answers:
the browser thinks it talks to ``evil.example``, so the same-origin policy and the
``SameSite`` CSRF cookie do not help. The one thing that gives the attack away is the ``Host``
header, which still says ``evil.example``. :class:`HostCheck` refuses (400) a request whose
``Host`` is not allowed:

- ``allowed_hosts=None`` (the default): a request that reached the server on a loopback address
  (the ASGI scope's ``server``, i.e. the socket it arrived on) must name a loopback host:
  ``localhost``, ``127.0.0.1`` or ``[::1]``, with any port. Other requests are not checked, since
  the names a server is reached by elsewhere cannot be guessed.
- a list: every request must name one of them. An entry is a host name or address (``ui.example``,
  ``10.0.0.5``, ``[::1]``), optionally with a port (``ui.example:8443``, then only that port),
  ``*.example.com`` for any subdomain, or ``*`` for any host (no check).

Headers. Every response gets :data:`SECURITY_HEADERS`: a Content-Security-Policy allowing only
the UI's own stylesheet and its own script file (the live refresh, which fetches pages of the UI
only: ``connect-src 'self'``), no inline script or style, forms posting only to the UI, and
no framing (``frame-ancestors 'none'``, and ``X-Frame-Options: DENY`` for older browsers);
``X-Content-Type-Options: nosniff``; ``Referrer-Policy: no-referrer`` (task ids in URLs stay
out of other sites' logs).

The router adds both to its own routes (:class:`SecureRoute` and a dependency), so an application
mounting it needs nothing else; :class:`SecureApp` does the same for every response of
``create_app``'s application, its 404s included.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LOOPBACK_HOSTS", "SECURITY_HEADERS", "HostCheck", "SecureApp", "SecureRoute"]

#: the names a loopback server may be reached by when no allow-list is given
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

#: sent with every response of the UI
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_BAD_HOST = "invalid Host header: this server does not answer to that name"


def split_host(value: str) -> tuple[str, str | None]:
    """``(host, port)`` of a ``Host`` header or an allow-list entry, the host lower-cased and
    without brackets or a trailing dot (``"[::1]:8000"`` → ``("::1", "8000")``)."""
    value = value.strip().lower()
    port: str | None = None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host = value  # a name, or a bare IPv6 address (in an allow-list)
    return host.rstrip("."), port or None


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class HostCheck:
    """Decides whether a request's ``Host`` header is allowed (see the module docstring).

    :param allowed_hosts: the allow-list, or ``None`` for loopback names on loopback servers
    """

    def __init__(self, allowed_hosts: Iterable[str] | None = None) -> None:
        self._any = False
        self._exact: set[tuple[str, str | None]] = set()
        self._suffixes: list[str] = []
        self._auto = allowed_hosts is None
        if isinstance(allowed_hosts, str):
            allowed_hosts = [allowed_hosts]  # one name, not its letters
        for entry in LOOPBACK_HOSTS if allowed_hosts is None else allowed_hosts:
            if entry.strip() == "*":
                self._any = True
            elif entry.strip().startswith("*."):
                self._suffixes.append(split_host(entry.strip()[1:])[0])
            else:
                self._exact.add(split_host(entry))

    def allows(self, host_header: str | None, server: Sequence[Any] | None) -> bool:
        """Whether a request with this ``Host`` header, received on ``server`` (the ASGI
        scope's ``(host, port)``), may be answered."""
        if self._any:
            return True
        if self._auto and not (server and isinstance(server[0], str) and _is_loopback(server[0])):
            return True
        if not host_header:
            return False
        host, port = split_host(host_header)
        if (host, None) in self._exact or (host, port) in self._exact:
            return True
        return any(host.endswith(suffix) for suffix in self._suffixes)

    def __call__(self, request: Request) -> None:
        """The FastAPI dependency: refuse a request whose ``Host`` is not allowed.

        :raises HTTPException: 400
        """
        if not self.allows(request.headers.get("host"), request.scope.get("server")):
            raise HTTPException(400, _BAD_HOST)


class SecureRoute(APIRoute):
    """A route whose every answer carries :data:`SECURITY_HEADERS`, errors included.

    An ``HTTPException`` raised by the endpoint or a dependency (the ``auth`` hook, the CSRF and
    Host checks) gets the headers and goes on to the application's handler; invalid parameters
    become the same 422 answer FastAPI gives, with the headers.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            try:
                response = await handler(request)
            except StarletteHTTPException as exc:  # FastAPI's too
                exc.headers = {**SECURITY_HEADERS, **(exc.headers or {})}
                raise
            except RequestValidationError as exc:
                detail = jsonable_encoder(exc.errors())
                raise HTTPException(422, detail, dict(SECURITY_HEADERS)) from exc
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return secured


class SecureApp:
    """ASGI middleware of ``create_app``: the Host check and the headers for every response.

    :param app: the application to wrap
    :param hosts: the Host check
    """

    def __init__(self, app: ASGIApp, hosts: HostCheck) -> None:
        self._app = app
        self._hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        if not self._hosts.allows(host, scope.get("server")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            refused = PlainTextResponse(_BAD_HOST, 400, headers=SECURITY_HEADERS)
            await refused(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {bytes(k).lower() for k, _ in message.get("headers", [])}
                extra = [
                    (name.lower().encode(), value.encode())
                    for name, value in SECURITY_HEADERS.items()
                    if name.lower().encode() not in present
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self._app(scope, receive, send_secured)
