"""The response cache in a real router in front of a real sim: hits, misses, streams, faults."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inferscale.router.app import start
from tests.component.router.conftest import RunningRouter, address
from tests.component.sim.conftest import MODEL, RunningSim, make_settings
from tests.redis_server import RedisServer
from tests.unit.router.stage_fakes import WordEncoder


class CachingRouter(RunningRouter):
    """A router whose cache embeds with :class:`WordEncoder` (or fails to load one)."""

    def __init__(self, loader: Any, **settings: Any) -> None:
        self.loader = loader
        super().__init__(**settings)

    async def start_server(self) -> tuple[Any, int]:
        runner, port, self.router = await start(
            self.settings,
            admin_token="test-admin-token",
            log_sink=self.lines.append,
            encoder_loader=self.loader,
        )
        return runner, port


def cached_route(sim: RunningSim, **cache: Any) -> dict[str, Any]:
    return {
        MODEL: {
            "endpoints": [address(sim)],
            "route": {"cache": {"enabled": True, "threshold": 0.6, **cache}},
        }
    }


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSim]:
    with RunningSim(make_settings()) as running:
        yield running


@pytest.fixture
def caching(sim: RunningSim) -> Iterator[CachingRouter]:
    with CachingRouter(WordEncoder) as router:
        assert router.push(cached_route(sim)).status_code == 200
        wait_for_cache(router)
        yield router


def wait_for_cache(router: CachingRouter) -> None:
    import time

    assert router.router is not None
    cache = router.router.pipeline.cache
    deadline = time.monotonic() + 10
    while MODEL not in cache.caches and cache.failed is None and time.monotonic() < deadline:
        time.sleep(0.02)


def post(router: RunningRouter, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        router.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=10
    )


def chat(question: str, system: str = "You help.", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 8,
        **extra,
    }


def test_a_repeated_question_is_answered_from_the_cache(caching: CachingRouter):
    first = post(caching, chat("What's the weather?"))
    assert first.status_code == 200 and first.headers["X-Inferscale-Cache"] == "miss"
    again = post(caching, chat("  what's the WEATHER? "))
    assert again.headers["X-Inferscale-Cache"] == "hit"
    assert again.json() == first.json()
    assert caching.metric("inferscale_router_cache_requests_total", outcome="hit_exact") == 1
    saved = caching.metric("inferscale_router_cache_tokens_saved_total", kind="completion")
    assert saved == first.json()["usage"]["completion_tokens"]
    line = json.loads(caching.lines[-1])
    assert line["endpoint"] == "cache" and line["status"] == 200


def test_a_paraphrase_hits_the_semantic_layer(caching: CachingRouter):
    first = post(caching, chat("What's the weather?"))
    para = post(caching, chat("How's the weather?"))
    assert para.headers["X-Inferscale-Cache"] == "hit" and para.json() == first.json()
    assert caching.metric("inferscale_router_cache_requests_total", outcome="hit_semantic") == 1


def test_the_same_question_in_another_conversation_misses(caching: CachingRouter):
    post(caching, chat("What's the weather?"))
    other = post(caching, chat("What's the weather?", system="You are a pirate."))
    assert other.headers["X-Inferscale-Cache"] == "miss"


def test_a_cached_answer_is_replayed_as_a_stream(caching: CachingRouter):
    first = post(caching, chat("Tell me a story")).json()
    body = chat("Tell me a story", stream=True, stream_options={"include_usage": True})
    streamed = post(caching, body)
    assert streamed.headers["X-Inferscale-Cache"] == "hit"
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    events = [e.removeprefix("data: ") for e in streamed.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == first["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == first["usage"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


def test_no_cache_bypasses_the_lookup_and_no_store_keeps_nothing(caching: CachingRouter):
    post(caching, chat("Pick a colour"), **{"Cache-Control": "no-store"})
    assert post(caching, chat("Pick a colour")).headers["X-Inferscale-Cache"] == "miss"
    bypass = post(caching, chat("Pick a colour"), **{"Cache-Control": "no-cache"})
    assert bypass.headers["X-Inferscale-Cache"] == "bypass"
    assert post(caching, chat("Pick a colour")).headers["X-Inferscale-Cache"] == "hit"


def test_requests_that_do_not_allow_caching_pass_through(caching: CachingRouter):
    body = chat("Pick a number")
    del body["temperature"]  # the API's default, 1: not deterministic
    for _ in range(2):
        resp = post(caching, body)
        assert resp.status_code == 200 and "X-Inferscale-Cache" not in resp.headers


def test_a_route_may_cache_any_temperature(sim: RunningSim):
    with CachingRouter(WordEncoder) as router:
        router.push(cached_route(sim, when="always"))
        wait_for_cache(router)
        body = chat("Pick a number", temperature=0.9)
        post(router, body)
        assert post(router, body).headers["X-Inferscale-Cache"] == "hit"


def test_an_encoder_that_cannot_load_turns_the_cache_off_never_the_route(sim: RunningSim):
    def broken() -> WordEncoder:
        raise OSError("model.zip: no such file")

    with CachingRouter(broken) as router:
        router.push(cached_route(sim))
        wait_for_cache(router)
        for _ in range(2):
            resp = post(router, chat("What's the weather?"))
            assert resp.status_code == 200 and "X-Inferscale-Cache" not in resp.headers
        ready = httpx.get(router.base_url + "/readyz", timeout=5)
        assert ready.status_code == 200 and "response cache off" in ready.text
        assert "no such file" in ready.text
        assert router.metric("inferscale_router_cache_disabled") == 1
        report = httpx.get(
            router.base_url + "/admin/v1/spend",
            headers={"Authorization": "Bearer test-admin-token"},
            timeout=5,
        ).json()
        assert "no such file" in report["cacheOff"]  # the operator's CacheReady condition


def test_routes_without_a_cache_are_untouched(sim: RunningSim):
    with CachingRouter(WordEncoder) as router:
        router.push({MODEL: [address(sim)]})
        resp = post(router, chat("What's the weather?"))
        assert resp.status_code == 200 and "X-Inferscale-Cache" not in resp.headers
        assert router.router is not None and router.router.pipeline.cache.loading is None


def test_a_route_that_turns_its_cache_off_drops_it(caching: CachingRouter, sim: RunningSim):
    post(caching, chat("What's the weather?"))
    caching.push({MODEL: [address(sim)]})
    assert caching.router is not None and caching.router.pipeline.cache.caches == {}
    assert "X-Inferscale-Cache" not in post(caching, chat("What's the weather?")).headers


# -- shared between replicas through Redis ---------------------------------------------------


def shared_router(redis: RedisServer, sim: RunningSim) -> CachingRouter:
    router = CachingRouter(
        WordEncoder, redis_url=redis.url, redis_retry_seconds=0.2, redis_timeout_seconds=0.5
    )
    router.__enter__()
    assert router.push(cached_route(sim)).status_code == 200
    wait_for_cache(router)
    return router


def probe(router: CachingRouter, body: dict[str, Any]) -> httpx.Response:
    """Ask until the answer comes from the cache (an answer travels between replicas in the
    background); the last answer after 10 s."""
    import time

    deadline = time.monotonic() + 10
    while True:
        assert router.router is not None
        cache = router.router.pipeline.cache.caches[MODEL]
        if len(cache.store) or time.monotonic() > deadline:
            resp = post(router, body)
            assert resp.headers["X-Inferscale-Cache"] == "hit"
            return resp
        time.sleep(0.05)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


def test_a_second_replica_answers_from_the_first_ones_cache(redis_server, sim):
    a = shared_router(redis_server, sim)
    b = shared_router(redis_server, sim)
    try:
        first = post(a, chat("What's the weather?"))
        assert first.headers["X-Inferscale-Cache"] == "miss"
        assert probe(b, chat("How's the weather?")).json() == first.json()
        late = shared_router(redis_server, sim)  # starts after the answer: reads it at start
        try:
            assert probe(late, chat("What's the weather?")).json() == first.json()
        finally:
            late.__exit__(None, None, None)
    finally:
        b.__exit__(None, None, None)
        a.__exit__(None, None, None)


def test_redis_down_means_misses_never_failures(redis_server, sim):
    router = shared_router(redis_server, sim)
    try:
        redis_server.kill()
        first = post(router, chat("What's the weather?"))
        assert first.status_code == 200 and first.headers["X-Inferscale-Cache"] == "miss"
        again = post(router, chat("What's the weather?"))  # this router's own index still serves
        assert again.headers["X-Inferscale-Cache"] == "hit"
        other = post(router, chat("Where is Paris?"))
        assert other.status_code == 200
        assert router.metric("inferscale_router_cache_redis_errors_total") >= 1
    finally:
        router.__exit__(None, None, None)


def test_a_streamed_answer_is_kept_and_served_to_both_kinds_of_client(caching: CachingRouter):
    body = chat("Tell me a joke", stream=True, stream_options={"include_usage": True})
    first = post(caching, body)
    assert first.status_code == 200 and "X-Inferscale-Cache" not in first.headers  # relayed
    events = [e.removeprefix("data: ") for e in first.text.split("\n\n") if e]
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    whole = post(caching, chat("Tell me a joke"))
    assert whole.headers["X-Inferscale-Cache"] == "hit"
    assert whole.json()["choices"][0]["message"]["content"] == text
    assert whole.json()["usage"] == chunks[-1]["usage"]
    again = post(caching, body)
    assert again.headers["X-Inferscale-Cache"] == "hit" and again.text.endswith("data: [DONE]\n\n")


# -- the shipped encoder and threshold ---------------------------------------------------------


def shipped_encoder():
    from inferscale.embedding import EmbeddingUnavailable
    from inferscale.embedding.store import load_static_encoder

    try:
        return load_static_encoder(build_if_missing=False)
    except EmbeddingUnavailable as error:
        pytest.skip(f"no static embedding table ({error}): run `make embedding`")


def test_the_shipped_encoder_hits_a_paraphrase_and_not_another_city(sim: RunningSim):
    shipped_encoder()
    with CachingRouter(shipped_encoder) as router:
        router.push({MODEL: {"endpoints": [address(sim)], "route": {"cache": {"enabled": True}}}})
        wait_for_cache(router)
        first = post(router, chat("How do I reset my password?"))
        para = post(router, chat("How can I reset my password?"))
        assert para.headers["X-Inferscale-Cache"] == "hit" and para.json() == first.json()
        post(router, chat("What's the weather in Paris?"))
        other = post(router, chat("What's the weather in London?"))
        assert other.headers["X-Inferscale-Cache"] == "miss"


def test_a_hit_on_a_providers_answer_counts_the_cost_saved():
    from tests.component.router.mock_providers import KEY, MockOpenAI

    with MockOpenAI() as mock, CachingRouter(WordEncoder) as router:
        mock.delay = 0.0
        router.set_provider_keys({"team/openai": KEY})
        price = {"inputPricePerMillionTokens": 1_000_000, "outputPricePerMillionTokens": 2_000_000}
        providers = {
            "team/openai": {
                "type": "openai-compatible",
                "baseURL": mock.base_url + "/v1",
                "models": {"mini": {"providerModel": "gpt-4o-mini", **price}},
            }
        }
        route = {
            "routeId": "team/chat",
            "servesLocally": False,
            "weight": 0,
            "route": {"cache": {"enabled": True}},
            "backends": [{"role": "primary", "provider": "team/openai", "model": "mini"}],
        }
        assert router.push({"gpt": route}, providers=providers).status_code == 200
        assert router.router is not None
        cache = router.router.pipeline.cache
        deadline = time.monotonic() + 10
        while "gpt" not in cache.caches and time.monotonic() < deadline:
            time.sleep(0.02)
        body = {**chat("hello"), "model": "gpt"}
        assert post(router, body).headers["X-Inferscale-Cache"] == "miss"
        spent = router.metric("inferscale_router_spend_total")
        assert spent > 0
        assert post(router, body).headers["X-Inferscale-Cache"] == "hit"
        assert router.metric("inferscale_router_cache_cost_saved_total", model="gpt") == spent
        assert router.metric("inferscale_router_spend_total") == spent  # the hit cost nothing


def test_anthropic_messages_requests_pass_through_uncached(caching: CachingRouter):
    body = {
        "model": MODEL,
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What's the weather?"}],
    }
    for _ in range(2):
        resp = httpx.post(caching.base_url + "/v1/messages", json=body, timeout=10)
        assert resp.status_code == 200 and resp.json()["type"] == "message"
        assert "X-Inferscale-Cache" not in resp.headers
    assert (
        caching.router is not None and len(caching.router.pipeline.cache.caches[MODEL].store) == 0
    )
