"""One conformance table over every provider type: a real router, each provider's wire protocol
mocked on loopback, the official ``openai`` SDK as the client.

Each row is a provider type (Azure OpenAI with an api-key and with an Entra token, Gemini,
Vertex AI, Cohere, Bedrock (signed, its binary event stream), and the OpenAI and Anthropic
types for comparison). Every row must: answer
JSON and streams in OpenAI's shape, carry tool calls both ways, count usage, map the provider's
refusal to OpenAI's error shape, retry a 429 on the provider's next key, and fail over a 5xx to
the route's fallback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.component.router.conftest import RunningRouter
from tests.component.router.mock_dialects import MockAzure, MockBedrock, MockCohere, MockGemini
from tests.component.router.mock_providers import KEY, MockAnthropic, MockOpenAI, MockProvider

KEY2 = "sk-second-provider-key-0123456789"
AWS_KEYS = ("AKIDFIRST:first-secret-access-key", "AKIDSECOND:second-secret-access-key")
FALLBACK = "team/fallback"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@dataclass
class Row:
    mock: MockProvider
    provider: dict[str, Any]
    prefix: str
    """What the mock's answers start with."""
    tool_args: dict[str, Any] | None
    """The arguments of the recorded tool call (None: OpenAI's API, passed through)."""
    keys: tuple[str, str] = (KEY, KEY2)


def rows(mocks: dict[str, MockProvider]) -> dict[str, Row]:
    def url(name: str) -> str:
        return mocks[name].base_url

    return {
        "openai": Row(
            mocks["openai"],
            {"type": "openai-compatible", "baseURL": url("openai") + "/v1"},
            "mock",
            None,
        ),
        "anthropic": Row(
            mocks["anthropic"],
            {"type": "anthropic", "baseURL": url("anthropic")},
            "claude",
            {"location": "San Francisco, CA"},
        ),
        "azure-openai": Row(
            mocks["azure"],
            {
                "type": "azure-openai",
                "baseURL": url("azure"),
                "azure": {"apiVersion": "2024-10-21"},
            },
            "mock",
            None,
        ),
        "azure-openai-entra": Row(
            mocks["azure-entra"],
            {"type": "azure-openai", "baseURL": url("azure-entra"), "azure": {"auth": "entra"}},
            "mock",
            None,
        ),
        "gemini": Row(
            mocks["gemini"],
            {"type": "gemini", "baseURL": url("gemini")},
            "gemini",
            {"city": "Paris"},
        ),
        "vertex-ai": Row(
            mocks["vertex"],
            {
                "type": "vertex-ai",
                "baseURL": url("vertex"),
                "vertex": {"project": "my-project", "location": "europe-west4"},
            },
            "gemini",
            {"city": "Paris"},
        ),
        "cohere": Row(
            mocks["cohere"],
            {"type": "cohere", "baseURL": url("cohere")},
            "cohere",
            {"city": "Paris"},
        ),
        "bedrock": Row(
            mocks["bedrock"],
            {"type": "bedrock", "baseURL": url("bedrock"), "bedrock": {"region": "eu-west-1"}},
            "bedrock",
            {"city": "Paris"},
            AWS_KEYS,
        ),
    }


ROWS = [
    "openai",
    "anthropic",
    "azure-openai",
    "azure-openai-entra",
    "gemini",
    "vertex-ai",
    "cohere",
    "bedrock",
]


@pytest.fixture(scope="module")
def table() -> Iterator[dict[str, Row]]:
    with ExitStack() as stack:
        mocks: dict[str, MockProvider] = {
            "openai": MockOpenAI(),
            "anthropic": MockAnthropic(),
            "azure": MockAzure(),
            "azure-entra": MockAzure(entra=True),
            "gemini": MockGemini(),
            "vertex": MockGemini(vertex=True),
            "cohere": MockCohere(),
            "bedrock": MockBedrock(),
            "fallback": MockOpenAI(),
        }
        for mock in mocks.values():
            stack.enter_context(mock)
        found = rows(mocks)
        found["_fallback"] = Row(mocks["fallback"], {}, "mock", None)
        yield found


@pytest.fixture(autouse=True)
def reset(table):
    for row in table.values():
        mock = row.mock
        mock.fault, mock.fault_times = None, None
        mock.keys = set(row.keys)
        mock.rate_limited = {}
        mock.requests.clear()
        mock.headers.clear()


