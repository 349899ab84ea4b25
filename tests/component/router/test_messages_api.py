"""Anthropic's Messages API through the router, driven by the official ``anthropic`` SDK.

The router translates ``POST /v1/messages`` into the chat completions its engines serve and the
answers back: a real router in front of real sims (self-hosted), and in front of the mock
OpenAI and Anthropic providers (hosted; the Anthropic mock answers tool calls, so tools are
checked end to end, streaming too). Bad input gets Anthropic's error shape with its status,
never a 500; client keys work as ``x-api-key`` and as ``Authorization: Bearer``; limits and
token accounting apply as they do to OpenAI requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from inferscale.protocol.credentials import key_digest
from tests.component.router.conftest import MODEL, TOKEN, RunningRouter, address
from tests.component.router.mock_providers import KEY, MockAnthropic, MockOpenAI

CLAUDE_ID = "team/claude"
OPENAI_ID = "team/openai"
CLIENT_KEY = "key-messages-0123456789abcdef"
LIMITED_KEY = "key-messages-rpm-0123456789ab"
WEATHER = {
    "name": "get_weather",
    "description": "The weather at a place.",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}

_OPEN: list[anthropic.Anthropic] = []


def sdk(router: RunningRouter, key: str = "unused", **kw: Any) -> anthropic.Anthropic:
    """An SDK client without retries (closed after the test)."""
    client = anthropic.Anthropic(
        base_url=router.base_url,
        api_key=key,
        max_retries=0,
        timeout=30,
        **kw,
    )
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture
def routed(router: RunningRouter, sims) -> RunningRouter:
    assert router.push({MODEL: [address(s) for s in sims]}).status_code == 200
    return router


def counted(router: RunningRouter, metric: str, at_least: float) -> float:
    """The metric once it reaches ``at_least`` (a stream is counted as it ends: poll, 10 s)."""
    value = 0.0
    for _ in range(200):
        value = router.metric(metric, model=MODEL)
        if value >= at_least:
            break
        time.sleep(0.05)
    return value


# -- self-hosted: the sim -------------------------------------------------------------------


def test_a_message_with_a_system_prompt_and_several_turns(routed):
    out = sdk(routed).messages.create(
        model=MODEL,
        max_tokens=5,
        system="Be brief.",
        messages=[
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
            {"role": "user", "content": [{"type": "text", "text": "more"}]},
        ],
    )
    assert out.type == "message" and out.role == "assistant" and out.model == MODEL
    assert out.id.startswith("msg_")
    assert out.content[0].type == "text" and out.content[0].text
    assert out.stop_reason == "max_tokens"
    assert out.usage.output_tokens == 5 and out.usage.input_tokens > 0
    assert counted(routed, "inferscale_router_completion_tokens_total", 5) >= 5


def test_a_stream_has_anthropic_events_and_usage(routed):
    with sdk(routed).messages.stream(
        model=MODEL, max_tokens=6, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert kinds.count("content_block_start") == 1 and kinds.count("text") == 6
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 6 and final.usage.input_tokens > 0
    assert final.content[0].type == "text" and final.content[0].text
    assert counted(routed, "inferscale_router_completion_tokens_total", 6) >= 6


def test_the_raw_stream_is_server_sent_events_with_event_names(routed):
    body = {
        "model": MODEL,
        "max_tokens": 2,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    resp = httpx.post(routed.base_url + "/v1/messages", json=body, timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    names = [line[7:] for line in resp.text.splitlines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "[DONE]" not in resp.text


async def test_the_async_client_streams_too(routed):
    client = anthropic.AsyncAnthropic(base_url=routed.base_url, api_key="x", max_retries=0)
    try:
        stream = await client.messages.create(
            model=MODEL, max_tokens=3, stream=True, messages=[{"role": "user", "content": "x"}]
        )
        deltas = [e async for e in stream if e.type == "content_block_delta"]
        assert len(deltas) == 3
    finally:
        await client.close()


def test_models_in_anthropic_shape_for_the_anthropic_sdk(routed):
    client = sdk(routed)
    assert [m.id for m in client.models.list()] == [MODEL]
    model = client.models.retrieve(MODEL)
    assert (model.id, model.type) == (MODEL, "model")
    with pytest.raises(anthropic.NotFoundError) as error:
        client.models.retrieve("no-such-model")
    assert error.value.body["error"]["type"] == "not_found_error"


def test_a_held_stream_pings_then_streams_when_a_replica_arrives(router, sims):
    """A model at zero: the Messages stream is held with ping events, then answered."""
    assert router.push({MODEL: {"route": {"holdQueue": {"maxWaitSeconds": 30}}}}).status_code == 200
    events: list[str] = []

    def call() -> None:
        with sdk(router).messages.stream(
            model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            events.extend(event.type for event in stream)
            events.append(stream.get_final_message().stop_reason or "")

    thread = threading.Thread(target=call)
    thread.start()
    for _ in range(400):  # bounded: 20 s
        if router.router is not None and router.router.held.get(MODEL) == 1:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # a few keep-alive intervals (0.2 s): pings
    assert router.push({MODEL: [address(sims[0])]}).status_code == 200
    thread.join(20)
    assert events[0] == "message_start" and events[-2:] == ["message_stop", "max_tokens"]
    assert events.count("text") == 3


# -- errors: Anthropic's shape and status, never a 500 ------------------------------------------


def raw(router: RunningRouter, body: object, **headers: str) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        router.base_url + "/v1/messages",
        content=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )


USER = [{"role": "user", "content": "x"}]


def request(**fields: object) -> dict[str, object]:
    """A valid request with ``fields`` changed (``None`` removes one)."""
    body = {"model": MODEL, "max_tokens": 5, "messages": USER, **fields}
    return {k: v for k, v in body.items() if v is not None}


BAD = "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "status", "kind", "says"),
    [
        (request(max_tokens=None), 400, BAD, "max_tokens"),
        (request(max_tokens=0), 400, BAD, "max_tokens"),
        (request(messages=[]), 400, BAD, "messages"),
        (request(messages=[{"role": "system", "content": "x"}]), 400, BAD, "role"),
        (request(messages=[{"role": "user", "content": 7}]), 400, BAD, "content"),
        (request(messages=[{"role": "user", "content": [{"type": "audio"}]}]), 400, BAD, "audio"),
        (request(messages=[{"role": "user", "content": [{"type": "text"}]}]), 400, BAD, "text"),
        (request(stream="yes"), 400, BAD, "stream"),
        (request(tools=[{"name": "t"}]), 400, BAD, "input_schema"),
        (request(system=5), 400, BAD, "system"),
        (request(model=None), 400, BAD, "model"),
        (request(model="no-such-model"), 404, "not_found_error", "no-such-model"),
        (b"{not json", 400, BAD, "JSON"),
        ([1, 2], 400, BAD, "object"),
    ],
)
def test_bad_input_is_an_anthropic_error(routed, body, status, kind, says):
    resp = raw(routed, body)
    assert resp.status_code == status
    doc = resp.json()
    assert doc["type"] == "error" and doc["error"]["type"] == kind
    assert says in doc["error"]["message"]


def test_the_sdk_raises_its_own_errors(routed):
    with pytest.raises(anthropic.NotFoundError):
        sdk(routed).messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.BadRequestError) as error:
        sdk(routed).messages.create(
            model=MODEL,
            max_tokens=5,
            messages=[{"role": "user", "content": [{"type": "video"}]}],
        )
    assert error.value.status_code == 400


def test_an_oversized_body_is_413_request_too_large(sims):
    with RunningRouter(max_request_bytes=2048) as router:
        assert router.push({MODEL: [address(sims[0])]}).status_code == 200
        body = {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x" * 4096}],
        }
        resp = raw(router, body)
    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "request_too_large"


# -- client keys and limits ---------------------------------------------------------------------


@pytest.fixture
def keyed(sims) -> Iterator[RunningRouter]:
    with RunningRouter() as router:
        assert router.push({MODEL: [address(sims[0])]}).status_code == 200
        keys = [
            {"digest": key_digest(CLIENT_KEY), "client": "team/messages"},
            {
                "digest": key_digest(LIMITED_KEY),
                "client": "team/limited",
                "limits": {"requestsPerMinute": 1},
            },
        ]
        resp = httpx.put(
            router.base_url + "/admin/v1/credentials",
            json={"version": 1, "clientKeys": keys, "requireClientKey": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        yield router


def test_the_key_is_accepted_as_x_api_key_and_as_a_bearer_token(keyed):
    message = [{"role": "user", "content": "x"}]
    out = sdk(keyed, CLIENT_KEY).messages.create(model=MODEL, max_tokens=2, messages=message)
    assert out.usage.output_tokens == 2
    bearer = anthropic.Anthropic(
        base_url=keyed.base_url, auth_token=CLIENT_KEY, max_retries=0, timeout=30
    )
    _OPEN.append(bearer)
    assert bearer.messages.create(model=MODEL, max_tokens=2, messages=message).content
    assert any('"client":"team/messages"' in line for line in keyed.lines)
    with pytest.raises(anthropic.AuthenticationError) as error:
        sdk(keyed, "wrong-0123456789abcdef").messages.create(
            model=MODEL, max_tokens=2, messages=message
        )
    assert error.value.status_code == 401
    assert error.value.body["error"]["type"] == "authentication_error"
    resp = raw(keyed, {"model": MODEL, "max_tokens": 2, "messages": message})
    assert resp.status_code == 401 and resp.json()["type"] == "error"
    # Models: the key's own, by either SDK; the wrong key is refused in Anthropic's shape.
    assert [m.id for m in sdk(keyed, CLIENT_KEY).models.list()] == [MODEL]
    with pytest.raises(anthropic.AuthenticationError):
        sdk(keyed, "wrong-0123456789abcdef").models.retrieve(MODEL)


def test_a_limited_key_gets_429_rate_limit_error_with_retry_after(keyed):
    client = sdk(keyed, LIMITED_KEY)
    message = [{"role": "user", "content": "x"}]
    client.messages.create(model=MODEL, max_tokens=1, messages=message)
    with pytest.raises(anthropic.RateLimitError) as error:
        client.messages.create(model=MODEL, max_tokens=1, messages=message)
    assert error.value.status_code == 429
    assert error.value.body["error"]["type"] == "rate_limit_error"
    assert int(error.value.response.headers["retry-after"]) >= 1


# -- hosted providers: tools end to end --------------------------------------------------------


@pytest.fixture(scope="module")
def mock_anthropic() -> Iterator[MockAnthropic]:
    with MockAnthropic() as mock:
        yield mock


@pytest.fixture(scope="module")
def mock_openai() -> Iterator[MockOpenAI]:
    with MockOpenAI() as mock:
        yield mock


@pytest.fixture
def hosted(router, mock_anthropic, mock_openai) -> RunningRouter:
    mock_anthropic.requests.clear()
    mock_openai.requests.clear()
    router.set_provider_keys({CLAUDE_ID: KEY, OPENAI_ID: KEY})
    providers = {
        CLAUDE_ID: {
            "type": "anthropic",
            "baseURL": mock_anthropic.base_url,
            "timeoutSeconds": 5,
            "models": {"sonnet": {"providerModel": "claude-sonnet-4-5"}},
        },
        OPENAI_ID: {
            "type": "openai-compatible",
            "baseURL": mock_openai.base_url + "/v1",
            "timeoutSeconds": 5,
            "models": {"mini": {"providerModel": "gpt-4o-mini"}},
        },
    }

    def route(provider: str, model: str) -> dict[str, Any]:
        backend = {"role": "primary", "model": model, "provider": provider}
        return {"routeId": "team/chat", "servesLocally": False, "weight": 0, "backends": [backend]}

    table = {"claude": route(CLAUDE_ID, "sonnet"), "gpt": route(OPENAI_ID, "mini")}
    assert router.push(table, providers=providers).status_code == 200
    return router


def test_tools_round_trip_through_an_anthropic_provider(hosted, mock_anthropic):
    out = sdk(hosted).messages.create(
        model="claude",
        max_tokens=50,
        tools=[WEATHER],
        tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": "weather in SF?"}],
    )
    assert out.stop_reason == "tool_use"
    text, call = out.content
    assert text.type == "text" and text.text == "claude:weather in SF?"
    assert call.type == "tool_use" and call.name == "get_weather"
    assert call.input == {"location": "San Francisco, CA"}
    # The tool's result goes back as a tool_result block: the provider sees the whole exchange.
    again = sdk(hosted).messages.create(
        model="claude",
        max_tokens=50,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather in SF?"},
            {"role": "assistant", "content": [c.model_dump() for c in out.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
    )
    assert again.content[0].type == "text"
    sent = mock_anthropic.requests[-1]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    blocks = sent["messages"][1]["content"] + sent["messages"][2]["content"]
    kinds = [b["type"] for b in blocks]
    assert "tool_use" in kinds and "tool_result" in kinds
    assert sent["tools"][0]["name"] == "get_weather"


def test_a_tool_call_streams_as_input_json_deltas(hosted):
    with sdk(hosted).messages.stream(
        model="claude",
        max_tokens=50,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert any(e.type == "input_json" for e in events)
    assert final.stop_reason == "tool_use"
    call = [b for b in final.content if b.type == "tool_use"][0]
    assert call.name == "get_weather" and call.input == {"location": "San Francisco, CA"}
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_an_openai_provider_answers_in_anthropic_shape(hosted, mock_openai):
    out = sdk(hosted).messages.create(
        model="gpt",
        max_tokens=20,
        stop_sequences=["END"],
        messages=[{"role": "user", "content": "hello"}],
    )
    assert out.content[0].text == "mock:hello"
    assert out.stop_reason == "end_turn" and out.usage.input_tokens == 9
    assert mock_openai.requests[-1]["stop"] == ["END"]
    with sdk(hosted).messages.stream(
        model="gpt", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert "".join(stream.text_stream) == "mock:hi"


def test_a_provider_error_keeps_its_status_in_anthropic_shape(hosted, mock_anthropic):
    mock_anthropic.fault, mock_anthropic.fault_times = "429", 1
    try:
        with pytest.raises(anthropic.RateLimitError) as error:
            sdk(hosted).messages.create(
                model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    finally:
        mock_anthropic.fault, mock_anthropic.fault_times = None, None
    assert error.value.body["type"] == "error"
