"""Table swaps under load, retries before the first byte, the circuit breaker, the hold queue,
the admin API, and a router process's SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from inferscale.router.app import start
from inferscale.router.settings import RouterSettings
from inferscale.serving import serve_app
from tests.component.router.conftest import (
    MODEL,
    TOKEN,
    RunningRouter,
    SimProcess,
    address,
    free_port,
)
from tests.component.sim.conftest import RunningSim, make_settings
from tests.servers import ServerThread

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- admin API ------------------------------------------------------------------------------


def test_admin_api_authenticates(router):
    url = router.base_url + "/admin/v1/routing-table"
    doc = {"version": 1, "models": {}}
    assert httpx.put(url, json=doc).status_code == 401
    assert httpx.put(url, json=doc).headers["WWW-Authenticate"] == "Bearer"
    assert httpx.put(url, json=doc, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.get(url, headers={"Authorization": "Basic x"}).status_code == 401
    assert httpx.get(url, headers=AUTH).status_code == 404  # nothing pushed yet
    assert httpx.put(url, json=doc, headers=AUTH).status_code == 200
    assert httpx.get(url, headers=AUTH).json() == {"version": 1, "models": {}, "providers": {}}


def test_admin_api_refuses_invalid_and_older_tables(router):
    url = router.base_url + "/admin/v1/routing-table"
    assert httpx.put(url, content=b"{", headers=AUTH).status_code == 400
    assert (
        httpx.put(
            url, json={"version": 1, "models": {"m": {"route": {"strategy": "x"}}}}, headers=AUTH
        ).status_code
        == 400
    )
    assert router.push({MODEL: []}, version=5).status_code == 200
    assert router.push({MODEL: []}, version=5).json()["changed"] is False
    stale = router.push({MODEL: []}, version=4)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_version"


def test_admin_disabled_without_a_token(sims):
    with RunningRouter() as r:
        r.router.admin_token = None  # as a router started with no token configured
        resp = httpx.get(r.base_url + "/admin/v1/routing-table", headers=AUTH)
        assert resp.status_code == 403


def test_table_file_is_served_at_start(tmp_path, sims):
    path = tmp_path / "table.json"
    doc = {
        "version": 7,
        "models": {MODEL: {"endpoints": [{"pod": "a", "address": address(sims[0])}]}},
    }
    path.write_text(json.dumps(doc))
    with RunningRouter(table_file=str(path), table_poll_seconds=0.1) as r:
        assert httpx.post(r.base_url + "/v1/chat/completions", json=CHAT).status_code == 200
        # The operator updates the ConfigMap: the router picks up the newer version.
        path.write_text('{"version": 8, "models": {}}')
        wait_for(lambda: r.router.table.version == 8)
        assert httpx.post(r.base_url + "/v1/chat/completions", json=CHAT).status_code == 404


# -- table swaps under load -------------------------------------------------------------------


async def test_table_swaps_under_load_fail_no_request(router, sims):
    a, b = address(sims[0]), address(sims[1])
    router.push({MODEL: [a]})
    errors: list[str] = []
    done = 0
    stop = asyncio.Event()

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal done
        for _ in range(10_000):  # bounded; stops when the swaps are over
            if stop.is_set():
                return
            r = await client.post("/v1/chat/completions", json=CHAT)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
            done += 1

    async with httpx.AsyncClient(base_url=router.base_url, timeout=10) as client:
        users = [asyncio.create_task(user(client)) for _ in range(8)]
        for tables in ([a, b], [b], [a, b], [a], [b], [a, b]):
            await asyncio.sleep(0.15)
            assert (await asyncio.to_thread(router.push, {MODEL: tables})).status_code == 200
        await asyncio.sleep(0.15)
        stop.set()
        await asyncio.gather(*users)
    assert errors == [] and done > 50


# -- retries, breaker, mid-stream death --------------------------------------------------------


def test_crash_before_first_byte_is_retried_elsewhere(router, sims):
    with SimProcess("--fail-crash-after", "0") as crashing:
        router.push(
            {
                MODEL: {
                    "route": {"strategy": "roundRobin"},
                    "endpoints": [crashing.address, address(sims[0])],
                }
            }
        )
        c = openai.OpenAI(base_url=router.base_url + "/v1", api_key="x", max_retries=0)
        for _ in range(4):
            out = c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2
            )
            assert out.choices[0].message.content
    assert router.metric("inferscale_router_retries_total", model=MODEL) >= 1


def test_a_retry_picks_from_the_table_pushed_during_the_failed_attempt(router, sims):
    """Scale-down: the pod the first attempt went to leaves the table, its replacement joins."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class LeavingPod(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            # The operator's push lands while this pod is answering its last request.
            router.push({MODEL: [address(sims[0])]})
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), LeavingPod)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        router.push({MODEL: [f"127.0.0.1:{server.server_address[1]}"]})
        r = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
        assert r.status_code == 200, r.text
        joined = "pod-" + address(sims[0]).rsplit(":", 1)[1]
        assert r.headers["X-Inferscale-Pod"] == joined, "answered by the pod that joined"
    finally:
        server.shutdown()
        server.server_close()


