"""The OpenAI API through the router to real sims, with the official SDK (sync, async, stream)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.component.router.conftest import MODEL, RunningRouter, address


@pytest.fixture
def routed(router: RunningRouter, sims) -> RunningRouter:
    assert router.push({MODEL: [address(s) for s in sims]}).status_code == 200
    return router


def client(router: RunningRouter) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url + "/v1", api_key="unused", max_retries=0)


def test_chat_completion_sync(routed):
    out = client(routed).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 5


def test_streaming_passes_every_chunk(routed):
    chunks = list(
        client(routed).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 6
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    # The router counts a stream's tokens when the engine's stream ends, which may be a moment
    # after the client has read [DONE]: poll (bounded: 10 s, for a loaded CI machine).
    counted = 0.0
    for _ in range(200):
        counted = routed.metric("inferscale_router_completion_tokens_total", model=MODEL)
        if counted >= 6:
            break
        time.sleep(0.05)
    assert counted >= 6
    assert routed.metric("inferscale_router_time_to_first_token_seconds_count", model=MODEL) >= 1


async def test_async_client_completions_and_embeddings(routed):
    aclient = openai.AsyncOpenAI(base_url=routed.base_url + "/v1", api_key="x", max_retries=0)
    try:
        done = await aclient.completions.create(model=MODEL, prompt="once upon", max_tokens=3)
        assert done.choices[0].text
        emb = await aclient.embeddings.create(model=MODEL, input=["a", "b"])
        assert len(emb.data) == 2
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=3, stream=True
        )
        texts = [c.choices[0].delta.content async for c in stream if c.choices]
        assert len([t for t in texts if t]) == 3
    finally:
        await aclient.close()


def test_models_lists_every_routable_model(routed):
    routed.push({MODEL: [address(s) for s in []] or [], "other-model": []})
    ids = [m.id for m in client(routed).models.list()]
    assert ids == sorted([MODEL, "other-model"])


def test_unknown_fields_pass_through_untouched(routed, sims):
    # The sim ignores unknown fields; it echoes nothing, so check the router neither drops the
    # request nor refuses it, and that the sim saw a body with the field (its 400 on a bad
    # known field proves the body reached it unchanged).
    r = httpx.post(
        routed.base_url + "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2,
            "some_vendor_field": {"nested": [1, 2]},
        },
        timeout=10,
    )
    assert r.status_code == 200
    r = httpx.post(
        routed.base_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [], "max_tokens": 2},
        timeout=10,
    )
    assert r.status_code == 400  # the sim's own refusal, passed through


def test_access_log_has_no_prompt_text(routed):
    secret = "my-very-private-prompt"
    httpx.post(
        routed.base_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": secret}], "max_tokens": 2},
        headers={"Authorization": "Bearer sk-client-secret"},
        timeout=10,
    )
    assert routed.lines
    line = json.loads(routed.lines[-1])
    assert line["model"] == MODEL and line["status"] == 200 and line["endpoint"].startswith("pod-")
    text = "".join(routed.lines)
    assert secret not in text and "sk-client-secret" not in text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"messages": []}', 400, None),
        (b'{"model": 5}', 400, None),
        (b'{"model": "m", "stream": "yes"}', 400, None),
        (b'{"model": "no-such-model"}', 404, "model_not_found"),
    ],
)
def test_bad_input(routed, body, status, code):
    r = httpx.post(
        routed.base_url + "/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == status
    assert r.json()["error"]["code"] == code


def test_body_over_the_limit_is_413(sims):
    with RunningRouter(max_request_bytes=2048) as r:
        r.push({MODEL: [address(sims[0])]})
        big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}
        resp = httpx.post(r.base_url + "/v1/chat/completions", json=big, timeout=10)
        assert resp.status_code == 413


def test_unknown_path_is_an_openai_404(router):
    r = httpx.get(router.base_url + "/v1/nope", timeout=10)
    assert r.status_code == 404 and "error" in r.json()


def test_health_readiness_and_metrics(router, sims):
    assert httpx.get(router.base_url + "/healthz").status_code == 200
    # vLLM's /health (guidellm checks it at start-up): 200, empty body, even before a table.
    health = httpx.get(router.base_url + "/health")
    assert health.status_code == 200 and health.content == b""
    assert httpx.get(router.base_url + "/readyz").status_code == 503  # no table yet
    router.push({MODEL: [address(sims[0])]})
    assert httpx.get(router.base_url + "/readyz").status_code == 200
    httpx.post(
        router.base_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
    )
    assert router.metric("inferscale_router_requests_total", model=MODEL, status="200") == 1
    assert router.metric("inferscale_router_request_duration_seconds_count", model=MODEL) == 1
    assert router.metric("inferscale_router_in_flight", model=MODEL) == 0
    assert router.metric("inferscale_router_table_version") == router.version


def test_one_model_by_id_and_404_for_an_unknown_one(routed):
    routed.push({MODEL: [], "org/with-slash": []})
    model = client(routed).models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "inferscale")
    assert client(routed).models.retrieve("org/with-slash").id == "org/with-slash"
    with pytest.raises(openai.NotFoundError) as error:
        client(routed).models.retrieve("no-such-model")
    assert error.value.code == "model_not_found"
    assert error.value.body["type"] == "invalid_request_error"