@pytest.fixture
def wired(router: RunningRouter, table) -> RunningRouter:
    key_sets = {
        f"team/{name}": [
            {"id": "keys/a", "key": table[name].keys[0]},
            {"id": "keys/b", "key": table[name].keys[1]},
        ]
        for name in ROWS
    }
    router.set_provider_keys({FALLBACK: KEY}, key_sets)
    providers = {
        f"team/{name}": {
            **table[name].provider,
            "timeoutSeconds": 5,
            "models": {"m": {"providerModel": f"{name}-model"}},
        }
        for name in ROWS
    }
    providers[FALLBACK] = {
        "type": "openai",
        "baseURL": table["_fallback"].mock.base_url + "/v1",
        "models": {"m": {"providerModel": "fallback-model"}},
    }
    hosted = {"routeId": "team/chat", "servesLocally": False, "weight": 0, "route": {}}
    models: dict[str, Any] = {}
    for name in ROWS:
        primary = {"role": "primary", "provider": f"team/{name}", "model": "m"}
        models[name] = {**hosted, "backends": [primary]}
        fallback = {"role": "fallback", "provider": FALLBACK, "model": "m"}
        models[f"{name}-fb"] = {**hosted, "backends": [primary, fallback]}
    assert wired_push(router, models, providers) == 200
    return router


def wired_push(router: RunningRouter, models: dict[str, Any], providers: dict[str, Any]) -> int:
    resp = router.push(models, providers=providers)
    assert resp.status_code == 200, resp.text
    return resp.status_code


def client(router: RunningRouter) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.base_url + "/v1", api_key="unused", max_retries=0, timeout=20
    )


@pytest.mark.parametrize("name", ROWS)
def test_json(wired, table, name):
    row = table[name]
    with client(wired) as c:
        out = c.chat.completions.create(
            model=name, messages=MESSAGES, max_tokens=50, temperature=0.5
        )
    assert out.object == "chat.completion"
    assert out.choices[0].message.content == f"{row.prefix}:hello"
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0
    assert (
        wired.metric("inferscale_router_prompt_tokens_total", model=name) == out.usage.prompt_tokens
    )
    assert wired.metric("inferscale_router_completion_tokens_total", model=name) == (
        out.usage.completion_tokens
    )