def test_dead_endpoint_is_ejected_and_probed_back(router, sims):
    dead = f"127.0.0.1:{free_port()}"
    router.push(
        {MODEL: {"route": {"strategy": "roundRobin"}, "endpoints": [dead, address(sims[0])]}}
    )
    for _ in range(12):
        assert httpx.post(router.base_url + "/v1/chat/completions", json=CHAT).status_code == 200
    assert router.metric("inferscale_router_ejections_total") >= 1
    retries_before = router.metric("inferscale_router_retries_total")
    # While ejected, requests go straight to the live endpoint: no more retries.
    for _ in range(3):
        httpx.post(router.base_url + "/v1/chat/completions", json=CHAT)
    ejected = router.metric("inferscale_router_retries_total") - retries_before
    assert ejected <= 1  # at most one half-open probe if the ejection just ran out


def test_all_attempts_failing_is_a_clean_502(router):
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    router.push({MODEL: dead})
    r = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code in (502, 503)
    assert "error" in r.json()


def test_upstream_retryable_status_without_another_endpoint_passes_the_engines_answer(router):
    with SimProcess("--fail-error-rate", "1", "--fail-error-status", "503") as failing:
        router.push({MODEL: [failing.address]})
        r = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
        assert r.status_code == 503


def test_engine_killed_mid_stream_fails_cleanly(router):
    with SimProcess("--step-base-seconds", "0.05") as slow:
        router.push({MODEL: [slow.address]})
        c = openai.OpenAI(base_url=router.base_url + "/v1", api_key="x", max_retries=0)
        stream = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=200, stream=True
        )
        got = 0
        with pytest.raises(openai.APIError):
            for chunk in stream:
                got += 1
                if got == 2:
                    slow.kill()
        assert got >= 2
    assert router.metric("inferscale_router_requests_total", status="502") == 1


def test_garbage_upstream_is_502(router):
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve() -> None:
        srv.settimeout(10)
        for _ in range(3):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    router.push(
        {MODEL: {"route": {"retries": {"maxAttempts": 1}}, "endpoints": [f"127.0.0.1:{port}"]}}
    )
    r = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
    srv.close()
    assert r.status_code == 502
    assert "upstream" in r.json()["error"]["message"] or "engine" in r.json()["error"]["message"]


def test_client_disconnect_cancels_the_upstream_request(router):
    # A frozen engine next to a healthy one: its first-byte timeout is retried on the other.
    with SimProcess("--fail-hang-after", "0") as hung, SimProcess() as healthy:
        router.push(
            {
                MODEL: {
                    "route": {"timeouts": {"firstTokenSeconds": 0.5}, "strategy": "roundRobin"},
                    "endpoints": [hung.address, healthy.address],
                }
            }
        )
        for _ in range(2):  # round robin: one of the two starts on the frozen engine
            r = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
            assert r.status_code == 200 and r.headers["X-Inferscale-Pod"] == f"pod-{healthy.port}"
    with RunningSim(make_settings(step_base_seconds=0.05)) as slow:
        router.push({MODEL: [address(slow)]})
        with httpx.stream(
            "POST",
            router.base_url + "/v1/chat/completions",
            json={**CHAT, "max_tokens": 500, "stream": True},
            timeout=10,
        ) as r:
            next(r.iter_lines())
        wait_for(lambda: slow.metrics()["vllm:num_requests_running"] == 0, timeout=10)
        wait_for(lambda: router.metric("inferscale_router_in_flight") == 0, timeout=10)


