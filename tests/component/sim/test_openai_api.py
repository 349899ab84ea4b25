"""Every endpoint through the official openai SDK, sync and async, streaming and not."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.component.sim.conftest import MODEL

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


@pytest.fixture
def client(sim):
    with openai.OpenAI(base_url=sim.base_url + "/v1", api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(sim):
    async with openai.AsyncOpenAI(base_url=sim.base_url + "/v1", api_key="x", max_retries=0) as c:
        yield c


def test_models_and_health(sim, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert httpx.get(sim.base_url + "/health").status_code == 200


def test_chat_sync_is_deterministic_and_sized_by_max_tokens(client):
    first = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12)
    again = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12)
    other = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, seed=3)
    assert first.object == "chat.completion" and first.model == MODEL
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].finish_reason == "length"
    assert first.usage.completion_tokens == 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + 12
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert plain.choices[0].finish_reason == "stop" and plain.usage.completion_tokens == 16


def test_chat_stream_sync_with_usage_matches_non_streaming(client):
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=9)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=9,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(content) == whole.choices[0].message.content
    assert len(content) == 9
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 9
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, stream=True)
    )
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_completions_sync_stream_and_token_prompt(client):
    whole = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5)
    assert whole.object == "text_completion" and whole.usage.completion_tokens == 5
    parts = list(
        client.completions.create(
            model=MODEL,
            prompt="Once upon a time",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(p.choices[0].text for p in parts if p.choices) == whole.choices[0].text
    assert parts[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    ids = client.completions.create(model=MODEL, prompt=[1, 2, 3, 4], max_tokens=2)
    assert ids.usage.prompt_tokens == 4


def test_embeddings_sync_float_and_base64(client):
    floats = client.embeddings.create(
        model=MODEL, input=["a cat", "a dog"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 256
    assert abs(sum(v * v for v in floats.data[0].embedding) - 1) < 1e-6
    # The SDK asks for base64 by default and decodes it; the numbers must agree.
    decoded = client.embeddings.create(model=MODEL, input="a cat")
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert floats.usage.prompt_tokens > 0
    small = client.embeddings.create(model=MODEL, input=[5, 6, 7], dimensions=8)
    assert len(small.data[0].embedding) == 8


async def test_async_client_every_endpoint(aclient):
    models = await aclient.models.list()
    assert models.data[0].id == MODEL
    chat = await aclient.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4)
    assert chat.usage.completion_tokens == 4
    stream = await aclient.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    text = ""
    usage = None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text == chat.choices[0].message.content and usage.completion_tokens == 4
    comp = await aclient.completions.create(model=MODEL, prompt="abc", max_tokens=3)
    assert comp.usage.completion_tokens == 3
    comp_stream = await aclient.completions.create(
        model=MODEL, prompt="abc", max_tokens=3, stream=True
    )
    pieces = [c.choices[0].text async for c in comp_stream]
    assert "".join(pieces) == comp.choices[0].text
    emb = await aclient.embeddings.create(model=MODEL, input="abc")
    assert len(emb.data[0].embedding) == 256


def test_metrics_count_exact_tokens(sim, client):
    before = sim.metrics()
    reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=7)
    after = sim.metrics()
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 7
    assert (
        after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
        == reply.usage.prompt_tokens
    )
    assert (
        after["vllm:time_to_first_token_seconds_count"]
        == before["vllm:time_to_first_token_seconds_count"] + 1
    )
    assert after["vllm:num_requests_running"] == 0 and after["vllm:num_requests_waiting"] == 0


def test_out_of_range_token_ids_are_a_400_not_a_500(sim):
    for path, body in (
        ("/v1/embeddings", {"model": MODEL, "input": [-1]}),
        ("/v1/embeddings", {"model": MODEL, "input": [[2**40]]}),
        ("/v1/completions", {"model": MODEL, "prompt": [-5], "max_tokens": 1}),
    ):
        r = httpx.post(sim.base_url + path, json=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
