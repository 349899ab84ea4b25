"""The Messages API codec (pure): requests to chat completions, answers and streams back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferscale.router.messages import (
    EventTranslator,
    MessagesError,
    chat_to_message,
    error_body,
    messages_to_chat,
)


def events(raw: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for item in raw:
        name_line, data_line = item.decode().strip().split("\n")
        out.append((name_line.removeprefix("event: "), json.loads(data_line[6:])))
    return out


def test_a_request_with_tools_and_tool_results_becomes_openai_messages():
    chat = messages_to_chat(
        {
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "Be brief."}],
            "stream": True,
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_k": 5,
            "metadata": {"user_id": "u1"},
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "text", "text": "let me look"},
                        {"type": "tool_use", "id": "t1", "name": "w", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                        {"type": "text", "text": "and?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AA"},
                        },
                    ],
                },
            ],
        }
    )
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["stop"] == ["END"] and chat["top_k"] == 5 and chat["user"] == "u1"
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object"}
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assistant = chat["messages"][2]
    assert assistant["content"] == "let me look"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"a": 1}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    parts = chat["messages"][4]["content"]
    assert parts[1]["image_url"]["url"] == "data:image/png;base64,AA"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"tools": [{"type": "web_search_20250305", "name": "s"}]}, "server tools"),
        ({"metadata": "x"}, "metadata"),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_result"}]}]},
            "tool_result",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "source"),
        ({"messages": ["hi"]}, "messages.0"),
    ],
)
def test_bad_requests_name_the_field(change, says):
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(MessagesError, match=says):
        messages_to_chat({**body, **change})


def test_a_completion_with_tool_calls_becomes_a_message():
    doc = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "message": {
                    "content": "",
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "w", "arguments": '{"x":1}'}},
                        {"id": "c2", "function": {"name": "w", "arguments": "not json"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }
    message = chat_to_message(doc, "asked")
    assert message["id"] == "msg_chatcmpl-1" and message["model"] == "asked"
    assert message["stop_reason"] == "tool_use"
    assert [b["input"] for b in message["content"]] == [{"x": 1}, {"arguments": "not json"}]
    assert message["usage"] == {
        "input_tokens": 6,
        "output_tokens": 3,
        "cache_read_input_tokens": 4,
    }


def test_a_matched_stop_sequence_is_named():
    doc = {
        "choices": [{"message": {"content": "a"}, "finish_reason": "stop", "stop_reason": "END"}]
    }
    message = chat_to_message(doc, "m", ("END",))
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")
    with pytest.raises(MessagesError):
        chat_to_message({"object": "list"}, "m")


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_stream_of_text_then_tool_calls_becomes_ordered_blocks():
    translator = EventTranslator("m")
    out = translator.feed(chunk({"role": "assistant", "content": ""}))
    out += translator.feed(chunk({"content": "hi"}))
    call = {"index": 0, "id": "t1", "function": {"name": "w", "arguments": ""}}
    out += translator.feed(chunk({"tool_calls": [call]}))
    out += translator.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))
    out += translator.feed(chunk({}, "tool_calls"))
    out += translator.feed(
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}
    )
    out += translator.done()
    got = events(out)
    names = [name for name, _ in got]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert got[5][1]["content_block"] == {"type": "tool_use", "id": "t1", "name": "w", "input": {}}
    assert got[6][1] == {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": "{}"},
    }
    delta = got[8][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"input_tokens": 4, "output_tokens": 2}
    assert translator.done() == []


def test_an_error_event_ends_the_stream_as_an_anthropic_error():
    translator = EventTranslator("m")
    translator.feed(chunk({"content": "a"}))
    (raw,) = translator.feed({"error": {"message": "stalled", "code": "timeout"}})
    ((name, doc),) = events([raw])
    assert name == "error" and doc["error"] == {"type": "timeout_error", "message": "stalled"}
    assert translator.finished and translator.done() == []


def test_a_whole_completion_in_a_stream_is_every_event():
    doc = {"object": "chat.completion", "id": "x", "choices": [{"message": {"content": "hey"}}]}
    names = [name for name, _ in events(EventTranslator("m").feed(doc))]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_delta" in names


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (404, "not_found_error"),
     (413, "request_too_large"), (429, "rate_limit_error"), (500, "api_error"),
     (503, "overloaded_error"), (504, "timeout_error")],
)  # fmt: skip
def test_errors_take_anthropic_types_by_status(status, kind):
    body = json.dumps({"error": {"message": "no", "type": "whatever"}}).encode()
    assert error_body(status, body) == {"type": "error", "error": {"type": kind, "message": "no"}}
    assert error_body(status, b"<html>")["error"]["message"] == f"HTTP {status}"
    vllm = json.dumps({"object": "error", "message": "too long", "code": status}).encode()
    assert error_body(status, vllm)["error"]["message"] == "too long"


def test_the_stream_response_translates_bytes_split_anywhere():
    from inferscale.router.messages_http import MessagesStream

    stream = MessagesStream(EventTranslator("m"), 200, {"Content-Type": "text/event-stream"})
    assert stream.translate(b": waiting for a replica\n\n").startswith(b"event: ping")
    source = (
        b"".join(
            b"data: " + json.dumps(doc).encode() + b"\n\n"
            for doc in (chunk({"content": "he"}), chunk({"content": "y"}, "stop"))
        )
        + b"data: [DONE]\n\n"
    )
    out = b"".join(stream.translate(source[i : i + 7]) for i in range(0, len(source), 7))
    names = [line[7:] for line in out.decode().splitlines() if line.startswith("event: ")]
    assert (
        names[-2:] == ["message_delta", "message_stop"] and names.count("content_block_delta") == 2
    )
    assert stream.translate(b"data: {}\n\n") == b""  # nothing after the end
    broken = MessagesStream(EventTranslator("m"), 200, {})
    assert broken.translate(b"data: {oops\n\n").startswith(b"event: error")
