"""Bedrock, pure and signed: the Converse translation, AWS's event-stream framing, SigV4."""

from __future__ import annotations

import datetime
import json
import struct
import zlib
from pathlib import Path

import pytest

from inferscale.protocol.table import TableProvider
from inferscale.router import aws, bedrock, dialects
from inferscale.router.anthropic import (
    MalformedResponse,
    StreamTranslator,
    TranslationError,
    chat_to_messages,
    messages_to_chat,
)
from inferscale.router.sse import MalformedStream
from tests.component.router.mock_dialects import event_frame

FIXTURES = Path(__file__).parents[2] / "fixtures" / "providers"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


def fixture(name: str, **fill: str) -> str:
    text = (FIXTURES / name).read_text()
    for key, value in fill.items():
        text = text.replace("{" + key + "}", value)
    return text


def frames(jsonl: str) -> bytes:
    out = b""
    for line in jsonl.splitlines():
        kind, payload = json.loads(line)
        headers = {
            ":event-type": kind,
            ":content-type": "application/json",
            ":message-type": "event",
        }
        out += event_frame(headers, json.dumps(payload).encode())
    return out


def chunks_of(data: bytes, piece: int = 7) -> list[dict]:
    """Decode in pieces of ``piece`` bytes, translate, and return the OpenAI chunks."""
    decoder, events = bedrock.EventStreamDecoder(), bedrock.ConverseEvents("m")
    translator = StreamTranslator(0, include_usage=True)
    out = []
    for at in range(0, len(data), piece):
        for event in decoder.feed(data[at : at + piece]):
            for each in events.feed(json.loads(event.data)):
                out += translator.feed(each)
    return [json.loads(c[6:]) for c in b"".join(out).split(b"\n\n") if c and c != b"data: [DONE]"]


def test_a_converse_request_has_blocks_system_config_and_tools():
    obj = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "max_tokens": 20,
        "temperature": 0.3,
        "stop": ["END"],
    }
    out = bedrock.to_converse(chat_to_messages(obj, "m"))
    assert out["system"] == [{"text": "Be brief."}]
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"text": "look"},
                {"image": {"format": "jpeg", "source": {"bytes": "/9j/"}}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}
            ],
        },
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny"}]}}],
        },
    ]
    assert out["inferenceConfig"] == {"maxTokens": 20, "temperature": 0.3, "stopSequences": ["END"]}
    assert out["toolConfig"] == {
        "tools": [
            {"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}
        ],
        "toolChoice": {"any": {}},
    }


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"tools": TOOLS, "tool_choice": "none"}, "tool_choice: none"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
                    }
                ]
            },
            "data: URLs only",
        ),
    ],
)
def test_what_converse_cannot_take_is_refused(extra, words):
    obj = {"messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(TranslationError, match=words):
        bedrock.to_converse(chat_to_messages(obj, "m"))


def test_recorded_converse_answers_become_chat_completions():
    doc = json.loads(fixture("bedrock-converse.json", text="Hi"))
    out = messages_to_chat(bedrock.to_message(doc, "claude-on-bedrock"), 0)
    assert out["choices"][0]["message"]["content"] == "Hi" and out["model"] == "claude-on-bedrock"
    assert out["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    doc = json.loads(fixture("bedrock-tool-use.json"))
    out = messages_to_chat(bedrock.to_message(doc, "m"), 0)
    (call,) = out["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    doc["stopReason"] = "guardrail_intervened"
    assert (
        messages_to_chat(bedrock.to_message(doc, "m"), 0)["choices"][0]["finish_reason"]
        == "content_filter"
    )


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        {"output": {"message": {"content": "x"}}},
        {"output": {"message": {"content": [{"toolUse": {}}]}}},
        {"output": {"message": {"content": [3]}}},
    ],
)
def test_a_malformed_converse_answer_is_malformed(doc):
    with pytest.raises(MalformedResponse):
        bedrock.to_message(doc, "m")


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_a_recorded_event_stream_decodes_in_pieces_of_any_size(piece):
    data = frames(fixture("bedrock-stream.jsonl", text1="Hello", text2=" world"))
    chunks = chunks_of(data, piece)
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == "Hello world"
    )
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def test_a_recorded_tool_stream_becomes_tool_call_chunks():
    chunks = chunks_of(frames(fixture("bedrock-stream-tools.jsonl")))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


