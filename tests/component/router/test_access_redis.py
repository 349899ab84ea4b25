"""Limits shared through a real Redis by two router processes' worth of routers, and Redis dying.

Each test starts its own ``redis-server`` (no persistence, a free loopback port) and kills it
after. Two routers with the same credentials and the same Redis must refuse at the combined
rate, not at twice it; with Redis gone they keep serving on local limits and say so (``/readyz``
body, metric), budgets carry on from the shared figure, and what was counted meanwhile reaches
Redis when it is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from inferscale.protocol.credentials import key_digest
from tests.component.router.conftest import MODEL, TOKEN, RunningRouter, address
from tests.redis_server import RedisServer

RPM_KEY = "key-rpm-0123456789abcdef"
DAY_KEY = "key-day-0123456789abcdef"
FREE_KEY = "key-free-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "hi"}]
CREDENTIALS = {
    "version": 1,
    "requireClientKey": True,
    "clientKeys": [
        {"digest": key_digest(RPM_KEY), "client": "t/rpm", "limits": {"requestsPerMinute": 30}},
        {"digest": key_digest(DAY_KEY), "client": "t/day", "budgets": {"tokensPerDay": 300}},
        {"digest": key_digest(FREE_KEY), "client": "t/free"},
    ],
}


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


def started(redis: RedisServer, sims, **settings) -> RunningRouter:
    router = RunningRouter(
        redis_url=redis.url, redis_retry_seconds=0.2, redis_timeout_seconds=0.5, **settings
    )
    router.__enter__()
    assert router.push({MODEL: [address(sims[0])]}).status_code == 200
    resp = httpx.put(
        router.base_url + "/admin/v1/credentials",
        json=CREDENTIALS,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert resp.status_code == 200
    return router


@pytest.fixture
def pair(redis_server, sims) -> Iterator[tuple[RunningRouter, RunningRouter]]:
    a = started(redis_server, sims)
    try:
        b = started(redis_server, sims)
        try:
            yield a, b
        finally:
            b.__exit__(None, None, None)
    finally:
        a.__exit__(None, None, None)


def send(http: httpx.Client, router: RunningRouter, key: str, max_tokens: int = 1):
    return http.post(
        router.base_url + "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens,
        },
        headers={"Authorization": f"Bearer {key}"},
    )


def test_two_routers_sharing_redis_refuse_at_the_combined_rate(pair):
    a, b = pair
    outcomes: dict[str, list[int]] = {"a": [], "b": []}
    started_at = time.monotonic()
    with httpx.Client(timeout=10, trust_env=False) as http:
        for i in range(90):
            name, router = ("a", a) if i % 2 == 0 else ("b", b)
            outcomes[name].append(send(http, router, RPM_KEY).status_code)
        elapsed = time.monotonic() - started_at
        admitted = sum(s == 200 for s in outcomes["a"] + outcomes["b"])
        # 30 at once, then one every 2 s: not 60 (each router alone would admit 30).
        assert 30 <= admitted <= 30 + int(elapsed / 2) + 1, (admitted, elapsed)
        assert {s for s in outcomes["a"] + outcomes["b"]} == {200, 429}
        assert 429 in outcomes["a"] and 429 in outcomes["b"]
        refused = send(http, b, RPM_KEY)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 2  # one request per 2 s
        assert send(http, a, FREE_KEY).status_code == 200
    for router in (a, b):
        assert router.metric("inferscale_router_limits_degraded") == 0
        assert httpx.get(router.base_url + "/readyz").text == "ok"


def test_a_daily_budget_is_shared(pair, redis_server):
    a, b = pair
    spent = 0
    with httpx.Client(timeout=10, trust_env=False) as http:
        for i in range(40):  # bounded: each answer spends at least its 20 completion tokens
            resp = send(http, (a, b)[i % 2], DAY_KEY, max_tokens=20)
            if resp.status_code == 429:
                break
            assert resp.status_code == 200 and spent < 300
            spent += resp.json()["usage"]["total_tokens"]
        else:
            pytest.fail("the shared budget never ran out")
    assert resp.json()["error"]["code"] == "insufficient_quota"
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    time.sleep(0.2)  # the last settle runs in the background
    stored = redis_server.command("GET", f"inferscale:{{t/day}}:b:{day}")
    assert int(stored.split(b"\r\n")[1]) == spent
    # Each router reports the shared figure (what the operator writes into status.usage).
    for router in (a, b):
        report = budgets(router)
        assert report["shared"] is True and "problem" not in report and report["day"] == day
        assert report["holders"]["t/day"] == {"tokensDay": spent}


def budgets(router: RunningRouter) -> dict:
    """``GET /admin/v1/budgets`` of ``router``."""
    resp = httpx.get(
        router.base_url + "/admin/v1/budgets",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
        trust_env=False,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_redis_dying_leaves_the_routers_serving_on_local_limits_and_reporting_it(
    pair, redis_server
):
    a, b = pair
    with httpx.Client(timeout=10, trust_env=False) as http:
        spent = 0
        for _ in range(3):
            resp = send(http, a, DAY_KEY, max_tokens=20)
            assert resp.status_code == 200
            spent += resp.json()["usage"]["total_tokens"]
        time.sleep(0.2)  # background settles reach Redis
        redis_server.kill()
        # Still serving: a client without limits, and the limited ones on local limits.
        assert send(http, a, FREE_KEY).status_code == 200
        statuses = [send(http, a, RPM_KEY).status_code for _ in range(40)]
        assert statuses.count(200) in range(30, 33) and statuses[-1] == 429  # a's own bucket
        assert send(http, b, RPM_KEY).status_code == 200  # b has its own bucket meanwhile
        ready = httpx.get(a.base_url + "/readyz")
        assert ready.status_code == 200 and "degraded" in ready.text and "Redis" in ready.text
        assert a.metric("inferscale_router_limits_degraded") == 1
        assert a.metric("inferscale_router_limits_redis_errors_total") >= 1
        # The budget report says so, with this router's own view (never an error answer).
        report = budgets(a)
        assert "Redis" in report["problem"] and "t/day" in report["holders"]
        assert httpx.get(b.base_url + "/readyz", timeout=10).status_code == 200
        assert budgets(b)["problem"]  # b learns it on its first read or admission
        # The budget carries on from the shared figure: it does not restart at zero.
        local = 0
        for _ in range(40):
            resp = send(http, a, DAY_KEY, max_tokens=20)
            if resp.status_code == 429:
                break
            local += resp.json()["usage"]["total_tokens"]
        assert spent + local >= 300 and spent + local - 60 < 300, (spent, local)
        # Redis is back (empty: no persistence): the routers share again and hand over what
        # they counted meanwhile.
        redis_server.restart()
        deadline = time.monotonic() + 10
        while a.metric("inferscale_router_limits_degraded") and time.monotonic() < deadline:
            send(http, a, FREE_KEY)
            send(http, a, DAY_KEY)
            time.sleep(0.1)
        assert a.metric("inferscale_router_limits_degraded") == 0
        assert httpx.get(a.base_url + "/readyz").text == "ok"
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    stored = redis_server.command("GET", f"inferscale:{{t/day}}:b:{day}")
    assert int(stored.split(b"\r\n")[1]) >= local


def test_budgets_can_be_refused_while_redis_is_down(redis_server, sims):
    router = started(redis_server, sims, budgets_during_outage="refuse")
    try:
        with httpx.Client(timeout=10, trust_env=False) as http:
            assert send(http, router, DAY_KEY).status_code == 200
            redis_server.kill()
            resp = send(http, router, DAY_KEY)
            assert resp.status_code == 503
            assert resp.json()["error"]["code"] == "budget_unavailable"
            assert resp.headers["Retry-After"] == "1"
            assert send(http, router, FREE_KEY).status_code == 200
            assert send(http, router, RPM_KEY).status_code == 200
    finally:
        router.__exit__(None, None, None)


def test_a_redis_that_never_answered_means_local_limits_from_the_start(tmp_path, sims):
    server = RedisServer(tmp_path)  # never started: its port refuses connections
    router = RunningRouter(redis_url=server.url, redis_retry_seconds=0.2)
    with router:
        router.push({MODEL: [address(sims[0])]})
        httpx.put(
            router.base_url + "/admin/v1/credentials",
            json=CREDENTIALS,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with httpx.Client(timeout=10, trust_env=False) as http:
            statuses = [send(http, router, RPM_KEY).status_code for _ in range(35)]
        assert statuses.count(200) in range(30, 32) and statuses[-1] == 429
        assert "degraded" in httpx.get(router.base_url + "/readyz").text


async def test_concurrent_admissions_share_one_pipeline_and_stay_exact(pair):
    a, _ = pair
    assert a.router is not None and a.router.access.shared is not None
    limiter = a.router.access.shared
    sent: list[int] = []
    real = limiter._evalsha_all

    async def counting(sha, script, calls):
        sent.append(len(calls))
        return await real(sha, script, calls)

    limiter._evalsha_all = counting  # type: ignore[method-assign]
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:

        async def one() -> int:
            resp = await http.post(
                a.base_url + "/v1/chat/completions",
                json={"model": MODEL, "messages": MESSAGES, "max_tokens": 1},
                headers={"Authorization": f"Bearer {RPM_KEY}"},
            )
            return resp.status_code

        started_at = time.monotonic()
        statuses = await asyncio.gather(*(one() for _ in range(60)))
        elapsed = time.monotonic() - started_at
    assert 30 <= statuses.count(200) <= 30 + int(elapsed / 2) + 1
    assert statuses.count(429) == 60 - statuses.count(200)
    assert max(sent) > 1  # several admissions went to Redis together
