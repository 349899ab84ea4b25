"""Team and money budgets shared by two routers' limiters through a real Redis, and Redis dying.

Each test starts its own ``redis-server`` (no persistence, a free loopback port) and kills it
after. Two :class:`SharedLimiter` objects, each with its own connection pool and local limiter,
stand for two routers. A team's money is counted when answers end and reaches Redis within one
settle interval, so under load a budget is overshot by at most the requests in flight (plus
those settled in the last interval); with Redis gone, team and money budgets are refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio

from inferscale.router.limits import LocalLimiter, Policy, extra_budgets
from inferscale.router.limits_redis import SETTLE_INTERVAL_SECONDS, SharedLimiter
from tests.redis_server import RedisServer

TEAM = "t/research"
COST = 0.1
"""What each answer costs, in USD."""


def member(client: str, team_usd_per_day: float | None = 1.0) -> Policy:
    extra = extra_budgets(client, TEAM, (None, None), (None, None), (team_usd_per_day, None))
    return Policy(client, team=TEAM, extra=extra)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
async def limiters(redis_server) -> AsyncIterator[list[SharedLimiter]]:
    out = [
        SharedLimiter(
            redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=0.5),
            LocalLimiter(time.monotonic, time.time),
            retry_seconds=0.2,
        )
        for _ in range(2)
    ]
    yield out
    for limiter in out:
        await limiter.close()


async def test_a_teams_money_budget_holds_across_two_routers_under_load(limiters):
    policies = [member("t/a"), member("t/b")]
    admitted = 0
    in_flight = peak = 0

    async def worker(n: int) -> None:
        nonlocal admitted, in_flight, peak
        limiter, policy = limiters[n % 2], policies[(n // 2) % 2]
        for _ in range(40):
            verdict, charge = await limiter.admit(policy, 10)
            if not verdict.allowed:
                assert verdict.limit == "team_usd_per_day"
                await asyncio.sleep(0.005)
                continue
            assert charge is not None
            admitted += 1
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)  # the answer takes a while
            in_flight -= 1
            limiter.settle(policy, charge, 10, False, COST)

    await asyncio.gather(*(worker(n) for n in range(8)))
    await asyncio.sleep(SETTLE_INTERVAL_SECONDS * 3)
    # At most the requests in flight when the budget ran out, and those settled within one
    # interval: 8 workers, each at most ceil(interval / answer time) + 1 answers deep.
    per_worker = int(SETTLE_INTERVAL_SECONDS / 0.01) + 2
    assert 10 <= admitted <= 10 + 8 * per_worker
    spent = [await limiter.admit(p, 10) for limiter in limiters for p in policies]
    assert not any(verdict.allowed for verdict, _ in spent)
    assert {verdict.limit for verdict, _ in spent} == {"team_usd_per_day"}


async def test_money_reaches_redis_as_micro_dollars(limiters, redis_server):
    policy = member("t/a")
    verdict, charge = await limiters[0].admit(policy, 10)
    assert verdict.allowed and charge is not None
    limiters[0].settle(policy, charge, 10, False, 0.25)
    await asyncio.sleep(SETTLE_INTERVAL_SECONDS * 3)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    stored = redis_server.command("GET", f"inferscale:{{team:{TEAM}}}:b:{day}$")
    assert stored.split(b"\r\n")[1] == b"250000"
    ttl = redis_server.command("TTL", f"inferscale:{{team:{TEAM}}}:b:{day}$")
    assert 0 < int(ttl[1:].split(b"\r\n")[0]) <= 2 * 86_400


async def test_team_and_money_budgets_fail_closed_while_redis_is_down(limiters, redis_server):
    team_policy, free = member("t/a"), Policy("t/free", requests_per_minute=100)
    assert (await limiters[0].admit(team_policy, 10))[0].allowed
    redis_server.kill()
    verdict, charge = await limiters[0].admit(team_policy, 10)
    assert not verdict.allowed and verdict.limit == "unavailable" and charge is None
    assert limiters[0].degraded() is not None
    # Rates alone still serve, on this router's own count.
    assert (await limiters[0].admit(free, 1))[0].allowed
    money = Policy("t/m", extra=extra_budgets("t/m", "", (5.0, None), (None, None), (None, None)))
    assert (await limiters[1].admit(money, 1))[0].limit == "unavailable"