def test_an_exception_frame_is_an_error_event():
    headers = {
        ":message-type": "exception",
        ":exception-type": "throttlingException",
        ":content-type": "application/json",
    }
    (event,) = bedrock.EventStreamDecoder().feed(event_frame(headers, b'{"message": "slow down"}'))
    assert bedrock.ConverseEvents("m").feed(json.loads(event.data)) == [
        {"type": "error", "error": {"type": "throttlingException", "message": "slow down"}}
    ]


def test_headers_of_other_types_are_skipped():
    raw = (
        bytes([4]) + b"flag" + b"\x00"  # bool true
        + bytes([3]) + b"num" + b"\x04" + struct.pack(">i", 7)
        + bytes([3]) + b"bin" + b"\x06" + struct.pack(">H", 2) + b"\x01\x02"
        + bytes([11]) + b":event-type" + b"\x07" + struct.pack(">H", 12) + b"messageStart"
    )  # fmt: skip
    payload = b'{"role": "assistant"}'
    prelude = struct.pack(">II", 16 + len(raw) + len(payload), len(raw))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + raw + payload
    (event,) = bedrock.EventStreamDecoder().feed(message + struct.pack(">I", zlib.crc32(message)))
    assert json.loads(event.data) == {"messageStart": {"role": "assistant"}}


def _corrupt(frame: bytes, at: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ 0xFF]) + frame[at + 1 :]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (_corrupt(event_frame({":event-type": "x"}, b"{}"), 1), "prelude's checksum"),
        (_corrupt(event_frame({":event-type": "x"}, b"{}"), 20), "frame's checksum"),
        (event_frame({":event-type": "x"}, b"{not json"), "not JSON"),
        (
            struct.pack(">II", 2**30, 0)
            + struct.pack(">I", zlib.crc32(struct.pack(">II", 2**30, 0))),
            "bytes",
        ),
    ],
)
def test_a_broken_event_stream_is_malformed(data, words):
    with pytest.raises(MalformedStream, match=words):
        bedrock.EventStreamDecoder().feed(data)


def test_the_model_id_is_quoted_in_the_url_and_the_request_is_to_be_signed():
    provider = TableProvider.model_validate(
        {
            "type": "bedrock",
            "baseURL": "https://bedrock-runtime.us-east-1.amazonaws.com",
            "bedrock": {"region": "us-east-1"},
            "models": {"m": {"providerModel": "x"}},
        }
    )
    out = dialects.prepare(
        provider,
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "k",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "stream": True},
    )
    assert (
        out.url
        == "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    )
    assert out.aws_region == "us-east-1" and out.stream_type == "application/vnd.amazon.eventstream"
    assert "k" not in out.headers.values()


async def test_sigv4_matches_awss_own_test_vector():
    """get-vanilla of AWS's SigV4 test suite: the signer is AWS's, and it is used right."""
    headers = await aws.signed_headers(
        "GET",
        "https://example.amazonaws.com/",
        {},
        b"",
        aws.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        "us-east-1",
        now=datetime.datetime(2015, 8, 30, 12, 36, tzinfo=datetime.UTC),
        service="service",
    )
    assert headers["X-Amz-Date"] == "20150830T123600Z"
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


async def test_a_session_token_is_sent_and_signed():
    headers = await aws.signed_headers(
        "POST", "https://h/model/m/converse", {"Content-Type": "application/json"}, b"{}",
        aws.parse_credentials("AKID:secret:token-value"), "eu-west-1",
    )  # fmt: skip
    assert headers["X-Amz-Security-Token"] == "token-value"
    assert "x-amz-security-token" in headers["Authorization"]


@pytest.mark.parametrize("value", ["", "only-one-part", "a:b:c:d", "a::c", ":secret"])
def test_a_key_that_is_no_aws_key_pair_is_refused_without_quoting_it(value):
    with pytest.raises(ValueError) as caught:
        aws.parse_credentials(value)
    assert "access key id" in str(caught.value)
    assert not value or value not in str(caught.value)
