"""Hosted providers behind the router: mock OpenAI and Anthropic APIs on loopback, the official
``openai`` SDK in front, real sims as the replicas.

Covers the Anthropic translation end to end (plain, streamed, tools, usage), model-name mapping
and keys, the roles (weights, spillover with drain-back, cold start, fallback, mirror), spend
and its caps, and the faults (timeout, 429, 5xx, malformed and cut streams, a missing key).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.component.router.conftest import TOKEN, RunningRouter, address
from tests.component.router.mock_providers import KEY, MockAnthropic, MockOpenAI
from tests.component.sim.conftest import MODEL, RunningSim, make_settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPENAI_ID = "team/openai"
CLAUDE_ID = "team/claude"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def mock_openai() -> Iterator[MockOpenAI]:
    with MockOpenAI() as mock:
        yield mock


@pytest.fixture(scope="module")
def mock_anthropic() -> Iterator[MockAnthropic]:
    with MockAnthropic() as mock:
        yield mock


@pytest.fixture(autouse=True)
def reset_mocks(mock_openai, mock_anthropic):
    for mock in (mock_openai, mock_anthropic):
        mock.fault, mock.fault_times, mock.delay = None, None, 5.0
        mock.requests.clear()
        mock.headers.clear()


def providers(mock_openai, mock_anthropic, **overrides: Any) -> dict[str, Any]:
    out = {
        OPENAI_ID: {
            "type": "openai-compatible",
            "baseURL": mock_openai.base_url + "/v1",
            "timeoutSeconds": 2,
            "models": {
                "mini": {
                    "providerModel": "gpt-4o-mini",
                    "inputPricePerMillionTokens": 1_000_000,
                    "outputPricePerMillionTokens": 2_000_000,
                }
            },
        },
        CLAUDE_ID: {
            "type": "anthropic",
            "baseURL": mock_anthropic.base_url,
            "timeoutSeconds": 2,
            "models": {"sonnet": {"providerModel": "claude-sonnet-4-5"}},
        },
    }
    for key, value in overrides.items():
        out[key.replace("_", "/")].update(value)
    return out


def backend(role: str, provider: str | None, model: str, **extra: Any) -> dict[str, Any]:
    doc = {"role": role, "model": model, **extra}
    if provider is not None:
        doc["provider"] = provider
    return doc


def hosted(*backends: dict[str, Any], **route: Any) -> dict[str, Any]:
    """A route served by providers only."""
    return {
        "routeId": "team/chat",
        "servesLocally": False,
        "weight": 0,
        "route": route,
        "backends": list(backends),
    }


def client(router: RunningRouter, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=router.base_url + "/v1", api_key="unused", max_retries=0, timeout=20, **kw
    )


@pytest.fixture
def wired(router, mock_openai, mock_anthropic) -> RunningRouter:
    return wire(router, mock_openai, mock_anthropic)


def wire(router: RunningRouter, mock_openai, mock_anthropic) -> RunningRouter:
    """Program ``router`` with the hosted routes these tests share and both providers' keys."""
    router.set_provider_keys({OPENAI_ID: KEY, CLAUDE_ID: KEY})
    table = {
        "gpt": hosted(backend("primary", OPENAI_ID, "mini")),
        "claude": hosted(backend("primary", CLAUDE_ID, "sonnet")),
        "claude-then-gpt": hosted(
            backend("primary", CLAUDE_ID, "sonnet"), backend("fallback", OPENAI_ID, "mini")
        ),
        "gpt-then-claude": hosted(
            backend("primary", OPENAI_ID, "mini"), backend("fallback", CLAUDE_ID, "sonnet")
        ),
    }
    assert router.push(table, providers=providers(mock_openai, mock_anthropic)).status_code == 200
    return router


# -- OpenAI-compatible passthrough ---------------------------------------------------------


def test_openai_compatible_maps_the_model_and_sends_the_key(wired, mock_openai):
    with client(wired) as c:
        raw = c.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
    out = raw.parse()
    assert out.choices[0].message.content == "mock:hello"
    assert raw.headers["x-inferscale-backend"] == "provider:team/openai/mini"
    (sent,) = mock_openai.requests
    assert sent["model"] == "gpt-4o-mini"
    assert mock_openai.headers[0]["Authorization"] == f"Bearer {KEY}"
    # Prices are per million tokens: 9 prompt + 2 completion tokens = 9 + 4 = 13.
    assert wired.metric("inferscale_router_spend_total", route="team/chat") == pytest.approx(13)
    assert wired.metric("inferscale_router_prompt_tokens_total", model="gpt") == 9