# -- hold queue ----------------------------------------------------------------------------------


def test_held_request_is_served_when_an_endpoint_arrives(router, sims):
    router.push({MODEL: {"route": {"holdQueue": {"maxRequests": 5, "maxWaitSeconds": 30}}}})
    result: dict = {}

    def call() -> None:
        result["r"] = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=30)

    t = threading.Thread(target=call)
    t.start()
    held = lambda: httpx.get(router.base_url + "/admin/v1/held", headers=AUTH).json()  # noqa: E731
    wait_for(lambda: held()["models"][MODEL]["held"] == 1)
    assert router.metric("inferscale_router_held_requests", model=MODEL) == 1
    router.push(
        {
            MODEL: {
                "route": {"holdQueue": {"maxRequests": 5, "maxWaitSeconds": 30}},
                "endpoints": [address(sims[0])],
            }
        }
    )
    t.join(20)
    assert result["r"].status_code == 200
    assert held()["models"][MODEL]["held"] == 0


def test_held_stream_gets_keepalives_then_the_answer(router, sims):
    router.push({MODEL: {"route": {"holdQueue": {"maxWaitSeconds": 30}}}})
    lines: list[str] = []

    def call() -> None:
        with httpx.stream(
            "POST",
            router.base_url + "/v1/chat/completions",
            json={**CHAT, "stream": True},
            timeout=30,
        ) as r:
            lines.extend(r.iter_lines())

    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: router.router.held.get(MODEL) == 1)
    time.sleep(0.5)  # a few keep-alive intervals (0.2 s)
    router.push({MODEL: [address(sims[0])]})
    t.join(20)
    assert lines[0].startswith(": waiting")
    assert [line for line in lines if line][-1] == "data: [DONE]"


def test_hold_queue_full_or_timed_out_is_503_with_retry_after(router, sims):
    router.push({MODEL: {"route": {"holdQueue": {"maxRequests": 0}}}})
    r = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    router.push({MODEL: {"route": {"holdQueue": {"maxRequests": 5, "maxWaitSeconds": 0.3}}}})
    r = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert r.json()["error"]["code"] == "model_unavailable"


# -- the process -------------------------------------------------------------------------------


def test_router_process_serves_from_its_table_file_and_stops_on_sigterm(tmp_path, sims):
    port = free_port()
    table = tmp_path / "table.yaml"
    table.write_text(
        f"version: 1\nmodels:\n  {MODEL}:\n    endpoints:\n"
        f"    - pod: a\n      address: {address(sims[0])}\n"
    )
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferscale",
            "router",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--table-file",
            str(table),
            "--admin-token-file",
            str(token),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _ok(f"http://127.0.0.1:{port}/readyz"), timeout=30)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=10)
        assert r.status_code == 200
        held = httpx.get(
            f"http://127.0.0.1:{port}/admin/v1/held", headers={"Authorization": "Bearer s3cret"}
        )
        assert held.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()[-2000:]
        logged = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        assert [entry["status"] for entry in logged] == [200]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_engine_metrics_are_scraped_for_queue_aware_picking():
    with RunningSim(make_settings(step_base_seconds=0.05)) as slow:
        with RunningRouter(scrape_interval_seconds=0.1) as r:
            r.push({MODEL: [address(slow)]})
            endpoint = r.router.table.models[MODEL].ready[0]
            with httpx.stream(
                "POST",
                r.base_url + "/v1/chat/completions",
                json={**CHAT, "max_tokens": 400, "stream": True},
                timeout=30,
            ) as resp:
                lines = resp.iter_lines()
                next(lines)
                # While the sequence runs, its KV blocks show in the scraped gauge.
                wait_for(lambda: endpoint.kv_usage > 0, timeout=10)


