"""Start an aiohttp application on a TCP port: the one way inferscale's servers listen.

Shared by the sim, the router and the operator's standby health endpoint, so they agree on the
choices that matter: a client that goes away cancels its handler (the engine stops generating
for nobody, a held request leaves its queue), no aiohttp access log (each server writes its own,
without prompts or credentials), a bounded graceful shutdown, and port 0 reporting the port the
kernel picked.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_grace_seconds: float = 5.0,
    backlog: int = 1024,
    idle_connection_seconds: float = 75.0,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port``; return the runner (``cleanup()`` stops it) and the port.

    ``idle_connection_seconds`` closes a connection that has no complete request for that long:
    an idle keep-alive connection, and one whose client has not finished its headers since it
    connected (slow-loris). aiohttp's timer starts when the connection opens and trickled bytes
    do not reset it; a request being handled is never cut by it.
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
        site = web.TCPSite(runner, host, port, backlog=backlog)
        await site.start()
    except BaseException:
        # A failed start (a taken port, a startup hook that raised) still runs the app's
        # cleanup hooks, so what the startup hooks opened (client sessions, tasks) is closed
        # now rather than reported unclosed when the garbage collector finds it.
        await runner.cleanup()
        raise
    server = site._server  # aiohttp exposes no public accessor for the bound port
    if isinstance(server, asyncio.base_events.Server) and server.sockets:
        port = server.sockets[0].getsockname()[1]
    return runner, port
