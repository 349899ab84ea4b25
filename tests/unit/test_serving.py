"""serve_app's connection cap, in process: the refusal is a whole HTTP answer, the cap counts
open connections, and a cap of nothing is refused."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web

from inferscale.serving import REFUSAL, ConnectionCap, serve_app


def test_a_cap_needs_a_limit():
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionCap(0)


def test_the_refusal_is_a_whole_openai_error_answer():
    head, _, body = REFUSAL.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["error"]["code"] == "too_many_connections"


async def _answer(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    writer.close()
    return data


async def test_the_connection_past_the_cap_is_refused_and_counted():
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    cap = ConnectionCap(1, linger_seconds=1.0)
    runner, port = await serve_app(app, "127.0.0.1", 0, connection_cap=cap)
    try:
        assert port != 0
        held = socket.create_connection(("127.0.0.1", port))
        for _ in range(50):  # until the server has accepted it
            if cap.open == 1:
                break
            await asyncio.sleep(0.02)
        assert cap.open == 1
        assert (await _answer(port)) == REFUSAL
        assert cap.refused == 1
        held.close()
        for _ in range(50):
            if cap.open == 0:
                break
            await asyncio.sleep(0.02)
        assert (await _answer(port)).endswith(b"hello")
        assert cap.lingering == 0
    finally:
        await runner.cleanup()
