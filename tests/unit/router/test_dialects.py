"""The provider dialects, pure: Gemini and Cohere translations, URLs and auth, error bodies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferscale.api.v1alpha1.inference_provider import InferenceProviderSpec
from inferscale.protocol.table import TableProvider
from inferscale.router import cohere, dialects, gemini
from inferscale.router.anthropic import (
    MalformedResponse,
    StreamTranslator,
    TranslationError,
    chat_to_messages,
    messages_to_chat,
)
from inferscale.router.sse import SseDecoder

FIXTURES = Path(__file__).parents[2] / "fixtures" / "providers"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


def fixture(name: str, **fill: str) -> str:
    text = (FIXTURES / name).read_text()
    for key, value in fill.items():
        text = text.replace("{" + key + "}", value)
    return text


def provider(**spec) -> TableProvider:
    return TableProvider.model_validate({"models": {"m": {"providerModel": "x"}}, **spec})


def chat(messages, **extra):
    return chat_to_messages({"messages": messages, **extra}, "model-x")


def translate_stream(events, sse: str) -> list[dict]:
    """Run an SSE fixture through a dialect and the Messages translator: OpenAI chunks."""
    translator = StreamTranslator(0, include_usage=True)
    out = []
    for event in SseDecoder().feed(sse.encode()):
        for each in events(json.loads(event.data)):
            out += translator.feed(each)
    return [json.loads(c[6:]) for c in b"".join(out).split(b"\n\n") if c and c != b"data: [DONE]"]


# -- Gemini -------------------------------------------------------------------------------------


def test_a_gemini_request_has_turns_system_config_tools_and_named_function_responses():
    request = chat(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=20,
        top_p=0.9,
        stop="END",
    )
    out = gemini.to_gemini(request, temperature=1.5)
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}
            ],
        },
    ]
    assert out["generationConfig"] == {
        "maxOutputTokens": 20,
        "temperature": 1.5,  # the client's, not the Messages request's clamped 1.0
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert out["tools"] == [
        {"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}
    ]
    assert out["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                }
            ],
            "data: URLs only",
        ),
        ([{"role": "tool", "tool_call_id": "nope", "content": "x"}], "no earlier tool call"),
    ],
)
def test_what_gemini_cannot_take_is_refused(messages, words):
    with pytest.raises(TranslationError, match=words):
        gemini.to_gemini(chat(messages))


def test_a_data_image_goes_inline():
    url = "data:image/png;base64,iVBORw0KGgo="
    out = gemini.to_gemini(
        chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
    )
    assert out["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    ]


def test_a_recorded_gemini_answer_becomes_a_chat_completion():
    doc = json.loads(fixture("gemini-generate.json", text="Hi there"))
    out = messages_to_chat(gemini.to_message(doc, "gemini-x"), 7)
    assert out["choices"][0]["message"]["content"] == "Hi there"
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["model"] == "gemini-2.0-flash"
    assert out["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def test_a_recorded_gemini_function_call_becomes_tool_calls():
    doc = json.loads(fixture("gemini-function-call.json"))
    out = messages_to_chat(gemini.to_message(doc, "gemini-x"), 7)
    (call,) = out["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert out["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("finish", "expected"),
    [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("OTHER", "stop")],
)
def test_gemini_finish_reasons(finish, expected):
    doc = json.loads(fixture("gemini-generate.json", text="x"))
    doc["candidates"][0]["finishReason"] = finish
    assert (
        messages_to_chat(gemini.to_message(doc, "m"), 0)["choices"][0]["finish_reason"] == expected
    )


def test_a_blocked_prompt_and_thoughts_and_thinking_tokens():
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 4},
    }
    out = messages_to_chat(gemini.to_message(blocked, "m"), 0)
    assert out["choices"][0]["finish_reason"] == "content_filter"
    doc = json.loads(fixture("gemini-generate.json", text="answer"))
    doc["candidates"][0]["content"]["parts"].insert(0, {"text": "hmm", "thought": True})
    doc["usageMetadata"]["thoughtsTokenCount"] = 5
    out = messages_to_chat(gemini.to_message(doc, "m"), 0)
    assert out["choices"][0]["message"]["content"] == "answer"
    assert out["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"candidates": []},
        {"candidates": "x"},
        {"candidates": [{"content": {"parts": ["x"]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]},
    ],
)
def test_a_malformed_gemini_answer_is_malformed(doc):
    with pytest.raises(MalformedResponse):
        gemini.to_message(doc, "m")


def test_a_recorded_gemini_stream_becomes_chunks_with_usage():
    sse = fixture("gemini-stream.sse", text1="Hello", text2=" world")
    chunks = translate_stream(gemini.GeminiEvents("m").feed, sse)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello world"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def test_a_recorded_gemini_tool_stream_and_an_error_chunk():
    chunks = translate_stream(gemini.GeminiEvents("m").feed, fixture("gemini-stream-tools.sse"))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    events = gemini.GeminiEvents("m").feed(json.loads(fixture("gemini-error.json")))
    assert events == [
        {
            "type": "error",
            "error": {
                "type": "resource_exhausted",
                "message": "Resource has been exhausted (e.g. check quota).",
            },
        }
    ]


# -- Cohere -------------------------------------------------------------------------------------


def test_a_cohere_request_has_system_tool_messages_and_options():
    obj = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "Looking.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "temperature": 0.2,
        "seed": 4,
        "stream": True,
    }
    out = cohere.to_cohere(chat_to_messages(obj, "command-a"), obj)
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Looking."}],
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert out["tool_choice"] == "REQUIRED" and out["seed"] == 4 and out["stream"] is True
    assert out["tools"][0]["function"]["name"] == "get_weather"


def test_cohere_cannot_force_one_named_tool():
    obj = {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
           "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}  # fmt: skip
    with pytest.raises(TranslationError, match="one named function"):
        cohere.to_cohere(chat_to_messages(obj, "m"), obj)


def test_recorded_cohere_answers_become_chat_completions():
    out = messages_to_chat(
        cohere.to_message(json.loads(fixture("cohere-chat.json", text="Hi")), "c"), 0
    )
    assert out["choices"][0]["message"]["content"] == "Hi" and out["model"] == "c"
    assert out["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    out = messages_to_chat(cohere.to_message(json.loads(fixture("cohere-tool-call.json")), "c"), 0)
    (call,) = out["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert out["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {"message": "x"},
        {"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}]}},
        {"message": {"tool_calls": ["x"]}},
    ],
)
def test_a_malformed_cohere_answer_is_malformed(doc):
    with pytest.raises(MalformedResponse):
        cohere.to_message(doc, "m")


def test_recorded_cohere_streams_become_chunks():
    sse = fixture("cohere-stream.sse", text1="Hello", text2=" world")
    chunks = translate_stream(cohere.CohereEvents("c").feed, sse)
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == "Hello world"
    )
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    chunks = translate_stream(cohere.CohereEvents("c").feed, fixture("cohere-stream-tools.sse"))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
    ]
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    with pytest.raises(MalformedResponse):
        cohere.CohereEvents("c").feed({"type": "tool-call-start", "delta": {}})
    with pytest.raises(MalformedResponse):
        cohere.CohereEvents("c").feed(["not an event"])


# -- URLs, auth and errors ----------------------------------------------------------------------


def test_azure_puts_the_deployment_and_api_version_in_the_url_and_the_key_in_api_key():
    azure = provider(
        type="azure-openai",
        baseURL="https://r.openai.azure.com",
        azure={"apiVersion": "2025-01-01-preview"},
    )
    out = dialects.prepare(azure, "my deploy", "k", "/v1/embeddings", {"input": "x"})
    assert (
        out.url
        == "https://r.openai.azure.com/openai/deployments/my%20deploy/embeddings?api-version=2025-01-01-preview"
    )
    assert out.headers["api-key"] == "k" and "Authorization" not in out.headers


def test_vertex_base_urls_come_from_the_location_and_presets_from_names():
    def url(**spec):
        return InferenceProviderSpec.model_validate(
            {"apiKeySecretRef": {"name": "s", "key": "k"}, "models": [{"name": "m"}], **spec}
        ).resolved_base_url()

    assert url(type="vertex-ai", vertex={"project": "my-project", "location": "europe-west4"}) == (
        "https://europe-west4-aiplatform.googleapis.com"
    )
    assert url(type="vertex-ai", vertex={"project": "my-project", "location": "global"}) == (
        "https://aiplatform.googleapis.com"
    )
    assert url(type="openai-compatible", preset="groq") == "https://api.groq.com/openai/v1"
    assert url(type="openai-compatible", preset="groq", baseURL="https://x/v1/") == "https://x/v1"
    assert url(type="gemini") == "https://generativelanguage.googleapis.com"
    assert url(type="cohere") == "https://api.cohere.com"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"type": "vertex-ai"}, "vertex (project, location) is required"),
        ({"type": "azure-openai"}, "baseURL (https://<resource>.openai.azure.com) is required"),
        ({"type": "openai", "preset": "groq"}, "preset is only allowed"),
        ({"type": "openai-compatible"}, "baseURL or preset is required"),
    ],
)
def test_provider_types_refuse_missing_settings(spec, words):
    with pytest.raises(ValueError) as caught:
        InferenceProviderSpec.model_validate(
            {"apiKeySecretRef": {"name": "s", "key": "k"}, "models": [{"name": "m"}], **spec}
        )
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("body", "message", "kind", "code"),
    [
        (
            fixture("gemini-error.json").encode(),
            "Resource has been exhausted (e.g. check quota).",
            "rate_limit_error",
            "RESOURCE_EXHAUSTED",
        ),
        (
            fixture("cohere-error.json").encode(),
            "You are using a Trial key, which is limited to 10 API calls / minute.",
            "rate_limit_error",
            None,
        ),
        (b"<html>busy</html>", "the provider answered HTTP 429", "rate_limit_error", None),
        (b'{"error": "flat"}', "the provider answered HTTP 429", "rate_limit_error", None),
    ],
)
def test_error_bodies_of_every_shape_become_openai_errors(body, message, kind, code):
    assert dialects.error_of(429, body) == {
        "error": {"message": message, "type": kind, "param": None, "code": code}
    }


def test_every_api_type_has_a_dialect():
    from typing import get_args

    from inferscale.api.v1alpha1.inference_provider import ProviderType

    assert set(get_args(ProviderType)) == set(dialects.PATHS)
