"""Slow clients are bounded: a trickled body gets 408 and loses its connection, trickled
headers lose theirs after ``idle_connection_seconds``, and a long answer is never cut by it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.component.router.conftest import MODEL, RunningRouter, address
from tests.component.sim.conftest import RunningSim, make_settings

PATH = "/v1/chat/completions"


@pytest.fixture(scope="module")
def slow_bounded() -> Iterator[RunningRouter]:
    with RunningRouter(client_body_timeout_seconds=0.5, idle_connection_seconds=1.0) as router:
        yield router


def connect(router: RunningRouter) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", router.port), timeout=5)
    return sock


def read_all(sock: socket.socket, limit: float) -> tuple[bytes, bool]:
    """What the router sends within ``limit`` seconds, and whether it closed the connection."""
    sock.settimeout(0.2)
    data, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return data, True
        data += chunk
    return data, False


def test_a_trickled_body_gets_408_and_the_connection_closes(slow_bounded):
    with connect(slow_bounded) as sock:
        head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{"
        sock.sendall(head.encode())
        data, _ = read_all(sock, 3)
    status, _, rest = data.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert json.loads(body)["error"]["message"] == "the request body was not sent in time"


def test_trickled_headers_lose_the_connection_after_the_idle_bound(slow_bounded):
    with connect(slow_bounded) as sock:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
        started = time.monotonic()
        for _ in range(4):  # a byte every 0.3 s does not keep it open
            time.sleep(0.3)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        data, closed = read_all(sock, 4)
    assert closed and data == b"", "the router kept a slow-loris connection open"
    assert time.monotonic() - started < 4


def test_a_request_longer_than_the_idle_bound_is_not_cut(slow_bounded):
    with RunningSim(make_settings(step_base_seconds=0.02)) as sim:
        assert slow_bounded.push({MODEL: [address(sim)]}).status_code == 200
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        started = time.monotonic()
        answer = httpx.post(
            slow_bounded.base_url + PATH, json={**body, "max_tokens": 100}, timeout=20
        )
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 100
    assert time.monotonic() - started > 1.0  # it outlived idle_connection_seconds
