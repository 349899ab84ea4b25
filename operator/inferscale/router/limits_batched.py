"""Limits shared through Redis without a round trip per request: local counters, synced in batches.

:class:`BatchedLimiter` decides every admission in this process, from a **view** of the shared
state (a :class:`~inferscale.router.limits.LocalLimiter` whose buckets and budget counters are
overwritten by each sync), and remembers what it took since the last sync (:class:`_Pending`).
Every ``interval`` seconds one pipeline sends, per client that took anything, what it took, and
reads back the shared levels with every router's takings applied (:data:`SYNC_SCRIPT`: refill
on Redis's clock, subtract, ``INCRBY`` the counters). A client this router has not synced for
``stale_seconds`` is synced before its request is decided (one round trip, shared with the
turn's others), so a router never decides from an old view of a client it has not served.

**The overshoot bound.** A router sees the other routers' takings at most one interval plus one
round trip late, so a limit is exceeded by at most what the *other* routers admit in that time:
with N routers, at most ``(N - 1) x (interval + round trip) x`` the limit's rate for rates, and for
a budget at most what the other routers admit in that time (plus, for money, what the requests in
flight cost, as everywhere). ``docs/access.md`` states it.

Failure behaviour matches :mod:`inferscale.router.limits_redis`: a failed sync marks the limits
degraded (logged once, gauge, ``/readyz`` body) and the view keeps counting on its own; what was
taken meanwhile stays pending and reaches Redis with the first sync that succeeds, so nothing is
lost. Money and team budgets fail closed (503) while Redis is unreachable, and every budget does
with ``budgets_during_outage: refuse``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from inferscale.router.limits import (
    Charge,
    LocalLimiter,
    Policy,
    Verdict,
    counter_id,
    micro_usd,
)
from inferscale.router.limits_redis import (
    BUCKET_TTL_SECONDS,
    OutagePolicy,
    outage_metric_lines,
    outage_reason,
    read_counters,
)

log = logging.getLogger("inferscale.router")

# KEYS: rpm bucket, tpm bucket, the client's routers (a sorted set), then budget counters.
# ARGV: rpm, tpm (0: none), requests taken, tokens taken, bucket ttl, this router's id, then per
# counter: what was taken (may be negative: a refund), its ttl.
# Returns {rpm level, tpm level (text), routers that synced this client within the last
# second, counter values...} after applying them.
SYNC_SCRIPT: Final = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function take(key, cap, n)
  if cap <= 0 then return '0' end
  local v = redis.call('HMGET', key, 't', 's')
  local level, stamp = tonumber(v[1]), tonumber(v[2])
  if level == nil then level = cap end
  if stamp == nil then stamp = now end
  level = level + math.max(0, now - stamp) * cap / 60
  if level > cap then level = cap end
  level = level - n
  redis.call('HSET', key, 't', tostring(level), 's', tostring(now))
  redis.call('EXPIRE', key, ARGV[5])
  return tostring(level)
end
redis.call('ZADD', KEYS[3], now, ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 1)
redis.call('EXPIRE', KEYS[3], 2)
local out = {take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[3])),
             take(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[4])),
             redis.call('ZCARD', KEYS[3])}
for i = 4, #KEYS do
  local a = 7 + (i - 4) * 2
  out[i] = redis.call('INCRBY', KEYS[i], ARGV[a])
  redis.call('EXPIRE', KEYS[i], ARGV[a + 1])
end
return out
"""

SYNC_INTERVAL_SECONDS: Final = 0.005
"""How often takings go to Redis and the shared levels come back (the default)."""


@dataclass(slots=True)
class _Pending:
    """What a client took on this router since the last sync."""

    requests: int = 0
    tokens: int = 0
    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    """(holder, counter id) -> tokens or micro-dollars."""


