"""Several API keys per provider, through a real router and a mock OpenAI on loopback.

The router spreads requests over the keys, within each key's own requests per minute; a key the
provider refuses (401) or rate-limits (429) is taken out alone and the request goes on with the
next key; the provider is skipped only when no key is left. Metrics and reports name key ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.component.router.conftest import TOKEN, RunningRouter
from tests.component.router.mock_providers import KEY, MockAnthropic, MockOpenAI

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROVIDER = "team/openai"
FALLBACK = "team/claude"
KEYS = ["sk-key-one-0123456789", "sk-key-two-0123456789", "sk-key-three-012345678"]
IDS = ["keys/one", "keys/two", "keys/three"]
FALLBACK_KEYS = {FALLBACK: KEY}
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def mock_openai() -> Iterator[MockOpenAI]:
    with MockOpenAI(key=KEYS[0]) as mock:
        yield mock


@pytest.fixture(scope="module")
def mock_anthropic() -> Iterator[MockAnthropic]:
    with MockAnthropic() as mock:
        yield mock


@pytest.fixture(autouse=True)
def reset(mock_openai, mock_anthropic):
    mock_openai.keys = set(KEYS)
    mock_openai.rate_limited = {}
    mock_openai.fault = None
    for mock in (mock_openai, mock_anthropic):
        mock.requests.clear()
        mock.headers.clear()


def key_set(**rates: Any) -> list[dict[str, Any]]:
    return [{"id": i, "key": k, **rates} for i, k in zip(IDS, KEYS, strict=True)]


@pytest.fixture
def wired(router: RunningRouter, mock_openai, mock_anthropic) -> RunningRouter:
    router.set_provider_keys(FALLBACK_KEYS, {PROVIDER: key_set()})
    hosted = {"routeId": "team/chat", "servesLocally": False, "weight": 0, "route": {}}
    table = {
        "gpt": {**hosted, "backends": [{"role": "primary", "provider": PROVIDER, "model": "m"}]},
        "gpt-then-claude": {
            **hosted,
            "backends": [
                {"role": "primary", "provider": PROVIDER, "model": "m"},
                {"role": "fallback", "provider": FALLBACK, "model": "sonnet"},
            ],
        },
    }
    providers = {
        PROVIDER: {
            "type": "openai-compatible",
            "baseURL": mock_openai.base_url + "/v1",
            "timeoutSeconds": 2,
            "models": {"m": {"providerModel": "gpt-4o-mini"}},
        },
        FALLBACK: {
            "type": "anthropic",
            "baseURL": mock_anthropic.base_url,
            "timeoutSeconds": 2,
            "models": {"sonnet": {"providerModel": "claude-sonnet-4-5"}},
        },
    }
    assert router.push(table, providers=providers).status_code == 200
    return router


def ask(router: RunningRouter, model: str = "gpt") -> str:
    with openai.OpenAI(
        base_url=router.base_url + "/v1", api_key="unused", max_retries=0, timeout=20
    ) as c:
        return str(
            c.chat.completions.create(model=model, messages=MESSAGES).choices[0].message.content
        )


def used_keys(mock: MockOpenAI) -> list[str]:
    return [h["Authorization"].removeprefix("Bearer ") for h in mock.headers]


def test_requests_are_spread_over_the_keys(wired, mock_openai):
    for _ in range(6):
        assert ask(wired) == "mock:hello"
    assert used_keys(mock_openai) == KEYS * 2
    for key_id in IDS:
        assert (
            wired.metric(
                "inferscale_router_provider_key_requests_total",
                provider=PROVIDER,
                key=key_id,
                outcome="ok",
            )
            == 2
        )


def test_a_refused_key_is_out_alone_and_the_request_goes_on_with_the_next(wired, mock_openai):
    mock_openai.keys = {KEYS[1], KEYS[2]}  # the first was revoked at the provider
    for _ in range(4):
        assert ask(wired) == "mock:hello"
    # One 401 on the first key; the same request went on with the second; never again after.
    assert used_keys(mock_openai) == [KEYS[0], KEYS[1], KEYS[2], KEYS[1], KEYS[2]]
    labels = {"provider": PROVIDER, "key": IDS[0]}
    assert (
        wired.metric("inferscale_router_provider_key_requests_total", outcome="auth", **labels) == 1
    )
    assert wired.metric("inferscale_router_provider_ejections_total", provider=PROVIDER) == 0
    report = httpx.get(wired.base_url + "/admin/v1/spend", headers=AUTH).json()
    assert report["providers"][PROVIDER]["lastError"].endswith("(key keys/one)")
    assert report["providers"][PROVIDER]["keys"] == {
        IDS[0]: "revoked",
        IDS[1]: "ok",
        IDS[2]: "ok",
    }
    text = httpx.get(wired.base_url + "/metrics").text + str(report)
    assert not any(key in text for key in KEYS)
    # The Secret changes (a new value under the same id): the key is used again.
    mock_openai.keys = {"sk-key-one-rotated-000", KEYS[1], KEYS[2]}
    fixed = key_set()
    fixed[0]["key"] = "sk-key-one-rotated-000"
    wired.set_provider_keys(FALLBACK_KEYS, {PROVIDER: fixed})
    mock_openai.headers.clear()
    for _ in range(3):
        assert ask(wired) == "mock:hello"
    assert "sk-key-one-rotated-000" in used_keys(mock_openai)


def test_a_rate_limited_key_backs_off_for_its_retry_after(wired, mock_openai):
    mock_openai.rate_limited = {KEYS[0]: "2"}
    started = time.monotonic()
    assert ask(wired) == "mock:hello"
    assert used_keys(mock_openai) == [KEYS[0], KEYS[1]]
    mock_openai.rate_limited = {}
    for _ in range(2):
        ask(wired)
    if time.monotonic() - started < 1.9:  # a loaded machine may take longer: then skip this
        assert KEYS[0] not in used_keys(mock_openai)[2:]  # still backing off
    time.sleep(max(0.0, 2.1 - (time.monotonic() - started)))
    mock_openai.headers.clear()
    for _ in range(3):
        ask(wired)
    assert KEYS[0] in used_keys(mock_openai)


def test_with_every_key_limited_the_client_gets_429_then_the_provider_is_skipped(
    wired, mock_openai, mock_anthropic
):
    mock_openai.rate_limited = dict.fromkeys(KEYS, "30")
    with pytest.raises(openai.RateLimitError) as caught:
        ask(wired)
    assert caught.value.response.headers["Retry-After"] == "30"
    assert len(mock_openai.requests) == 3  # each key once, then no key was left
    # Every key backs off: the provider is skipped; a route with a fallback uses it at once.
    assert ask(wired, "gpt-then-claude") == "claude:hello"
    assert len(mock_openai.requests) == 3
    with pytest.raises(openai.APIStatusError) as caught:
        ask(wired)
    assert caught.value.status_code == 503 and "rate-limited (429)" in str(caught.value)


def test_each_key_keeps_its_own_requests_per_minute(wired, mock_openai):
    wired.set_provider_keys(FALLBACK_KEYS, {PROVIDER: key_set(requestsPerMinute=1)})
    for _ in range(3):
        assert ask(wired, "gpt-then-claude") == "mock:hello"
    assert sorted(used_keys(mock_openai)) == sorted(KEYS)
    # A minute's quota of every key is spent: the fallback answers, the provider is not called.
    assert ask(wired, "gpt-then-claude") == "claude:hello"
    assert len(mock_openai.requests) == 3
    with pytest.raises(openai.RateLimitError) as caught:
        ask(wired)
    assert "own rate limit" in str(caught.value)
    assert caught.value.response.headers["Retry-After"] == "1"
