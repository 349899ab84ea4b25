"""Client access on a real router in front of a real sim, driven by the official ``openai`` SDK.

Keys arrive as the operator sends them (``PUT /admin/v1/credentials``, digests only). Covers 401
(no key, a wrong key), 403 (a model the key may not use, existing or not), ``/v1/models`` per
key, 429 with a correct ``Retry-After`` for requests, tokens (real ``usage``, streaming too) and
budgets, anonymous access while keys are not required, and that no key reaches a log line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from inferscale.protocol.credentials import key_digest
from tests.component.router.conftest import MODEL, TOKEN, RunningRouter, address

FULL = "key-full-0123456789abcdef"
RPM = "key-rpm-0123456789abcdef"
TPM = "key-tpm-0123456789abcdef"
DAY = "key-day-0123456789abcdef"
OTHER_ONLY = "key-other-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "hi"}]


def client_key(key: str, client: str, **spec: object) -> dict[str, object]:
    return {"digest": key_digest(key), "client": f"team/{client}", **spec}


CLIENTS = [
    client_key(FULL, "full"),
    client_key(RPM, "rpm", limits={"requestsPerMinute": 5}),
    client_key(TPM, "tpm", limits={"tokensPerMinute": 200}),
    client_key(DAY, "day", budgets={"tokensPerDay": 100}),
    client_key(OTHER_ONLY, "other", allowedModels=["some-other-model"]),
]


def push_credentials(router: RunningRouter, version: int, **doc: object) -> None:
    body = {"version": version, "clientKeys": CLIENTS, "requireClientKey": True, **doc}
    resp = httpx.put(
        router.base_url + "/admin/v1/credentials",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


_OPEN: list[openai.OpenAI] = []


def sdk(router: RunningRouter, key: str) -> openai.OpenAI:
    """An SDK client without retries (closed after the test by ``close_clients``)."""
    client = openai.OpenAI(
        base_url=router.base_url + "/v1",
        api_key=key,
        max_retries=0,
        timeout=30,
        http_client=httpx.Client(trust_env=False),
    )
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture
def keyed(sims) -> Iterator[RunningRouter]:
    with RunningRouter() as router:
        assert router.push({MODEL: [address(sims[0])]}).status_code == 200
        push_credentials(router, 1)
        yield router


def chat(router: RunningRouter, key: str, **kw: object):
    return sdk(router, key).chat.completions.create(model=MODEL, messages=MESSAGES, **kw)


def test_a_known_key_is_served_and_logged_by_client_never_by_key(keyed):
    reply = chat(keyed, FULL, max_tokens=3)
    assert reply.choices[0].message.content
    (line,) = [line for line in keyed.lines if '"status":200' in line]
    assert '"client":"team/full"' in line
    assert not any(FULL in line or key_digest(FULL) in line for line in keyed.lines)


@pytest.mark.parametrize(
    ("key", "code"), [("", "missing_api_key"), ("wrong-0123456789abcdef", "invalid_api_key")]
)
def test_no_key_or_an_unknown_key_is_401(keyed, key, code):
    if key:
        with pytest.raises(openai.AuthenticationError) as error:
            chat(keyed, key)
        assert error.value.status_code == 401 and error.value.code == code
        assert error.value.response.headers["www-authenticate"].startswith("Bearer")
    else:
        resp = httpx.post(
            keyed.base_url + "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES}
        )
        assert resp.status_code == 401 and resp.json()["error"]["code"] == code
    # Refused before the body is read: no model or key in the log line.
    assert '"status":401' in keyed.lines[-1] and '"client"' not in keyed.lines[-1]
    assert not key or key not in "".join(keyed.lines)


def test_a_model_outside_allowed_models_is_403_whether_it_exists_or_not(keyed):
    for model in (MODEL, "no-such-model"):
        with pytest.raises(openai.PermissionDeniedError) as error:
            sdk(keyed, OTHER_ONLY).chat.completions.create(model=model, messages=MESSAGES)
        assert error.value.status_code == 403 and error.value.code == "model_not_allowed"
    # A key allowed every model still gets 404 for one that does not exist.
    with pytest.raises(openai.NotFoundError):
        sdk(keyed, FULL).chat.completions.create(model="no-such-model", messages=MESSAGES)


def test_models_are_listed_per_key(keyed):
    assert [m.id for m in sdk(keyed, FULL).models.list()] == [MODEL]
    assert [m.id for m in sdk(keyed, OTHER_ONLY).models.list()] == []
    # One model by id: the key's own; one it may not use is 404, as if it did not exist.
    assert sdk(keyed, FULL).models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        sdk(keyed, OTHER_ONLY).models.retrieve(MODEL)
    with pytest.raises(openai.AuthenticationError):
        sdk(keyed, "wrong-0123456789abcdef").models.list()


def test_requests_per_minute_give_429_with_a_correct_retry_after(keyed):
    client = sdk(keyed, RPM)
    started = time.monotonic()
    for _ in range(5):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    elapsed = time.monotonic() - started
    assert error.value.code == "rate_limit_exceeded"
    assert error.value.body["type"] == "requests"  # type: ignore[index]
    # 5 per minute refill one per 12 s: the sixth may come 12 s after the burst began.
    retry_after = int(error.value.response.headers["retry-after"])
    assert math.ceil(12 - elapsed) <= retry_after <= 12
    # Other clients are not affected.
    chat(keyed, FULL, max_tokens=1)
    assert keyed.metric("inferscale_router_access_refused_total", reason="requests") == 1


def test_tokens_per_minute_are_charged_from_real_usage_streams_included(keyed):
    client = sdk(keyed, TPM)
    started = time.monotonic()
    reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50)
    assert reply.usage is not None
    used = reply.usage.total_tokens
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in stream if c.usage is not None]
    assert usage and usage[-1].total_tokens > 0
    used += usage[-1].total_tokens
    # The bucket holds 200 less the real usage (not the estimates), plus what refilled since.
    assert keyed.router is not None
    level = keyed.router.access.local.clients["team/tpm"].tokens
    assert level is not None
    refilled = (time.monotonic() - started) * 200 / 60
    assert 200 - used - 0.01 <= level.tokens <= 200 - used + refilled + 0.01
    # A request estimated above what is left waits for the refill.
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=190)
    assert error.value.body["type"] == "tokens"  # type: ignore[index]
    retry_after = int(error.value.response.headers["retry-after"])
    estimate = 190 + len(b'{"messages":[{"role":"user","content":"hi"}],"model":"') // 4
    assert 1 <= retry_after <= math.ceil(min(estimate, 200) * 60 / 200)


def test_a_spent_daily_budget_gives_429_until_midnight_utc(keyed):
    client = sdk(keyed, DAY)
    spent = 0
    for _ in range(20):  # bounded: each answer spends at least its 30 completion tokens
        try:
            reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30)
        except openai.RateLimitError as refused:
            error = refused
            break
        assert reply.usage is not None
        assert spent < 100  # admitted only while some budget was left
        spent += reply.usage.total_tokens
    else:
        pytest.fail("the budget never ran out")
    assert spent >= 100
    assert error.code == "insufficient_quota"
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    expected = (midnight - now).total_seconds()
    assert abs(int(error.response.headers["retry-after"]) - expected) <= 5


def test_while_keys_are_not_required_anonymous_callers_pass_and_known_keys_are_limited(keyed):
    push_credentials(keyed, 2, requireClientKey=False)
    chat(keyed, "unused", max_tokens=1)  # what the SDK sends without a real key
    resp = httpx.post(
        keyed.base_url + "/v1/chat/completions",
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 1},
    )
    assert resp.status_code == 200
    with pytest.raises(openai.PermissionDeniedError):
        chat(keyed, OTHER_ONLY)


def test_the_routers_own_setting_requires_keys_before_any_credentials(sims):
    with RunningRouter(require_client_key=True) as router:
        router.push({MODEL: [address(sims[0])]})
        resp = httpx.post(router.base_url + "/v1/chat/completions", json={"model": MODEL})
        assert resp.status_code == 401


def test_rotated_credentials_switch_keys_at_once(keyed):
    chat(keyed, FULL, max_tokens=1)
    rotated = "key-rotated-0123456789abcdef"
    push_credentials(keyed, 3, clientKeys=[client_key(rotated, "full")])
    with pytest.raises(openai.AuthenticationError):
        chat(keyed, FULL, max_tokens=1)
    chat(keyed, rotated, max_tokens=1)