def test_streams_are_priced_and_the_added_usage_chunk_is_stripped(wired, mock_openai):
    with client(wired) as c:
        chunks = list(c.chat.completions.create(model="gpt", messages=MESSAGES, stream=True))
    # The router asked for usage; the client did not, so it sees no usage-only chunk.
    assert mock_openai.requests[0]["stream_options"] == {"include_usage": True}
    assert all(ch.choices for ch in chunks)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "mock:hello"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert wired.metric("inferscale_router_spend_total", route="team/chat") == pytest.approx(13)
    with client(wired) as c:
        asked = list(
            c.chat.completions.create(
                model="gpt",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert asked[-1].choices == [] and asked[-1].usage.total_tokens == 11


def test_completions_and_embeddings_pass_through(wired, mock_openai):
    with client(wired) as c:
        done = c.completions.create(model="gpt", prompt="once", max_tokens=3)
        emb = c.embeddings.create(model="gpt", input=["a", "b"])
    assert done.choices[0].text == "mock:once"
    assert len(emb.data) == 2
    assert [r["model"] for r in mock_openai.requests] == ["gpt-4o-mini", "gpt-4o-mini"]


# -- Anthropic, through the official openai SDK -----------------------------------------------


def test_anthropic_round_trip_through_the_openai_sdk(wired, mock_anthropic):
    with client(wired) as c:
        out = c.chat.completions.create(
            model="claude",
            messages=[{"role": "system", "content": "Be brief."}, *MESSAGES],
            max_tokens=50,
            temperature=0.3,
            stop=["END"],
        )
    assert out.object == "chat.completion"
    assert out.choices[0].message.content == "claude:hello"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == "claude-sonnet-4-5"
    assert out.usage.prompt_tokens == 25 and out.usage.completion_tokens == 7
    (sent,) = mock_anthropic.requests
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["max_tokens"] == 50 and sent["stop_sequences"] == ["END"]
    headers = mock_anthropic.headers[0]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers


def test_anthropic_stream_through_the_openai_sdk_with_usage(wired):
    with client(wired) as c:
        chunks = list(
            c.chat.completions.create(
                model="claude",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "claude:hello"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 25 and chunks[-1].usage.completion_tokens == 15
    assert wired.metric("inferscale_router_completion_tokens_total", model="claude") == 15


def test_anthropic_tool_calls_streamed_and_not(wired, mock_anthropic):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
        }
    ]
    with client(wired) as c:
        out = c.chat.completions.create(
            model="claude", messages=MESSAGES, tools=tools, tool_choice="required"
        )
        stream = list(
            c.chat.completions.create(model="claude", messages=MESSAGES, tools=tools, stream=True)
        )
    assert out.choices[0].finish_reason == "tool_calls"
    (call,) = out.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA"}
    assert mock_anthropic.requests[0]["tool_choice"] == {"type": "any"}
    assert mock_anthropic.requests[0]["tools"][0]["input_schema"]["type"] == "object"
    arguments = "".join(
        tc.function.arguments or ""
        for ch in stream
        if ch.choices
        for tc in ch.choices[0].delta.tool_calls or []
    )
    assert json.loads(arguments) == {"location": "San Francisco, CA"}
    assert [ch.choices[0].finish_reason for ch in stream if ch.choices][-1] == "tool_calls"


def test_anthropic_refuses_what_it_cannot_express_with_a_400(wired):
    with client(wired) as c, pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(model="claude", messages=MESSAGES, n=2)
    assert "one choice" in str(caught.value)
    with client(wired) as c, pytest.raises(openai.BadRequestError) as caught:
        c.embeddings.create(model="claude", input="x")
    assert "does not serve /v1/embeddings" in str(caught.value)


# -- faults -------------------------------------------------------------------------------------


FAULTS = [
    ("529", "status_5xx"),
    ("429", "status_429"),
    ("500", "status_5xx"),
    ("timeout", "timeout"),
    ("malformed", "malformed"),
]


@pytest.mark.parametrize(
    ("fault", "reason", "stream"),
    [(f, r, False) for f, r in FAULTS]
    + [(f, r, True) for f, r in FAULTS]
    + [("error_event", "stream_error", True)],  # error events exist in streams only
)
def test_provider_faults_fail_over_and_are_counted(wired, mock_anthropic, fault, reason, stream):
    mock_anthropic.fault, mock_anthropic.delay = fault, 5.0
    started = time.monotonic()
    with client(wired) as c:
        if stream:
            chunks = list(
                c.chat.completions.create(model="claude-then-gpt", messages=MESSAGES, stream=True)
            )
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        else:
            text = (
                c.chat.completions.create(model="claude-then-gpt", messages=MESSAGES)
                .choices[0]
                .message.content
            )
    assert text == "mock:hello"  # the fallback answered
    assert time.monotonic() - started < 4.5  # the provider's 2 s timeout, not the mock's 5 s
    assert (
        wired.metric("inferscale_router_provider_failures_total", provider=CLAUDE_ID, reason=reason)
        == 1
    )
    assert wired.metric("inferscale_router_failovers_total", model="claude-then-gpt") == 1


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("429", openai.RateLimitError, 429),
        ("529", openai.InternalServerError, 503),
        ("500", openai.InternalServerError, 502),  # a gateway: 502 for its upstream's 500
        ("timeout", openai.InternalServerError, 504),
        ("malformed", openai.InternalServerError, 502),
    ],
)
def test_without_a_fallback_the_client_gets_a_clear_openai_error(
    wired, mock_anthropic, fault, error, status
):
    mock_anthropic.fault = fault
    with client(wired) as c, pytest.raises(error) as caught:
        c.chat.completions.create(model="claude", messages=MESSAGES)
    assert caught.value.status_code == status
    body = caught.value.response.json()
    assert set(body["error"]) >= {"message", "type"}