@pytest.mark.parametrize("name", ROWS)
def test_stream(wired, table, name):
    row = table[name]
    with client(wired) as c:
        chunks = list(
            c.chat.completions.create(
                model=name, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == f"{row.prefix}:hello"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert wired.metric("inferscale_router_completion_tokens_total", model=name) == (
        chunks[-1].usage.completion_tokens
    )


def _tool_calls_of_stream(chunks: list[Any]) -> tuple[str, str, str | None]:
    name, arguments, finish = "", "", None
    for ch in chunks:
        if not ch.choices:
            continue
        for call in ch.choices[0].delta.tool_calls or []:
            name += call.function.name or "" if call.function else ""
            arguments += call.function.arguments or "" if call.function else ""
        finish = ch.choices[0].finish_reason or finish
    return name, arguments, finish


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", ROWS)
def test_tools(wired, table, name, stream):
    row = table[name]
    with client(wired) as c:
        if stream:
            chunks = list(
                c.chat.completions.create(model=name, messages=MESSAGES, tools=TOOLS, stream=True)
            )
            if row.tool_args is not None:
                tool, arguments, finish = _tool_calls_of_stream(chunks)
        else:
            out = c.chat.completions.create(model=name, messages=MESSAGES, tools=TOOLS)
            if row.tool_args is not None:
                (call,) = out.choices[0].message.tool_calls or []
                tool, arguments = call.function.name, call.function.arguments
                finish = out.choices[0].finish_reason
    sent = row.mock.requests[-1]
    if row.tool_args is None:  # OpenAI's API: the tools go as they are
        assert sent["tools"] == TOOLS
        return
    assert tool == "get_weather" and json.loads(arguments) == row.tool_args
    assert finish == "tool_calls"
    assert "get_weather" in json.dumps(sent)  # the provider was offered the tool


@pytest.mark.parametrize("name", ROWS)
def test_a_refusal_of_the_request_is_an_openai_error(wired, table, name):
    table[name].mock.fault = "400"
    with client(wired) as c, pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(model=f"{name}-fb", messages=MESSAGES)
    body = caught.value.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert "too long" in body["error"]["message"]
    assert table["_fallback"].mock.count() == 0  # a refusal is not failed over


@pytest.mark.parametrize("name", ROWS)
def test_a_429_is_retried_on_the_next_key(wired, table, name):
    row = table[name]
    row.mock.fault, row.mock.fault_times = "429", 1
    with client(wired) as c:
        out = c.chat.completions.create(model=name, messages=MESSAGES)
    assert out.choices[0].message.content == f"{row.prefix}:hello"
    assert row.mock.count() == 2
    labels = {"provider": f"team/{name}", "outcome": "status_429"}
    assert wired.metric("inferscale_router_provider_key_requests_total", **labels) == 1


@pytest.mark.parametrize("name", ROWS)
def test_a_5xx_fails_over_to_the_fallback(wired, table, name):
    row = table[name]
    row.mock.fault = "500"
    with client(wired) as c:
        out = c.chat.completions.create(model=f"{name}-fb", messages=MESSAGES)
    assert out.choices[0].message.content == "mock:hello"
    assert row.mock.count() == 1 and table["_fallback"].mock.count() == 1
    labels = {"provider": f"team/{name}", "reason": "status_5xx"}
    assert wired.metric("inferscale_router_provider_failures_total", **labels) == 1


def _sent_openai(mock, headers, sent):
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert sent["model"] == "openai-model" and sent["max_tokens"] == 50


def _sent_anthropic(mock, headers, sent):
    assert headers["x-api-key"] == KEY and sent["model"] == "anthropic-model"
    assert sent["system"] == [{"type": "text", "text": "Be brief."}] and sent["max_tokens"] == 50


def _sent_azure(mock, headers, sent):
    assert mock.paths[-1] == "/openai/deployments/azure-openai-model/chat/completions"
    assert mock.queries[-1] == {"api-version": "2024-10-21"}
    assert headers["api-key"] == KEY and "Authorization" not in headers


def _sent_azure_entra(mock, headers, sent):
    assert mock.paths[-1] == "/openai/deployments/azure-openai-entra-model/chat/completions"
    assert headers["Authorization"] == f"Bearer {KEY}" and "api-key" not in headers


def _sent_gemini(mock, headers, sent):
    assert mock.paths[-1] == "/v1beta/models/gemini-model:generateContent"
    assert headers["x-goog-api-key"] == KEY and "Authorization" not in headers
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
    assert sent["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0.5}


def _sent_vertex(mock, headers, sent):
    assert mock.paths[-1] == (
        "/v1/projects/my-project/locations/europe-west4/publishers/google/models/"
        "vertex-ai-model:generateContent"
    )
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert sent["generationConfig"]["maxOutputTokens"] == 50


def _sent_cohere(mock, headers, sent):
    assert mock.paths[-1] == "/v2/chat" and headers["Authorization"] == f"Bearer {KEY}"
    assert sent["model"] == "cohere-model" and sent["max_tokens"] == 50
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
    ]
    assert sent["temperature"] == 0.5


def _sent_bedrock(mock, headers, sent):
    assert mock.paths[-1] == "/model/bedrock-model/converse"
    assert (
        headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFIRST/")
        and "/eu-west-1/bedrock/aws4_request" in headers["Authorization"]
    )
    assert "first-secret-access-key" not in json.dumps(headers)
    assert sent["system"] == [{"text": "Be brief."}]
    assert sent["messages"] == [{"role": "user", "content": [{"text": "hello"}]}]
    assert sent["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.5}


SENT = {
    "bedrock": _sent_bedrock,
    "openai": _sent_openai,
    "anthropic": _sent_anthropic,
    "azure-openai": _sent_azure,
    "azure-openai-entra": _sent_azure_entra,
    "gemini": _sent_gemini,
    "vertex-ai": _sent_vertex,
    "cohere": _sent_cohere,
}


@pytest.mark.parametrize("name", ROWS)
def test_the_request_is_in_the_providers_shape_with_its_auth(wired, table, name):
    mock = table[name].mock
    with client(wired) as c:
        c.chat.completions.create(model=name, messages=MESSAGES, max_tokens=50, temperature=0.5)
    SENT[name](mock, mock.headers[-1], mock.requests[-1])