class BatchedLimiter:
    """Shared limits decided locally and reconciled with Redis every ``interval`` seconds."""

    def __init__(
        self,
        client: Any,
        view: LocalLimiter,
        *,
        prefix: str = "inferscale:",
        interval: float = SYNC_INTERVAL_SECONDS,
        retry_seconds: float = 1.0,
        outage: OutagePolicy = "local",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client`` is a ``redis.asyncio.Redis``; ``view`` decides between syncs."""
        import redis.exceptions

        self.client = client
        self.view = view
        self.prefix = prefix
        self.interval = interval
        self.stale_seconds = 2 * interval
        self.retry_seconds = retry_seconds
        self.outage = outage
        self.monotonic = monotonic
        self.errors_caught: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self.noscript: type[BaseException] = redis.exceptions.NoScriptError
        self.sha = hashlib.sha1(SYNC_SCRIPT.encode()).hexdigest()
        self.id = uuid.uuid4().hex[:16]
        """This router in the clients' sets of routers (a restarted one is a new one)."""
        self.pending: dict[str, _Pending] = {}
        self.policies: dict[str, Policy] = {}
        """The policy each pending client was last admitted under (its limits for the sync)."""
        self.synced_at: dict[str, float] = {}
        """Client -> monotonic time of its last successful sync. Bounded by the clients."""
        self.sync_task: asyncio.Task[None] | None = None
        self.waiters: list[asyncio.Future[None]] = []
        """Admissions waiting for a sync of a stale client."""
        self.down_since: float | None = None
        self.next_try = 0.0
        self.last_error = ""
        self.failures = 0
        self.syncs = 0
        """Syncs sent (a counter metric: one per interval under load, not one per request)."""

    # -- admission ------------------------------------------------------------------------

    async def admit(self, policy: Policy, estimate: int) -> tuple[Verdict, Charge | None]:
        """Decide from the view; sync first when the view of this client is stale."""
        client = policy.client
        if self.down_since is None:
            synced = self.synced_at.get(client)
            if synced is None or self.monotonic() - synced > self.stale_seconds:
                self.policies[client] = policy
                self.pending.setdefault(client, _Pending())
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self.waiters.append(future)
                self._schedule(0.0)
                await future
        refuse = policy.extra or (self.outage == "refuse" and policy.budgeted)
        if refuse and self.down_since is not None:
            # The refusal is the probe too: a sync of this client is due (it tries Redis once
            # next_try has passed), or a router whose clients all have money or team budgets
            # would never try Redis again and refuse them for good after one slow reply.
            self.policies[client] = policy
            self.pending.setdefault(client, _Pending())
            self._schedule(self.interval)
            return Verdict(False, "unavailable", self.retry_seconds, 0), None
        verdict, charge = self.view.admit(policy, estimate)
        if charge is None:
            return verdict, charge
        pending = self.pending.get(client)
        if pending is None:
            pending = self.pending[client] = _Pending()
        self.policies[client] = policy
        if policy.requests_per_minute is not None:
            pending.requests += 1
        if policy.tokens_per_minute is not None:
            pending.tokens += charge.tokens
        for window in (charge.day, charge.month):
            if window is not None:
                _add(pending.counters, (client, window), charge.tokens)
        if charge.windows is not None:
            for budget in policy.extra:
                if not budget.money:
                    counter = counter_id(charge.windows[budget.month], False)
                    _add(pending.counters, (budget.holder, counter), charge.tokens)
        self._schedule(self.interval)
        return verdict, charge

    def settle(
        self, policy: Policy, charge: Charge, used: int | None, failed: bool, usd: float = 0.0
    ) -> None:
        """Correct the view now and the shared state with the next sync."""
        delta = self.view.settle(policy, charge, used, failed, usd)
        micro = micro_usd(usd) if usd > 0 else 0
        if not delta and not micro:
            return
        pending = self.pending.get(charge.client)
        if pending is None:
            pending = self.pending[charge.client] = _Pending()
        self.policies.setdefault(charge.client, policy)
        if policy.tokens_per_minute is not None:
            pending.tokens += delta
        for window in (charge.day, charge.month):
            if window is not None and delta:
                _add(pending.counters, (charge.client, window), delta)
        if charge.windows is not None:
            for budget in policy.extra:
                amount = micro if budget.money else delta
                if amount:
                    counter = counter_id(charge.windows[budget.month], budget.money)
                    _add(pending.counters, (budget.holder, counter), amount)
        self._schedule(self.interval)

    # -- syncing --------------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        if self.sync_task is None:
            self.sync_task = asyncio.get_running_loop().create_task(self._sync_after(delay))

    async def _sync_after(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            await self._sync()
        finally:
            self.sync_task = None
            waiters, self.waiters = self.waiters, []
            for future in waiters:
                if not future.done():
                    future.set_result(None)
            if self.pending and self.down_since is None:
                self._schedule(self.interval)

    async def _sync(self) -> None:
        if self.down_since is not None and self.monotonic() < self.next_try:
            return
        batch, self.pending = self.pending, {}
        at = self.view.calendar.at(self.view.wall())
        day_ttl, month_ttl = int(at.day_left) + 3600, int(at.month_left) + 86_400
        calls: list[tuple[str, list[tuple[str, str]], list[str], list[Any]]] = []
        for client, taken in batch.items():
            policy = self.policies.get(client) or Policy(client)
            counters = dict.fromkeys(_counters(policy, at.day, at.month), 0)
            counters.update(taken.counters)
            keys = [self._key(client, "rpm"), self._key(client, "tpm"), self._key(client, "r")]
            keys += [self._key(holder, f"b:{c}") for holder, c in counters]
            args: list[Any] = [
                policy.requests_per_minute or 0,
                policy.tokens_per_minute or 0,
                taken.requests,
                taken.tokens,
                BUCKET_TTL_SECONDS,
                self.id,
            ]
            for (_, counter), amount in counters.items():
                args += [amount, month_ttl if counter.rstrip("$") == at.month else day_ttl]
            calls.append((client, list(counters), keys, args))
        try:
            replies = await self._evalsha_all([(keys, args) for _, _, keys, args in calls])
            failed = next((r for r in replies if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
        except self.errors_caught as error:
            self._failed(error)
            for client, taken in batch.items():  # taken again with the next sync
                _merge(self.pending.setdefault(client, _Pending()), taken)
            return
        self.syncs += 1
        if self.down_since is not None:
            log.info("Redis reachable again: limits are shared again")
            self.down_since, self.last_error = None, ""
        now = self.monotonic()
        for (client, names, _, _), reply in zip(calls, replies, strict=True):
            self._apply(client, names, reply, now)

    def _apply(
        self, client: str, counters: list[tuple[str, str]], reply: list[Any], now: float
    ) -> None:
        """Overwrite the view of ``client`` with this router's share of the shared levels.

        Of what is left of each limit, this router may take ``1 / routers`` (the routers that
        synced the client within the last second) before its next sync, so routers that decide
        from the same snapshot cannot together take more than is left.
        """
        since = self.pending.get(client) or _Pending()
        policy = self.policies.get(client) or Policy(client)
        self.synced_at[client] = now
        rpm_level, tpm_level, routers = float(reply[0]), float(reply[1]), max(1, int(reply[2]))
        if policy.requests_per_minute is not None:
            level = _share(rpm_level, routers)
            self.view.set_bucket(client, False, level - since.requests, now)
        if policy.tokens_per_minute is not None:
            self.view.set_bucket(client, True, _share(tpm_level, routers) - since.tokens, now)
        limits = _limits(policy)
        for (holder, counter), value in zip(counters, reply[3:], strict=True):
            own = since.counters.get((holder, counter), 0)
            window = counter.rstrip("$")
            limit = limits.get((holder, _window_kind(window), counter.endswith("$")))
            if limit is not None and routers > 1 and value < limit:
                value = limit - (limit - int(value)) // routers  # this router's share of the rest
            self.view.set_counter(holder, counter, int(value), own)

    async def _evalsha_all(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, self.noscript) for r in replies):
                await self.client.script_load(SYNC_SCRIPT)
                continue
            return replies
        return replies

    def _key(self, holder: str, suffix: str) -> str:
        return f"{self.prefix}{{{holder}}}:{suffix}"

    async def read_counters(self, counters: list[tuple[str, str]]) -> list[int]:
        """The shared budget counters as of the last sync (:func:`read_counters`)."""
        return await read_counters(self.client, self._key, counters)

    # -- health ---------------------------------------------------------------------------

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        self.next_try = self.monotonic() + self.retry_seconds
        self.last_error = f"{type(error).__name__}: {error}"[:300]
        if self.down_since is None:
            self.down_since = self.view.wall()
            log.warning(
                "Redis unreachable (%s): limits are enforced by this router alone until it is "
                "back; money and team budgets are refused",
                self.last_error,
            )
        # No timer: every admission schedules a sync, which tries Redis again after next_try.

    def degraded(self) -> str | None:
        """Why limits are not shared now, or ``None`` when they are."""
        return outage_reason(self.down_since, self.last_error)

    def metric_lines(self) -> Iterable[str]:
        """The degradation gauge, the failure counter and the syncs sent."""
        yield from outage_metric_lines(self.down_since, self.failures)
        yield "# HELP inferscale_router_limits_syncs_total Batched syncs of limits with Redis."
        yield "# TYPE inferscale_router_limits_syncs_total counter"
        yield f"inferscale_router_limits_syncs_total {self.syncs}"

    async def close(self) -> None:
        """Send what is pending now (bounded), then close the connection pool."""
        if self.sync_task is not None:
            self.sync_task.cancel()
        if self.pending and self.down_since is None:
            # _sync catches Redis's errors itself; what it cannot send dies with this process.
            await asyncio.wait([asyncio.ensure_future(self._sync())], timeout=2.0)
        await self.client.aclose()


def _add(counters: dict[tuple[str, str], int], key: tuple[str, str], amount: int) -> None:
    counters[key] = counters.get(key, 0) + amount


def _merge(into: _Pending, taken: _Pending) -> None:
    into.requests += taken.requests
    into.tokens += taken.tokens
    for key, amount in taken.counters.items():
        _add(into.counters, key, amount)


def _share(level: float, routers: int) -> float:
    """This router's share of a bucket's ``level`` (a debt below zero is everyone's)."""
    return level / routers if level > 0 else level


def _window_kind(window: str) -> str:
    """``day`` for ``YYYY-MM-DD``, ``month`` for ``YYYY-MM``."""
    return "day" if len(window) == 10 else "month"


def _limits(policy: Policy) -> dict[tuple[str, str, bool], int]:
    """(holder, ``day`` or ``month``, money) -> limit, for each budget of ``policy``."""
    out: dict[tuple[str, str, bool], int] = {}
    if policy.tokens_per_day is not None:
        out[(policy.client, "day", False)] = policy.tokens_per_day
    if policy.tokens_per_month is not None:
        out[(policy.client, "month", False)] = policy.tokens_per_month
    for budget in policy.extra:
        out[(budget.holder, "month" if budget.month else "day", budget.money)] = budget.limit
    return out


def _counters(policy: Policy, day: str, month: str) -> list[tuple[str, str]]:
    """Every budget counter of ``policy`` in the current windows (read on each sync)."""
    client = policy.client
    out = []
    if policy.tokens_per_day is not None:
        out.append((client, day))
    if policy.tokens_per_month is not None:
        out.append((client, month))
    for budget in policy.extra:
        out.append((budget.holder, counter_id(month if budget.month else day, budget.money)))
    return out