def test_a_request_the_provider_refuses_is_not_failed_over(wired, mock_openai, mock_anthropic):
    mock_openai.fault = "400"
    with client(wired) as c, pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(model="gpt-then-claude", messages=MESSAGES)
    assert "too long" in str(caught.value)
    assert mock_anthropic.count() == 0


def test_a_stream_cut_after_its_first_byte_ends_with_an_error(wired, mock_openai, mock_anthropic):
    for model, mock in (("gpt", mock_openai), ("claude", mock_anthropic)):
        mock.fault = "cut"
        with client(wired) as c, pytest.raises(openai.APIError) as caught:
            list(c.chat.completions.create(model=model, messages=MESSAGES, stream=True))
        assert "broke off" in str(caught.value)
    assert wired.metric("inferscale_router_provider_failures_total", reason="mid_stream_cut") == 2


def test_streams_that_start_and_then_break_eject_the_provider(wired, mock_anthropic):
    """A stream's success is its clean end, not its first byte: a provider that starts every
    answer and finishes none fails in a row (3, the default) and is ejected."""
    mock_anthropic.fault = "cut"
    for _ in range(3):
        with client(wired) as c, pytest.raises(openai.APIError):
            list(c.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    assert wired.metric("inferscale_router_provider_ejections_total", provider=CLAUDE_ID) == 1
    with client(wired) as c, pytest.raises(openai.APIStatusError) as caught:
        c.chat.completions.create(model="claude", messages=MESSAGES, stream=True)
    assert caught.value.status_code == 503 and "ejected" in str(caught.value)


EJECTION_SECONDS = 2.0
"""This test's first ejection: long enough that the checks made inside it finish inside it
on a loaded machine (0.5 s, the other tests' window, ran out mid-check under load)."""


def test_a_provider_failing_in_a_row_is_ejected_then_probed_back(mock_openai, mock_anthropic):
    """The endpoints' circuit breaker, for providers: 3 failures in a row (the default) eject
    it for 2 s here, doubling while probes fail; a probe that works closes it."""
    with RunningRouter(breaker_ejection_seconds=EJECTION_SECONDS) as router:
        wired = wire(router, mock_openai, mock_anthropic)
        _eject_probe_and_mend(wired, mock_anthropic)


def _ejected_until(wired: RunningRouter) -> float | None:
    report = httpx.get(wired.base_url + "/admin/v1/spend", headers=AUTH).json()
    until = report["providers"][CLAUDE_ID].get("ejectedUntil")
    return None if until is None else float(until)


def _sleep_past_ejection(wired: RunningRouter) -> None:
    """Wait until the router's own ``ejectedUntil`` has passed (bounded by the doubled window)."""
    until = _ejected_until(wired)
    assert until is not None
    time.sleep(min(max(until - time.time(), 0.0), 4 * EJECTION_SECONDS) + 0.1)


def _eject_probe_and_mend(wired: RunningRouter, mock_anthropic) -> None:
    mock_anthropic.fault = "500"

    def ask(model: str) -> str:
        with client(wired) as c:
            return str(
                c.chat.completions.create(model=model, messages=MESSAGES).choices[0].message.content
            )

    for _ in range(3):
        assert ask("claude-then-gpt") == "mock:hello"  # the fallback answered
    assert mock_anthropic.count() == 3
    assert wired.metric("inferscale_router_provider_ejections_total", provider=CLAUDE_ID) == 1
    # Ejected: the fallback answers without a call to the provider, a route without one 503s.
    assert ask("claude-then-gpt") == "mock:hello" and mock_anthropic.count() == 3
    with pytest.raises(openai.APIStatusError) as caught:
        ask("claude")
    assert caught.value.status_code == 503 and "ejected" in str(caught.value)
    assert 1 <= int(caught.value.response.headers["Retry-After"]) <= EJECTION_SECONDS
    assert (_ejected_until(wired) or 0) > time.time() - 1
    # The ejection runs out: one request probes; it fails, so it is ejected again (doubled).
    _sleep_past_ejection(wired)
    assert ask("claude-then-gpt") == "mock:hello" and mock_anthropic.count() == 4
    assert wired.metric("inferscale_router_provider_ejections_total", provider=CLAUDE_ID) == 2
    assert ask("claude-then-gpt") == "mock:hello" and mock_anthropic.count() == 4
    # Mended: after the doubled wait the probe works and closes the breaker.
    mock_anthropic.fault = None
    _sleep_past_ejection(wired)
    assert ask("claude") == "claude:hello" and mock_anthropic.count() == 5
    assert ask("claude") == "claude:hello" and mock_anthropic.count() == 6
    assert _ejected_until(wired) is None


def test_a_rejected_key_is_out_until_its_secret_changes_and_never_ejects_the_provider(
    wired, mock_anthropic
):
    """No wait mends a wrong key: after one 401 it is not tried again until new credentials
    bring another value; the provider's breaker is not fed (its status says KeyRejected)."""
    wired.set_provider_keys({OPENAI_ID: KEY, CLAUDE_ID: "sk-rotated-away"})
    for _ in range(4):
        with client(wired) as c:
            out = c.chat.completions.create(model="claude-then-gpt", messages=MESSAGES)
        assert out.choices[0].message.content == "mock:hello"
    assert mock_anthropic.count() == 1
    assert wired.metric("inferscale_router_provider_ejections_total", provider=CLAUDE_ID) == 0
    wired.set_provider_keys({OPENAI_ID: KEY, CLAUDE_ID: KEY})  # the Secret was fixed
    with client(wired) as c:
        out = c.chat.completions.create(model="claude-then-gpt", messages=MESSAGES)
    assert out.choices[0].message.content == "claude:hello"


def test_an_anthropic_error_event_mid_stream_reaches_the_client(wired, mock_anthropic):
    mock_anthropic.fault = "error_mid"
    with client(wired) as c, pytest.raises(openai.APIError) as caught:
        list(c.chat.completions.create(model="claude", messages=MESSAGES, stream=True))
    assert "Overloaded" in str(caught.value)


def test_a_rejected_key_fails_over_and_says_so(wired, mock_anthropic):
    wired.set_provider_keys({OPENAI_ID: KEY, CLAUDE_ID: "sk-rotated-away"})
    with client(wired) as c:
        with pytest.raises(openai.APIStatusError) as caught:
            c.chat.completions.create(model="claude", messages=MESSAGES)
        assert caught.value.status_code == 502
        assert "refused the router's API key" in str(caught.value)
        out = c.chat.completions.create(model="claude-then-gpt", messages=MESSAGES)
        assert out.choices[0].message.content == "mock:hello"
        with pytest.raises(openai.APIStatusError) as caught:
            c.chat.completions.create(model="claude", messages=MESSAGES)
    # The key is out: the provider is skipped, and the client is told why.
    assert caught.value.status_code == 503
    assert "every API key refused by the provider" in str(caught.value)
    report = httpx.get(wired.base_url + "/admin/v1/spend", headers=AUTH).json()
    claude = report["providers"][CLAUDE_ID]
    assert claude["failures"]["auth"] == 1 and "rotated" in claude["lastError"]


def test_a_missing_key_skips_the_provider_and_never_leaks_one(wired, mock_anthropic, caplog):
    caplog.set_level(logging.DEBUG)
    wired.set_provider_keys({OPENAI_ID: KEY})
    with client(wired) as c:
        out = c.chat.completions.create(model="claude-then-gpt", messages=MESSAGES)
        assert out.choices[0].message.content == "mock:hello"
        with pytest.raises(openai.APIStatusError) as caught:
            c.chat.completions.create(model="claude", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert "has no API key" in str(caught.value)
    assert mock_anthropic.count() == 0
    assert wired.metric("inferscale_router_provider_failures_total", reason="no_key") >= 1
    exposed = "\n".join(wired.lines) + caplog.text
    exposed += httpx.get(wired.base_url + "/metrics").text
    exposed += httpx.get(wired.base_url + "/admin/v1/spend", headers=AUTH).text
    exposed += httpx.get(wired.base_url + "/admin/v1/routing-table", headers=AUTH).text
    assert KEY not in exposed


# -- roles with replicas ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[RunningSim]:
    """A sim that takes about 40 ms per token, so requests stay in flight."""
    with RunningSim(make_settings(step_base_seconds=0.04)) as sim:
        yield sim


def local(sim: RunningSim | None, *backends: dict[str, Any], **route: Any) -> dict[str, Any]:
    return {
        "routeId": "team/llama",
        "route": route,
        "endpoints": []
        if sim is None
        else [{"pod": "sim-0", "address": address(sim), "engine": "sim"}],
        "backends": list(backends),
    }


async def test_spillover_takes_the_excess_and_drains_back(
    router, slow_sim, mock_openai, mock_anthropic
):
    router.set_provider_keys({OPENAI_ID: KEY})
    table = {
        MODEL: local(
            slow_sim,
            backend("spillover", OPENAI_ID, "mini"),
            spillover={"inFlightPerReplica": 1},
        )
    }
    assert router.push(table, providers=providers(mock_openai, mock_anthropic)).status_code == 200
    aclient = openai.AsyncOpenAI(base_url=router.base_url + "/v1", api_key="x", max_retries=0)

    async def one(tokens: int) -> str:
        raw = await aclient.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, max_tokens=tokens
        )
        raw.parse()
        return raw.headers.get("x-inferscale-backend") or raw.headers["x-inferscale-pod"]

    try:
        long = asyncio.ensure_future(one(50))  # about two seconds on the replica
        assert router.router is not None
        (endpoint,) = router.router.table.models[MODEL].endpoints
        for _ in range(200):  # until the router counts it in flight (bounded: 10 s)
            if endpoint.in_flight:
                break
            await asyncio.sleep(0.05)
        during = await asyncio.gather(*(one(2) for _ in range(3)))
        first = await long
        after = await one(2)  # the replica is free again: no spillover
    finally:
        await aclient.close()
    assert first == "sim-0"
    assert during == ["provider:team/openai/mini"] * 3
    assert after == "sim-0"
    assert router.metric("inferscale_router_spillover_total", model=MODEL, reason="saturated") == 3


def test_cold_start_spills_at_once_or_when_the_hold_queue_is_full(
    router, mock_openai, mock_anthropic
):
    router.set_provider_keys({OPENAI_ID: KEY})
    provs = providers(mock_openai, mock_anthropic)
    table = {MODEL: local(None, backend("spillover", OPENAI_ID, "mini"))}
    assert router.push(table, providers=provs).status_code == 200
    with client(router) as c:
        out = c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert out.choices[0].message.content == "mock:hello"
    assert router.metric("inferscale_router_spillover_total", reason="cold_start") == 1
    # The spilled answer's tokens, from the provider's usage (the autoscaler's token share).
    spilled = [
        router.metric("inferscale_router_spillover_tokens_total", model=MODEL, kind=kind)
        for kind in ("prompt", "completion")
    ]
    assert spilled == [out.usage.prompt_tokens, out.usage.completion_tokens]
    # Without onColdStart the request is held; with the queue full (0 places) it spills.
    table = {
        MODEL: local(
            None,
            backend("spillover", OPENAI_ID, "mini"),
            spillover={"onColdStart": False},
            holdQueue={"maxRequests": 0, "maxWaitSeconds": 1},
        )
    }
    assert router.push(table, providers=provs).status_code == 200
    with client(router) as c:
        out = c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert out.choices[0].message.content == "mock:hello"
    assert router.metric("inferscale_router_spillover_total", reason="hold_full") == 1


def test_a_held_request_times_out_to_its_fallback(router, mock_openai, mock_anthropic):
    router.set_provider_keys({OPENAI_ID: KEY})
    table = {
        MODEL: local(
            None,
            backend("fallback", OPENAI_ID, "mini"),
            holdQueue={"maxRequests": 5, "maxWaitSeconds": 0.3},
        )
    }
    assert router.push(table, providers=providers(mock_openai, mock_anthropic)).status_code == 200
    with client(router) as c:
        out = c.chat.completions.create(model=MODEL, messages=MESSAGES)
        chunks = list(c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert out.choices[0].message.content == "mock:hello"
    # The held stream got keep-alives (headers out), then the fallback's stream.
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "mock:hello"


def test_replicas_that_fail_fall_back_to_a_provider(router, mock_openai, mock_anthropic):
    from tests.component.router.conftest import free_port

    router.set_provider_keys({OPENAI_ID: KEY})
    dead = {"pod": "dead-0", "address": f"127.0.0.1:{free_port()}", "engine": "sim"}
    table = {
        MODEL: {
            "routeId": "team/llama",
            "endpoints": [dead],
            "route": {"retries": {"maxAttempts": 1}},
            "backends": [backend("fallback", OPENAI_ID, "mini")],
        }
    }
    assert router.push(table, providers=providers(mock_openai, mock_anthropic)).status_code == 200
    with client(router) as c:
        raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "mock:hello"
    assert raw.headers["x-inferscale-backend"] == "provider:team/openai/mini"


def test_primaries_share_by_weight(router, sims, mock_openai, mock_anthropic):
    router.set_provider_keys({OPENAI_ID: KEY})
    entry = local(sims[0], backend("primary", OPENAI_ID, "mini", weight=1))
    entry["weight"] = 3
    assert (
        router.push({MODEL: entry}, providers=providers(mock_openai, mock_anthropic)).status_code
        == 200
    )
    assert router.router is not None
    router.router.random.seed(7)
    seen: dict[str, int] = {}
    with client(router) as c:
        for _ in range(200):
            raw = c.chat.completions.with_raw_response.create(
                model=MODEL, messages=MESSAGES, max_tokens=1
            )
            raw.parse()
            where = raw.headers.get("x-inferscale-backend") or raw.headers["x-inferscale-pod"]
            seen[where] = seen.get(where, 0) + 1
    assert 30 <= seen["provider:team/openai/mini"] <= 70  # a quarter of 200, give or take


def test_mirrors_get_their_share_and_never_touch_the_answer(
    router, sims, mock_openai, mock_anthropic
):
    router.set_provider_keys({OPENAI_ID: KEY, CLAUDE_ID: KEY})
    mock_anthropic.fault = "500"  # a failing mirror changes nothing for the client
    table = {
        MODEL: local(
            sims[0],
            backend("mirror", OPENAI_ID, "mini", mirrorPercent=50),
            backend("mirror", CLAUDE_ID, "sonnet"),
        )
    }
    assert router.push(table, providers=providers(mock_openai, mock_anthropic)).status_code == 200
    assert router.router is not None
    router.router.random.seed(3)
    with client(router) as c:
        for _ in range(40):
            out = c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
            assert out.choices[0].finish_reason == "length"
    claude_label = "provider:team/claude/sonnet"

    def claude_copies(outcome: str) -> float:
        return router.metric(
            "inferscale_router_mirror_requests_total", backend=claude_label, outcome=outcome
        )

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and claude_copies("error") + claude_copies("unusable") < 40:
        time.sleep(0.05)
    # Every request was copied to the failing mirror until its circuit breaker opened (3
    # failures in a row); copies while it is ejected are skipped and counted.
    errors = claude_copies("error")
    assert errors + claude_copies("unusable") == 40
    assert 3 <= errors == mock_anthropic.count() < 40
    assert 10 <= mock_openai.count() <= 30
    assert all(r["model"] == "gpt-4o-mini" for r in mock_openai.requests)
    openai_label = "provider:team/openai/mini"
    assert (
        router.metric("inferscale_router_mirror_requests_total", backend=openai_label, outcome="ok")
        == mock_openai.count()
    )


# -- spend caps and the admin API ---------------------------------------------------------------


def test_a_spend_cap_stops_spillover_queue_or_reject(router, slow_sim, mock_openai, mock_anthropic):
    router.set_provider_keys({OPENAI_ID: KEY})
    provs = providers(mock_openai, mock_anthropic)
    # One answer costs 13; the cap is 10 an hour. Cold start spills (no replica).
    table = {
        MODEL: local(
            None,
            backend("spillover", OPENAI_ID, "mini"),
            spend={"maxPerHour": 10, "onCapReached": "reject"},
            holdQueue={"maxWaitSeconds": 0.5},
        )
    }
    assert router.push(table, providers=provs).status_code == 200
    with client(router) as c:
        c.chat.completions.create(model=MODEL, messages=MESSAGES)  # spends 13
        with pytest.raises(openai.APIStatusError) as caught:
            c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503
    retry_after = int(caught.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    assert "spend cap" in str(caught.value)
    assert router.metric("inferscale_router_spend_capped_total", route="team/llama") == 1
    # queue: the request waits for a replica instead (here none comes: 503 after the hold).
    table[MODEL]["route"]["spend"]["onCapReached"] = "queue"
    assert router.push(table, providers=provs).status_code == 200
    with client(router) as c, pytest.raises(openai.APIStatusError) as caught:
        c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503 and "no ready replica" in str(caught.value)
    assert mock_openai.count() == 1
    report = httpx.get(router.base_url + "/admin/v1/spend", headers=AUTH).json()
    assert report["routes"]["team/llama"]["hour"] == pytest.approx(13)
    assert report["routes"]["team/llama"]["lastSpillAt"] is not None
    assert router.metric(
        "inferscale_router_spend", route="team/llama", window="day"
    ) == pytest.approx(13)


def test_the_other_routers_spend_counts_towards_the_cap(router, mock_openai, mock_anthropic):
    router.set_provider_keys({OPENAI_ID: KEY})
    table = {
        MODEL: local(
            None,
            backend("spillover", OPENAI_ID, "mini"),
            spend={"maxPerDay": 100, "onCapReached": "reject"},
        )
    }
    assert router.push(table, providers=providers(mock_openai, mock_anthropic)).status_code == 200
    now = time.time()
    doc = {
        "hourStart": int(now // 3600) * 3600,
        "dayStart": int(now // 86400) * 86400,
        "routes": {"team/llama": {"hour": 0, "day": 100}},
    }
    url = router.base_url + "/admin/v1/spend"
    assert httpx.put(url, json=doc).status_code == 401
    assert httpx.put(url, json={"routes": "x"}, headers=AUTH).status_code == 400
    assert httpx.put(url, json=doc, headers=AUTH).status_code == 200
    with client(router) as c, pytest.raises(openai.APIStatusError) as caught:
        c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503
    assert mock_openai.count() == 0


async def test_requests_at_a_provider_are_reported_to_the_autoscaler(
    router, slow_sim, mock_openai, mock_anthropic
):
    # The autoscaler adds them to the replicas' load (GET /admin/v1/held, hostedInFlight).
    router.set_provider_keys({OPENAI_ID: KEY})
    table = {
        MODEL: local(
            slow_sim,
            backend("spillover", OPENAI_ID, "mini"),
            spillover={"inFlightPerReplica": 1},
        )
    }
    assert router.push(table, providers=providers(mock_openai, mock_anthropic)).status_code == 200
    mock_openai.fault, mock_openai.delay = "slow", 1.0
    aclient = openai.AsyncOpenAI(base_url=router.base_url + "/v1", api_key="x", max_retries=0)

    def held() -> dict[str, Any]:
        return httpx.get(router.base_url + "/admin/v1/held", headers=AUTH).json()["models"][MODEL]

    try:
        calls = [
            asyncio.ensure_future(
                aclient.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40)
            )
            for _ in range(3)
        ]
        seen: dict[str, Any] = {}
        for _ in range(100):  # bounded: 5 s
            await asyncio.sleep(0.05)
            seen = await asyncio.to_thread(held)
            if seen["hostedInFlight"] == 2:
                break
        await asyncio.gather(*calls)
    finally:
        await aclient.close()
    pending = seen.pop("pendingPromptTokens")
    assert seen == {"held": 0, "inFlight": 1, "hostedInFlight": 2, "readyEndpoints": 1}
    assert isinstance(pending, int) and pending >= 0
    assert (await asyncio.to_thread(held))["hostedInFlight"] == 0


@pytest.fixture(scope="module")
def prefill_sim() -> Iterator[RunningSim]:
    """A sim whose prefill takes 0.5 ms per prompt token, so long prompts wait for it."""
    with RunningSim(make_settings(prefill_seconds_per_token=0.0005, step_base_seconds=0.01)) as sim:
        yield sim


async def test_a_prefill_queue_spills_long_prompts_and_empties_at_the_first_token(
    router, prefill_sim, mock_openai, mock_anthropic
):
    router.set_provider_keys({OPENAI_ID: KEY})
    table = {
        MODEL: local(
            prefill_sim,
            backend("spillover", OPENAI_ID, "mini"),
            spillover={"inFlightPerReplica": 100, "promptTokensPerReplica": 3000},
        )
    }
    assert router.push(table, providers=providers(mock_openai, mock_anthropic)).status_code == 200
    assert router.router is not None
    (endpoint,) = router.router.table.models[MODEL].endpoints
    aclient = openai.AsyncOpenAI(base_url=router.base_url + "/v1", api_key="x", max_retries=0)

    def prompt(n_bytes: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": "lorem " * (n_bytes // 6)}]

    async def one(messages: list[dict[str, str]]) -> str:
        raw = await aclient.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, max_tokens=2
        )
        raw.parse()
        return raw.headers.get("x-inferscale-backend") or raw.headers["x-inferscale-pod"]

    async def long_stream() -> tuple[int, int]:
        # The router answers a stream's headers with its first token, so this returns then.
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=prompt(8000), max_tokens=200, stream=True
        )
        after_first = (endpoint.pending_prompt_tokens, endpoint.in_flight)
        async for _ in stream:
            pass
        return after_first

    try:
        # About 2,000 estimated prompt tokens (8,000 bytes), a second or so of prefill.
        long = asyncio.ensure_future(long_stream())
        for _ in range(200):  # until the router counts its prompt (bounded: 10 s)
            if endpoint.pending_prompt_tokens:
                break
            await asyncio.sleep(0.05)
        queued = endpoint.pending_prompt_tokens
        exported = router.metric(
            "inferscale_router_pending_prompt_tokens", model=MODEL, endpoint="sim-0"
        )
        # The autoscaler's work signal reads the same count (controller: GET /admin/v1/held).
        held = await asyncio.to_thread(
            lambda: httpx.get(router.base_url + "/admin/v1/held", headers=AUTH).json()
        )
        # 2,000 queued + 1,000 more > 3,000: the provider takes it; a short one still fits.
        medium = await one(prompt(4000))
        short = await one(MESSAGES)
        after_first = await long  # its first token took its prompt off the prefill queue
        again = await one(prompt(4000))  # nothing queued now: the replica takes it
    finally:
        await aclient.close()
    assert 1900 < queued < 2100 and 1900 < exported < 2100
    assert 1900 < held["models"][MODEL]["pendingPromptTokens"] < 2100
    assert (medium, short, again) == ("provider:team/openai/mini", "sim-0", "sim-0")
    # At its first token the long prompt left the queue while its stream went on (the short
    # request may still be waiting for its own first token then).
    assert after_first[0] < 100 and after_first[1] >= 1
    assert (endpoint.pending_prompt_tokens, endpoint.in_flight) == (0, 0)
    assert router.metric("inferscale_router_spillover_total", model=MODEL, reason="saturated") == 1


def test_least_prefill_picks_the_replica_with_the_least_prompt_waiting(router, sims):
    table = {
        MODEL: {
            "route": {"strategy": "leastPrefill"},
            "endpoints": [
                {"pod": f"sim-{i}", "address": address(s), "engine": "sim"}
                for i, s in enumerate(sims)
            ],
        }
    }
    assert router.push(table).status_code == 200
    assert router.router is not None
    first, second = router.router.table.models[MODEL].endpoints
    # As if a long prompt were prefilling at the first replica and two short ones at the other.
    first.pending_prompt_tokens, first.in_flight = 5000, 1
    second.pending_prompt_tokens, second.in_flight = 40, 2
    try:
        with client(router) as c:
            pods = [
                c.chat.completions.with_raw_response.create(
                    model=MODEL, messages=MESSAGES, max_tokens=1
                ).headers["x-inferscale-pod"]
                for _ in range(3)
            ]
    finally:
        first.pending_prompt_tokens = first.in_flight = 0
        second.pending_prompt_tokens = second.in_flight = 0
    assert pods == ["sim-1"] * 3