def test_route_timeouts_first_token_and_total(router):
    with SimProcess("--fail-hang-after", "0") as hung:
        router.push(
            {
                MODEL: {
                    "route": {"timeouts": {"firstTokenSeconds": 0.5}},
                    "endpoints": [hung.address],
                }
            }
        )
        r = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
    # A frozen engine next to a healthy one: its first-byte timeout is retried on the other.
    with SimProcess("--fail-hang-after", "0") as hung, SimProcess() as healthy:
        router.push(
            {
                MODEL: {
                    "route": {"timeouts": {"firstTokenSeconds": 0.5}, "strategy": "roundRobin"},
                    "endpoints": [hung.address, healthy.address],
                }
            }
        )
        for _ in range(2):  # round robin: one of the two starts on the frozen engine
            r = httpx.post(router.base_url + "/v1/chat/completions", json=CHAT, timeout=10)
            assert r.status_code == 200 and r.headers["X-Inferscale-Pod"] == f"pod-{healthy.port}"
    with RunningSim(make_settings(step_base_seconds=0.05)) as slow:
        router.push(
            {MODEL: {"route": {"timeouts": {"totalSeconds": 0.5}}, "endpoints": [address(slow)]}}
        )
        c = openai.OpenAI(base_url=router.base_url + "/v1", api_key="x", max_retries=0)
        stream = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=400, stream=True
        )
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass


class PiecemealEngine(ServerThread):
    """An engine whose chat stream reaches the router a few bytes at a time."""

    name = "piecemeal-engine"
    piece = 5

    async def start_server(self) -> tuple[Any, int]:
        async def chat(request: web.Request) -> web.StreamResponse:
            events = [
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": w}}]}
                for w in ("one ", "two ", "three")
            ]
            events.append({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}})
            body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            raw = body.encode()
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for at in range(0, len(raw), self.piece):
                await resp.write(raw[at : at + self.piece])
                await asyncio.sleep(0.002)  # one read each, not one coalesced read
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return await serve_app(app, "127.0.0.1", 0, shutdown_grace_seconds=0.5)


def test_a_usage_event_split_over_many_reads_is_still_counted(router):
    # A proxy or a slow network can cut the engine's last event into any number of reads, and
    # the client hangs up at [DONE], before the engine's end of stream reaches the router (its
    # handler is cancelled then). The tokens are what limits and budgets charge: counted anyway.
    with PiecemealEngine() as engine:
        assert router.push({MODEL: [f"127.0.0.1:{engine.port}"]}).status_code == 200
        c = openai.OpenAI(base_url=router.base_url + "/v1", api_key="x", max_retries=0)
        chunks = list(
            c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == (
            "one two three"
        )
        wait_for(
            lambda: router.metric("inferscale_router_completion_tokens_total", model=MODEL) >= 3
        )
    assert router.metric("inferscale_router_completion_tokens_total", model=MODEL) == 3
    assert router.metric("inferscale_router_prompt_tokens_total", model=MODEL) == 4


async def test_a_router_that_cannot_start_closes_what_it_opened():
    """A taken port fails the start, and the upstream session its startup opened is closed."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await start(RouterSettings(host="127.0.0.1", port=port))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]


class CookieEngine(ServerThread):
    """An engine that sets a cookie on every answer and records the Cookie headers it gets."""

    name = "cookie-engine"

    def __init__(self) -> None:
        super().__init__()
        self.cookies: list[str | None] = []

    async def start_server(self) -> tuple[Any, int]:
        async def chat(request: web.Request) -> web.Response:
            self.cookies.append(request.headers.get("Cookie"))
            answer = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            }
            resp = web.json_response(answer)
            resp.set_cookie("session", "client-a-secret")
            return resp

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return await serve_app(app, "127.0.0.1", 0, shutdown_grace_seconds=0.5)


def test_a_cookie_an_upstream_sets_never_reaches_another_clients_request(router):
    # By name, as a hosted provider is: aiohttp's default jar ignores cookies from IP addresses.
    with CookieEngine() as engine:
        assert router.push({MODEL: [f"localhost:{engine.port}"]}).status_code == 200
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            r = httpx.post(router.base_url + "/v1/chat/completions", json=body, timeout=10)
            assert r.status_code == 200
        assert engine.cookies == [None, None, None]
