"""OpenAI chat <-> Anthropic Messages: requests, responses, streams and errors (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inferscale.router.anthropic import (
    DEFAULT_MAX_TOKENS,
    MalformedResponse,
    StreamTranslator,
    TranslationError,
    chat_to_messages,
    chat_usage,
    error_to_openai,
    finish_reason,
    messages_to_chat,
)
from inferscale.router.sse import SseDecoder

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "providers"
MODEL = "claude-sonnet-4-5"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def events(name: str) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in SseDecoder().feed((FIXTURES / name).read_bytes())]


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return chat_to_messages({"model": "claude", **body}, MODEL)


# -- requests ------------------------------------------------------------------------------


def test_minimal_request_gets_the_provider_model_and_a_default_max_tokens():
    assert translate() == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


def test_system_and_developer_messages_become_the_system_prompt():
    out = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "hi"},
        ]
    )
    assert out["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Use French."},
    ]
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_a_conversation_with_tool_calls_and_results():
    out = translate(
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "25C"}],
            },
            {"role": "user", "content": "Thanks, which is warmer?"},
        ]
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
            ],
        },
        {
            # Tool results and the next user text merge into one user turn, results first.
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "25C"},
                {"type": "text", "text": "Thanks, which is warmer?"},
            ],
        },
    ]


def test_assistant_tool_call_without_text():
    out = translate(
        messages=[
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
                ],
            },
        ]
    )
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c", "name": "f", "input": {}}
    ]


def test_image_parts_data_and_https():
    out = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ],
            }
        ]
    )
    assert out["messages"][0]["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
    ]


def test_sampling_stop_user_and_max_tokens():
    out = translate(
        temperature=1.7,
        top_p=0.9,
        stop="END",
        max_tokens=50,
        user="u-1",
        stream=True,
        seed=4,
        presence_penalty=1,
    )
    assert out["temperature"] == 1.0  # clamped into Anthropic's range
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["max_tokens"] == 50
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["stream"] is True
    assert "seed" not in out and "presence_penalty" not in out
    assert translate(max_completion_tokens=7, max_tokens=50)["max_tokens"] == 7
    assert translate(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in translate(stop=[])


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "noargs"}},
]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            None,
            {"type": "tool", "name": "weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
    ],
)
def test_tools_and_tool_choice(choice, parallel, expected):
    body: dict[str, Any] = {"tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    out = translate(**body)
    assert out["tools"] == [
        {
            "name": "weather",
            "description": "Current weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "noargs", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert out.get("tool_choice") == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "system", "content": "only system"}]}, "messages"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages"),
        ({"messages": [{"role": "function", "content": "x", "name": "f"}]}, "messages"),
        ({"messages": ["junk"]}, "messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ]
            },
            "messages",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "function": {"name": "f", "arguments": "{not json"}}
                        ],
                    },
                ]
            },
            "messages",
        ),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop": 5}, "stop"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_requests_the_messages_api_cannot_take_are_refused_clearly(body, param):
    with pytest.raises(TranslationError) as caught:
        translate(**body)
    assert caught.value.param == param
    assert caught.value.message


def test_the_client_body_is_not_modified():
    body = {"model": "c", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    before = json.dumps(body, sort_keys=True)
    chat_to_messages(body, MODEL)
    assert json.dumps(body, sort_keys=True) == before


# -- responses -----------------------------------------------------------------------------


def test_text_response_recorded_shape():
    out = messages_to_chat(fixture("anthropic-message.json"), created=1700000000)
    assert out == {
        "id": "chatcmpl-msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi! My name is Claude.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
    }


def test_tool_use_response_recorded_shape():
    out = messages_to_chat(fixture("anthropic-tool-use.json"), created=1)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert (
        choice["message"]["content"] == "I'll check the current weather in San Francisco for you."
    )
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "celsius",
    }


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_finish_reasons(stop, finish):
    assert finish_reason(stop) == finish


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens():
    assert chat_usage(
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 100,
            "output_tokens": 7,
        }
    ) == {"prompt_tokens": 115, "completion_tokens": 7, "total_tokens": 122}
    assert chat_usage(None) is None
    assert chat_usage({"input_tokens": "x", "output_tokens": True}) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }


@pytest.mark.parametrize(
    "doc",
    [None, [], {"type": "error"}, {"type": "message"}, {"type": "message", "content": ["x"]}],
)
def test_malformed_responses(doc):
    with pytest.raises(MalformedResponse):
        messages_to_chat(doc, created=0)


@pytest.mark.parametrize(
    ("status", "body", "out_status", "kind", "message"),
    [
        (
            529,
            (FIXTURES / "anthropic-error.json").read_bytes(),
            503,
            "overloaded_error",
            "Overloaded",
        ),
        (
            429,
            b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}',
            429,
            "rate_limit_error",
            "slow down",
        ),
        (400, b"not json", 400, "invalid_request_error", "the provider answered HTTP 400"),
        (502, b"<html>bad gateway</html>", 502, "server_error", "the provider answered HTTP 502"),
    ],
)
def test_errors_become_openai_errors(status, body, out_status, kind, message):
    got_status, doc = error_to_openai(status, body)
    assert got_status == out_status
    assert doc == {"error": {"message": message, "type": kind, "param": None, "code": None}}


# -- streams -------------------------------------------------------------------------------


def run_stream(name: str, include_usage: bool) -> tuple[StreamTranslator, list[Any]]:
    translator = StreamTranslator(created=5, include_usage=include_usage)
    out: list[Any] = []
    for event in events(name):
        for chunk in translator.feed(event):
            assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")
            payload = chunk[6:-2]
            out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return translator, out


def test_text_stream_recorded_shape():
    translator, chunks = run_stream("anthropic-stream.sse", include_usage=True)
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert {c["object"] for c in body} == {"chat.completion.chunk"}
    assert {c["id"] for c in body} == {"chatcmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body if c["choices"])
    assert text == "Hello!"
    finishes = [c["choices"][0]["finish_reason"] for c in body if c["choices"]]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert body[-1]["choices"] == []
    assert body[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}
    assert translator.finished and translator.usage == body[-1]["usage"]


def test_no_usage_chunk_unless_asked_but_usage_is_known():
    translator, chunks = run_stream("anthropic-stream.sse", include_usage=False)
    assert all(c == "[DONE]" or c["choices"] for c in chunks)
    assert all(c == "[DONE]" or "usage" not in c for c in chunks)
    assert translator.usage == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_tool_stream_recorded_shape():
    _, chunks = run_stream("anthropic-stream-tools.sse", include_usage=False)
    body = [c for c in chunks if c != "[DONE]"]
    calls: dict[int, dict[str, Any]] = {}
    for chunk in body:
        for delta in chunk["choices"][0]["delta"].get("tool_calls") or []:
            call = calls.setdefault(delta["index"], {"id": None, "name": None, "arguments": ""})
            call["id"] = delta.get("id") or call["id"]
            call["name"] = (delta.get("function") or {}).get("name") or call["name"]
            call["arguments"] += (delta.get("function") or {}).get("arguments") or ""
    # The tool_use block is content block 1 but the first tool call: index 0.
    assert calls == {
        0: {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "arguments": '{"location": "San Francisco, CA"}',
        }
    }
    assert body[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_an_error_event_becomes_an_openai_error_event():
    translator = StreamTranslator(created=0, include_usage=False)
    translator.feed(events("anthropic-stream.sse")[0])
    (chunk,) = translator.feed(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    doc = json.loads(chunk[6:])
    assert doc["error"]["type"] == "overloaded_error" and doc["error"]["message"] == "Overloaded"
    assert translator.failed is not None and not translator.finished


@pytest.mark.parametrize(
    "bad",
    [
        "junk",
        {"no": "type"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}},
    ],
)
def test_malformed_or_out_of_order_events(bad):
    with pytest.raises(MalformedResponse):
        StreamTranslator(created=0, include_usage=False).feed(bad)


def test_unknown_events_and_deltas_are_skipped():
    translator = StreamTranslator(created=0, include_usage=False)
    translator.feed(events("anthropic-stream.sse")[0])
    assert translator.feed({"type": "brand_new_event"}) == []
    assert (
        translator.feed(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hm"},
            }
        )
        == []
    )
    with pytest.raises(MalformedResponse):
        translator.feed(
            {
                "type": "content_block_delta",
                "index": 3,
                "delta": {"type": "input_json_delta", "partial_json": "{"},
            }
        )


def test_message_stop_without_a_stop_reason_still_finishes():
    translator = StreamTranslator(created=0, include_usage=False)
    translator.feed(events("anthropic-stream.sse")[0])
    out = translator.feed({"type": "message_stop"})
    assert json.loads(out[0][6:])["choices"][0]["finish_reason"] == "stop"
    assert out[-1] == b"data: [DONE]\n\n"
