"""The router's bounds on connections and memory, proved with real sockets on 127.0.0.1.

The router runs as its own ``inferscale router`` process, so its resident memory (VmRSS) and its
open sockets (``/proc/<pid>/fd``) are its own and not the test's. Each test attacks it (too many
connections, a connection flood, bodies too big, slow-loris headers) while a sampler thread
records its memory and sockets, and checks the bound and that a normal request is served after.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.component.router.conftest import address
from tests.component.router.processes import CHAT, REQUEST, RouterProcess, Sampler

CAP = 50
BODY_LIMIT = 1024 * 1024


def _capped_router(tmp_path: Path, sims, idle_seconds: int) -> RouterProcess:
    flags = ["--max-client-connections", str(CAP), "--idle-connection-seconds", str(idle_seconds),
             "--max-request-bytes", str(BODY_LIMIT),
             "--client-body-timeout-seconds", "2"]  # fmt: skip
    return RouterProcess(tmp_path, [address(s) for s in sims], *flags)


@pytest.fixture
def capped(tmp_path: Path, sims) -> Iterator[RouterProcess]:
    with _capped_router(tmp_path, sims, idle_seconds=2) as router:
        yield router


@pytest.fixture
def capped_patient(tmp_path: Path, sims) -> Iterator[RouterProcess]:
    """The same cap with an idle bound no busy machine reaches: the held connections must stay
    held while a hundred more are refused (with 2 s, a slow run saw them closed and served)."""
    with _capped_router(tmp_path, sims, idle_seconds=120) as router:
        yield router


def connect(router: RouterProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", router.port), timeout=5)


def answer(sock: socket.socket, limit: float = 5.0) -> tuple[bytes, bool]:
    """All the router sends within ``limit`` seconds, and whether it then closed."""
    sock.settimeout(0.1)
    data, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def metric(router: RouterProcess, name: str) -> float:
    text = httpx.get(router.url + "/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[1])


def request_bytes(path: str = CHAT, body: bytes = REQUEST) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_connections_past_the_cap_get_a_clean_503_and_the_router_serves_after(capped_patient):
    capped = capped_patient
    held = [connect(capped) for _ in range(CAP - 1)]
    try:
        # The scrape is connection number CAP: counted, and served.
        assert metric(capped, "inferscale_router_client_connections") == CAP
        held.append(connect(capped))
        time.sleep(0.2)  # accepted, so the router counts it
        refused = []
        for _ in range(100):
            with connect(capped) as sock:
                sock.sendall(request_bytes())
                refused.append(answer(sock))
        for data, closed in refused:
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), data[:200]
            assert b"connection: close" in head.lower() and closed
            assert json.loads(body)["error"]["code"] == "too_many_connections"
        sockets_at_cap = capped.sockets()
        for sock in held[:5]:
            sock.close()
        time.sleep(0.3)
        assert capped.served() == 200
        assert metric(capped, "inferscale_router_client_connections_refused_total") == 100
    finally:
        for sock in held:
            sock.close()
    # listening + CAP clients + pooled engine connections (the sims are in this process)
    assert sockets_at_cap <= 1 + CAP + 8


def test_a_flood_of_connections_is_bounded_in_sockets_and_memory(capped):
    flood: list[socket.socket] = []
    with Sampler(capped) as sampled:
        try:
            for _ in range(2000):
                with contextlib.suppress(OSError):
                    flood.append(connect(capped))
            time.sleep(1.0)
            answers = [answer(s, 0.05) for s in flood]
        finally:
            for sock in flood:
                sock.close()
    # The CAP accepted ones wait for a request (the idle bound is 2 s); every other one was
    # closed by the router within a second: a 503 and a FIN while at most 1024 refused ones
    # linger, a reset past that.
    assert sum(closed for _, closed in answers) >= len(flood) - CAP
    assert sum(data.startswith(b"HTTP/1.1 503 ") for data, _ in answers) >= 1000
    assert len(flood) == 2000, "the kernel refused connections: the backlog overflowed"
    # CAP open plus refused ones lingering (at most 1024, each for at most 2 s).
    assert max(sampled.sockets) <= 1 + CAP + 1024 + 8, max(sampled.sockets)
    assert sampled.growth_mib < 30, f"RSS grew {sampled.growth_mib:.1f} MiB"
    time.sleep(0.3)
    assert capped.served() == 200


def _send_big_body(router: RouterProcess, chunked: bool, results: list[bytes]) -> None:
    """A body far over the limit, sent as fast as the router takes it."""
    with connect(router) as sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {200 << 20}"
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode())
        piece = b"x" * 65536
        if chunked:
            piece = b"10000\r\n" + piece + b"\r\n"
        sock.settimeout(5)
        with contextlib.suppress(OSError):  # the router closes on us mid-send
            for _ in range(3200):  # 200 MiB at most
                sock.sendall(piece)
        results.append(answer(sock, 3)[0])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_over_the_limit_get_413_without_their_size_in_memory(capped, chunked):
    results: list[bytes] = []
    senders = [
        threading.Thread(target=_send_big_body, args=(capped, chunked, results)) for _ in range(20)
    ]
    with Sampler(capped) as sampled:
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(60)
    assert len(results) == 20
    # A reset can discard the 413 in flight; most clients read it.
    assert sum(r.startswith(b"HTTP/1.1 413 ") for r in results) >= 10, results[:3]
    # 20 bodies of 200 MiB were offered; each is read to BODY_LIMIT at most (a chunked one
    # takes up to about twice that while aiohttp grows its buffer: 46 MiB for 20 measured).
    limit_mib = BODY_LIMIT / 2**20
    assert sampled.growth_mib < 20 * 2 * limit_mib + 20, f"grew {sampled.growth_mib:.1f} MiB"
    assert capped.served() == 200


def test_slow_loris_past_the_cap_is_refused_and_the_held_ones_are_closed(capped):
    slow = [connect(capped) for _ in range(2 * CAP)]
    try:
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: x\r\n".encode())
        answers = [answer(sock, 4.0) for sock in slow]  # the idle bound is 2 s
    finally:
        for sock in slow:
            sock.close()
    refused = sum(data.startswith(b"HTTP/1.1 503 ") for data, _ in answers)
    assert refused >= CAP - 1  # the sampler's scrapes are not running; only the slow ones
    assert all(closed for _, closed in answers), "a slow-loris connection was kept open"
    assert capped.served() == 200
