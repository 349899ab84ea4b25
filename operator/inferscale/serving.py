"""Start an aiohttp application on a TCP port: the one way inferscale's servers listen.

Shared by the sim, the router and the operator's standby health endpoint, so they agree on the
choices that matter: a client that goes away cancels its handler (the engine stops generating
for nobody, a held request leaves its queue), no aiohttp access log (each server writes its own,
without prompts or credentials), a bounded graceful shutdown, port 0 reporting the port the
kernel picked, and an optional cap on concurrent client connections (:class:`ConnectionCap`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Final, cast

from aiohttp import web

_REFUSAL_BODY: Final = json.dumps(
    {
        "error": {
            "message": "this server has too many open connections; retry shortly",
            "type": "server_overloaded",
            "param": None,
            "code": "too_many_connections",
        }
    }
).encode()
REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)
"""What a connection past the cap receives before it is closed: a whole HTTP answer, so any
client reads a clean 503 (an OpenAI error object) rather than a reset."""


class ConnectionCap:
    """At most ``limit`` client connections open at once; each one past it is refused.

    A refused connection is answered :data:`REFUSAL` at once and half-closed; what the client
    sends meanwhile is read and dropped, so that the close is a FIN after the answer rather than
    a reset that would discard it. It is closed when the client closes, or after
    ``linger_seconds``. At most ``max_lingering`` refused connections linger at once; past that
    a refused connection is reset at once (a flood no answer would slow).
    """

    def __init__(
        self, limit: int, *, linger_seconds: float = 2.0, max_lingering: int = 1024
    ) -> None:
        """``limit`` open connections (those being served, idle keep-alive ones included)."""
        if limit < 1:
            raise ValueError("a connection cap needs a limit of at least 1")
        self.limit = limit
        self.linger_seconds = linger_seconds
        self.max_lingering = max_lingering
        self.refused = 0
        """Connections refused since the start."""
        self.lingering = 0
        """Refused connections not yet closed."""
        self._server: web.Server | None = None

    @property
    def open(self) -> int:
        """Client connections open now (not counting the refused ones)."""
        return len(self._server.connections) if self._server is not None else 0

    def factory(self, server: web.Server) -> asyncio.Protocol:
        """A protocol for one new connection: aiohttp's, or a refusal when at the limit."""
        self._server = server
        if len(server.connections) < self.limit:
            return server()
        self.refused += 1
        return _Refusal(self)


class _Refusal(asyncio.Protocol):
    """One connection past the cap: answer 503, drop what arrives, close."""

    def __init__(self, cap: ConnectionCap) -> None:
        self.cap = cap
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's; both have these methods.
        transport = cast(asyncio.Transport, transport)
        self.cap.lingering += 1
        if self.cap.lingering > self.cap.max_lingering:
            transport.abort()
            return
        transport.write(REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(self.cap.linger_seconds, transport.abort)

    def data_received(self, data: bytes) -> None:
        """Dropped: the request is refused whatever it says."""

    def eof_received(self) -> bool:
        return False  # the client is done: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.cap.lingering -= 1
        if self.timer is not None:
            self.timer.cancel()


class _Site(web.BaseSite):
    """aiohttp's TCPSite with a protocol factory of our own (the connection cap's)."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, backlog: int, cap: ConnectionCap | None
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self.host, self.port, self.cap = host, port, cap

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        cap = self.cap
        self._server = await asyncio.get_running_loop().create_server(
            server if cap is None else lambda: cap.factory(server),
            self.host,
            self.port,
            backlog=self._backlog,
        )


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_grace_seconds: float = 5.0,
    backlog: int = 1024,
    idle_connection_seconds: float = 75.0,
    connection_cap: ConnectionCap | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port``; return the runner (``cleanup()`` stops it) and the port.

    ``idle_connection_seconds`` closes a connection that has no complete request for that long:
    an idle keep-alive connection, and one whose client has not finished its headers since it
    connected (slow-loris). aiohttp's timer starts when the connection opens and trickled bytes
    do not reset it; a request being handled is never cut by it. ``connection_cap`` bounds the
    connections open at once (``None``: only the process's file limit does).
    """
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=shutdown_grace_seconds,
        keepalive_timeout=idle_connection_seconds,
    )
    try:
        await runner.setup()
        site = _Site(runner, host, port, backlog, connection_cap)
        await site.start()
    except BaseException:
        # A failed start (a taken port, a startup hook that raised) still runs the app's
        # cleanup hooks, so what the startup hooks opened (client sessions, tasks) is closed
        # now rather than reported unclosed when the garbage collector finds it.
        await runner.cleanup()
        raise
    # uvloop's server is no asyncio.base_events.Server, but has the same sockets.
    sockets = getattr(site._server, "sockets", None)
    if sockets:
        port = sockets[0].getsockname()[1]
    return runner, port
