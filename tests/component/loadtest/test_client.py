"""One request, measured: SSE edge cases a router or engine produces, against a scripted server."""

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from inferscale.loadtest.client import (
    Target,
    Unreachable,
    auth_headers,
    normalise_url,
    preflight,
    request_body,
    send,
)

SEEN: dict = {}


def event(doc) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def chunk(text):
    return event({"choices": [{"index": 0, "delta": {"content": text}}]})


USAGE = event({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}})


async def scripted(request: web.Request) -> web.StreamResponse:
    SEEN["auth"] = request.headers.get("Authorization")
    SEEN["body"] = await request.json()
    script = request.match_info["script"]
    if script == "status":
        return web.json_response({"error": {"message": "busy"}}, status=429)
    if script == "plain":
        return web.json_response(
            {"choices": [{"text": "ab"}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
        )
    if script == "not-json":
        return web.Response(text="<html>")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if script == "held":
        # A router holding the request for a cold model: headers and keep-alives first.
        for _ in range(3):
            await response.write(b": keep-alive\n\n")
            await asyncio.sleep(0.1)
        await response.write(event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}))
        await response.write(chunk("a") + chunk("b") + USAGE + b"data: [DONE]\n\n")
    elif script == "reasoning":
        await response.write(
            event({"choices": [{"delta": {"reasoning_content": "hmm"}}]})
            + chunk("x")
            + b"data: [DONE]\n\n"
        )
    elif script == "error-event":
        err = {"message": "no replica", "type": "service_unavailable", "code": "model_unavailable"}
        await response.write(b": keep-alive\n\n" + event({"error": err}))
    elif script == "cut":
        await response.write(chunk("a"))
    elif script == "garbage":
        await response.write(b"data: {not json\n\n")
    return response


async def models(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Authorization") != "Bearer good":
        return web.json_response({"error": {}}, status=401)
    return web.json_response({"object": "list", "data": [{"id": "m1"}, {"id": "m2"}]})


async def status_only(request: web.Request) -> web.StreamResponse:
    return web.Response(status={"broken": 502, "none": 404}[request.match_info["status"]])


@pytest.fixture
async def server():
    app = web.Application()
    app.router.add_post("/{script}/v1/chat/completions", scripted)
    app.router.add_post("/{script}/v1/completions", scripted)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/{status}/v1/models", status_only)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def one(server, script, **kw):
    session, base = server
    target = Target(base_url=f"{base}/{script}", model="m", **kw)
    loop = asyncio.get_running_loop()
    return await send(session, target, "hello", 2, 99, loop.time)


async def test_ttft_is_the_first_token_not_the_headers_or_keepalives(server):
    outcome = await one(server, "held", headers=auth_headers("sk-1"))
    assert outcome.ok and outcome.ttft >= 0.3 and outcome.latency >= outcome.ttft
    assert (outcome.prompt_tokens, outcome.output_tokens) == (11, 2)
    assert SEEN["auth"] == "Bearer sk-1"
    assert SEEN["body"]["stream"] is True and SEEN["body"]["stream_options"]["include_usage"]


async def test_reasoning_counts_as_the_first_token_and_chunks_stand_in_for_usage(server):
    outcome = await one(server, "reasoning")
    assert outcome.ok and outcome.ttft is not None
    assert (outcome.prompt_tokens, outcome.output_tokens) == (99, 2)  # estimate; chunk count


@pytest.mark.parametrize(
    ("script", "kind"),
    [
        ("status", "http 429"),
        ("error-event", "stream error: model_unavailable"),
        ("cut", "incomplete stream"),
        ("garbage", "bad response"),
    ],
)
async def test_failures_have_a_kind(server, script, kind):
    outcome = await one(server, script)
    assert not outcome.ok and outcome.error == kind


async def test_non_streaming(server):
    outcome = await one(server, "plain", stream=False, api="completions")
    assert outcome.ok and outcome.ttft is None and outcome.output_tokens == 2
    assert SEEN["body"] == {"model": "m", "max_tokens": 2, "prompt": "hello"}
    bad = await one(server, "not-json", stream=False)
    assert bad.error == "bad response"


async def test_a_timeout_is_a_kind_too(server):
    outcome = await one(server, "held", timeout=0.15)
    assert outcome.error == "timeout" and outcome.latency < 1


async def test_preflight(server):
    session, base = server
    assert await preflight(session, base, auth_headers("good"), 2) == ["m1", "m2"]
    assert await preflight(session, base + "/none", {}, 2) is None
    with pytest.raises(Unreachable, match="refused the API key .HTTP 401."):
        await preflight(session, base, auth_headers("bad"), 2)
    with pytest.raises(Unreachable, match="answered HTTP 502"):
        await preflight(session, base + "/broken", {}, 2)


def test_request_body_and_urls():
    target = Target("http://x", "m", api="chat", stream=False, ignore_eos=True)
    assert request_body(target, "hi", 3) == {
        "model": "m",
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "hi"}],
        "ignore_eos": True,
    }
    assert normalise_url(" https://h:1/v1/ ") == "https://h:1"
    assert normalise_url("http://h/prefix") == "http://h/prefix"
    for bad in ("h:1", "ftp://h", "http://h/?q=1"):
        with pytest.raises(ValueError):
            normalise_url(bad)
    assert auth_headers(None) == {}
