"""Limits shared by several router replicas through Redis, with a local fallback.

:class:`SharedLimiter` applies the rules of :mod:`inferscale.router.limits` atomically in Redis:
one Lua script per admission refills and checks every bucket and budget of the client and takes
the request only if all pass (one round trip, no race between replicas), on Redis's own clock
(``TIME``), so replicas whose clocks differ still share one bucket. Admissions that arrive in
the same turn of the event loop go to Redis in one pipeline (one write and one read for all of
them: the system calls, not Redis, are the cost). Settling a request's real usage never delays
its response: corrections are summed per client and window and sent every
``SETTLE_INTERVAL_SECONDS`` in one pipeline.

Keys (all of one client in one hash slot, so a Redis Cluster works too)::

    {prefix}{<namespace>/<name>}:rpm            hash: tokens, stamp    (expires when full)
    {prefix}{<namespace>/<name>}:tpm            hash: tokens, stamp
    {prefix}{<namespace>/<name>}:b:YYYY-MM-DD   integer: tokens of that UTC day
    {prefix}{<namespace>/<name>}:b:YYYY-MM      integer: tokens of that month

Failure behaviour: when Redis does not answer (refused, timed out, an error reply), the router
keeps serving and enforces the same limits **in its own process** (each replica on its own, so
together they admit up to replicas x the rates) and reports it: the gauge
``inferscale_router_limits_degraded`` is 1, ``/readyz`` says so in its body (still 200: the
router must keep serving), and one warning is logged per outage. Budgets never restart at zero:
each replica counts from the shared figure it last read for that client and window plus what it
admitted since, and adds what it counted during the outage to Redis when Redis is back. With
``budgets_during_outage: refuse`` a client that has a budget is refused (503, ``Retry-After``)
instead until Redis answers again. Redis is retried at most once per ``retry_seconds``, so an
outage costs no request a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final, Literal

from inferscale.router.limits import (
    ALLOWED,
    Charge,
    CountersUnavailable,
    LimitName,
    LocalLimiter,
    Policy,
    Verdict,
    counter_id,
    micro_usd,
    token_correction,
)

log = logging.getLogger("inferscale.router")

OutagePolicy = Literal["local", "refuse"]

# KEYS: rpm bucket, tpm bucket, day counter, month counter, then one counter per extra budget.
# ARGV: rpm, tpm, day budget, month budget (0: none), cost, day ttl, month ttl (s), bucket ttl,
# then per extra budget: its limit, what to take now (the cost, or 0 for money), its ttl.
# Returns {admitted, which (1 rpm, 2 tpm, 3 day, 4 month, 4+i extra i), wait seconds (text),
# day, month}.
ADMIT_SCRIPT: Final = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local day_budget, month_budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local function level(key, cap)
  local v = redis.call('HMGET', key, 't', 's')
  local tokens, stamp = tonumber(v[1]), tonumber(v[2])
  if tokens == nil then return cap end
  if stamp == nil then stamp = now end
  local l = tokens + math.max(0, now - stamp) * cap / 60
  if l > cap then l = cap end
  return l
end
local rl, tl = 0, 0
if rpm > 0 then
  rl = level(KEYS[1], rpm)
  if rl < 1 then return {0, 1, tostring((1 - rl) * 60 / rpm), 0, 0} end
end
if tpm > 0 then
  if cost > tpm then cost = tpm end
  tl = level(KEYS[2], tpm)
  if tl < cost then return {0, 2, tostring((cost - tl) * 60 / tpm), 0, 0} end
end
local day, month = 0, 0
if day_budget > 0 then
  day = tonumber(redis.call('GET', KEYS[3]) or '0')
  if day >= day_budget then return {0, 3, '0', day, 0} end
end
if month_budget > 0 then
  month = tonumber(redis.call('GET', KEYS[4]) or '0')
  if month >= month_budget then return {0, 4, '0', day, month} end
end
for i = 5, #KEYS do
  local a = 9 + (i - 5) * 3
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[a]) then
    return {0, i, '0', day, month}
  end
end
for i = 5, #KEYS do
  local a = 9 + (i - 5) * 3
  local take = tonumber(ARGV[a + 1])
  redis.call('INCRBY', KEYS[i], take)
  redis.call('EXPIRE', KEYS[i], ARGV[a + 2])
end
if rpm > 0 then
  redis.call('HSET', KEYS[1], 't', tostring(rl - 1), 's', tostring(now))
  redis.call('EXPIRE', KEYS[1], ARGV[8])
end
if tpm > 0 then
  redis.call('HSET', KEYS[2], 't', tostring(tl - cost), 's', tostring(now))
  redis.call('EXPIRE', KEYS[2], ARGV[8])
end
if day_budget > 0 then
  day = redis.call('INCRBY', KEYS[3], cost)
  redis.call('EXPIRE', KEYS[3], ARGV[6])
end
if month_budget > 0 then
  month = redis.call('INCRBY', KEYS[4], cost)
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end
return {1, 0, '0', day, month}
"""

# KEYS: tpm bucket, day counter, month counter. ARGV: delta tokens, then 1/0 for each key.
SETTLE_SCRIPT: Final = """
local d = tonumber(ARGV[1])
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[1], 't', -d)
end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCRBY', KEYS[2], d) end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], d) end
return 1
"""

# KEYS: one budget counter. ARGV: the correction. Only a counter that exists (it was created,
# with its TTL, when the request was admitted) is corrected: none is left without a TTL.
COUNT_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBY', KEYS[1], ARGV[1]) end
return 1
"""

_WHICH: Final[dict[int, LimitName]] = {
    1: "requests",
    2: "tokens",
    3: "tokens_per_day",
    4: "tokens_per_month",
}

BUCKET_TTL_SECONDS: Final = 120
"""A bucket untouched this long is full again; Redis may forget it."""

SETTLE_INTERVAL_SECONDS: Final = 0.02
"""How long usage corrections are summed before they go to Redis together."""

_SettleKey = tuple[str, bool, str | None, str | None]
"""(client, has a token rate, day window, month window): corrections summed under one key."""


def outage_reason(down_since: float | None, last_error: str) -> str | None:
    """Why limits are not shared now (Redis unreachable since ``down_since``), or ``None``.

    Shared by the per-request and the batched Redis limiters: one wording in /readyz and logs.
    """
    if down_since is None:
        return None
    since = datetime.fromtimestamp(down_since, UTC).isoformat(timespec="seconds")
    return f"limits are local: Redis unreachable since {since} ({last_error})"


def outage_metric_lines(down_since: float | None, failures: int) -> Iterable[str]:
    """The degradation gauge and the failure counter, as both Redis limiters export them."""
    yield "# HELP inferscale_router_limits_degraded 1 while Redis is unreachable."
    yield "# TYPE inferscale_router_limits_degraded gauge"
    yield f"inferscale_router_limits_degraded {int(down_since is not None)}"
    yield "# HELP inferscale_router_limits_redis_errors_total Failed Redis calls."
    yield "# TYPE inferscale_router_limits_redis_errors_total counter"
    yield f"inferscale_router_limits_redis_errors_total {failures}"


async def read_counters(
    client: Any, key: Callable[[str, str], str], counters: list[tuple[str, str]]
) -> list[int]:
    """The budget counters ``(holder, counter id)`` as Redis holds them (0: none yet).

    One pipelined round trip of ``GET`` (not ``MGET``: a team's keys and a client's live in
    different hash slots). Raises :class:`CountersUnavailable` when Redis fails; a value that
    is no integer reads as 0.
    """
    import redis.exceptions

    pipe = client.pipeline(transaction=False)
    for holder, counter in counters:
        pipe.get(key(holder, f"b:{counter}"))
    try:
        values: list[Any] = await pipe.execute()
    except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
        raise CountersUnavailable(f"{type(error).__name__}: {error}"[:300]) from error
    out = []
    for value in values:
        try:
            out.append(max(0, int(value)) if value is not None else 0)
        except (TypeError, ValueError):
            out.append(0)
    return out


class SharedLimiter:
    """Limits in Redis, and this process's :class:`LocalLimiter` while Redis is unreachable."""

    def __init__(
        self,
        client: Any,
        local: LocalLimiter,
        *,
        prefix: str = "inferscale:",
        retry_seconds: float = 1.0,
        outage: OutagePolicy = "local",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client`` is a ``redis.asyncio.Redis``; the errors it raises are ``redis``'s."""
        import redis.exceptions

        self.client = client
        self.local = local
        self.prefix = prefix
        self.retry_seconds = retry_seconds
        self.outage = outage
        self.monotonic = monotonic
        self.errors_caught: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self.admit_sha = hashlib.sha1(ADMIT_SCRIPT.encode()).hexdigest()
        self.settle_sha = hashlib.sha1(SETTLE_SCRIPT.encode()).hexdigest()
        self.count_sha = hashlib.sha1(COUNT_SCRIPT.encode()).hexdigest()
        self.noscript: type[BaseException] = redis.exceptions.NoScriptError
        self.waiting: list[tuple[list[str], list[int], asyncio.Future[list[Any]]]] = []
        """Admissions of this loop turn, sent together."""
        self.settles: dict[_SettleKey, int] = {}
        """Usage corrections not sent yet."""
        self.extra_settles: dict[tuple[str, str], int] = {}
        """Corrections of money and team budgets not sent yet: (holder, counter) -> amount."""
        self.unsent: dict[tuple[str, str], int] = {}
        """The same corrections by (client, budget window): a budget figure read from Redis
        does not include them yet, so the floor an outage starts from adds them."""
        self.settle_task: asyncio.Task[None] | None = None
        self.down_since: float | None = None
        """Wall time Redis stopped answering (``None``: it answers)."""
        self.next_try = 0.0
        self.last_error = ""
        self.failures = 0
        """Redis calls that failed, all told (a counter metric)."""
        self.tasks: set[asyncio.Task[None]] = set()

    # -- keys -----------------------------------------------------------------------------

    def _key(self, client: str, suffix: str) -> str:
        return f"{self.prefix}{{{client}}}:{suffix}"

    async def read_counters(self, counters: list[tuple[str, str]]) -> list[int]:
        """The shared budget counters (:func:`read_counters`); raises Redis's errors."""
        return await read_counters(self.client, self._key, counters)

    # -- admission ------------------------------------------------------------------------

    async def admit(self, policy: Policy, estimate: int) -> tuple[Verdict, Charge | None]:
        """Admit against Redis; against the local limiter while Redis is down."""
        if self.down_since is not None and self.monotonic() < self.next_try:
            return self._local(policy, estimate)
        at = self.local.calendar.at(self.local.wall())
        cost = min(estimate, policy.tokens_per_minute or estimate)
        keys = [
            self._key(policy.client, "rpm"),
            self._key(policy.client, "tpm"),
            self._key(policy.client, f"b:{at.day}"),
            self._key(policy.client, f"b:{at.month}"),
        ]
        day_ttl, month_ttl = int(at.day_left) + 3600, int(at.month_left) + 86_400
        args = [
            policy.requests_per_minute or 0,
            policy.tokens_per_minute or 0,
            policy.tokens_per_day or 0,
            policy.tokens_per_month or 0,
            cost,
            day_ttl,
            month_ttl,
            BUCKET_TTL_SECONDS,
        ]
        for budget in policy.extra:
            window = at.month if budget.month else at.day
            keys.append(self._key(budget.holder, f"b:{counter_id(window, budget.money)}"))
            take = 0 if budget.money else cost  # money is known when the answer ends
            args += [budget.limit, take, month_ttl if budget.month else day_ttl]
        try:
            reply = await self._admit_batched(keys, args)
            if self.down_since is not None:
                await self._recovered()
        except self.errors_caught as error:
            self._failed(error)
            return self._local(policy, estimate)
        admitted, which, wait, day, month = reply
        client = policy.client
        if policy.tokens_per_day is not None:
            self.local.shared[(client, at.day)] = int(day) + self.unsent.get((client, at.day), 0)
        if policy.tokens_per_month is not None:
            floor = int(month) + self.unsent.get((client, at.month), 0)
            self.local.shared[(client, at.month)] = floor
        if admitted:
            day_id = at.day if policy.tokens_per_day is not None else None
            month_id = at.month if policy.tokens_per_month is not None else None
            windows = (at.day, at.month) if policy.extra else None
            return ALLOWED, Charge(client, cost, day_id, month_id, shared=True, windows=windows)
        if int(which) > len(_WHICH):
            budget = policy.extra[int(which) - len(_WHICH) - 1]
            left = at.month_left if budget.month else at.day_left
            return Verdict(False, budget.name, left, budget.limit), None
        name = _WHICH[int(which)]
        values = {
            "requests": policy.requests_per_minute,
            "tokens": policy.tokens_per_minute,
            "tokens_per_day": policy.tokens_per_day,
            "tokens_per_month": policy.tokens_per_month,
        }
        retry = float(wait)
        if name == "tokens_per_day":
            retry = at.day_left
        elif name == "tokens_per_month":
            retry = at.month_left
        return Verdict(False, name, retry, values[name] or 0), None

    async def _admit_batched(self, keys: list[str], args: list[int]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting.append((keys, args, future))
        if len(self.waiting) == 1:
            # The first of this turn schedules the send; the others of the turn join it.
            self._track(asyncio.get_running_loop().create_task(self._send_admissions()))
        return await future

    async def _send_admissions(self) -> None:
        batch, self.waiting = self.waiting, []
        try:
            replies = await self._evalsha_all(
                self.admit_sha, ADMIT_SCRIPT, [(keys, args) for keys, args, _ in batch]
            )
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # handed to every waiter, which falls back or reports
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its request went away meanwhile
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _evalsha_all(
        self, sha: str, script: str, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """Run ``script`` once per call in one pipeline; load it once if Redis lacks it."""
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, self.noscript) for r in replies):
                await self.client.script_load(script)  # a restarted Redis has no scripts
                continue
            return replies
        return replies

    def _local(self, policy: Policy, estimate: int) -> tuple[Verdict, Charge | None]:
        # Money and team budgets fail closed: a team spends through many clients and routers,
        # so no router's own count bounds it.
        if policy.extra or (self.outage == "refuse" and policy.budgeted):
            return Verdict(False, "unavailable", self.retry_seconds, 0), None
        return self.local.admit(policy, estimate)

    # -- settling -------------------------------------------------------------------------

    def settle(
        self, policy: Policy, charge: Charge, used: int | None, failed: bool, usd: float = 0.0
    ) -> None:
        """Correct a charge with real usage and cost (a shared one goes with the next batch)."""
        if not charge.shared:
            self.local.settle(policy, charge, used, failed, usd)
            return
        delta = token_correction(charge, used, failed)
        if charge.windows is not None:
            self._settle_extra(policy, charge.windows, delta, micro_usd(usd) if usd > 0 else 0)
        if delta == 0:
            return
        key = (charge.client, policy.tokens_per_minute is not None, charge.day, charge.month)
        self.settles[key] = self.settles.get(key, 0) + delta
        for window in (charge.day, charge.month):
            if window is None:
                continue
            floor = (charge.client, window)
            self.unsent[floor] = self.unsent.get(floor, 0) + delta
            if floor in self.local.shared:
                # The floor an outage would start from: real usage, not the estimate.
                self.local.shared[floor] += delta
        self._schedule_settles()

    def _settle_extra(
        self, policy: Policy, windows: tuple[str, str], tokens: int, micro: int
    ) -> None:
        """Sum corrections of the policy's extra budgets, to send with the next batch."""
        for budget in policy.extra:
            amount = micro if budget.money else tokens
            if amount:
                counter = (budget.holder, counter_id(windows[budget.month], budget.money))
                self.extra_settles[counter] = self.extra_settles.get(counter, 0) + amount
        self._schedule_settles()

    def _schedule_settles(self) -> None:
        if self.settle_task is None and (self.settles or self.extra_settles):
            self.settle_task = asyncio.get_running_loop().create_task(self._send_settles())
            self._track(self.settle_task)

    async def _send_settles(self, delay: float = SETTLE_INTERVAL_SECONDS) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self.settle_task = None
        batch, self.settles, self.unsent = self.settles, {}, {}
        extra, self.extra_settles = self.extra_settles, {}
        if not batch and not extra:
            return
        counted = [
            ([self._key(holder, f"b:{counter}")], [amount])
            for (holder, counter), amount in extra.items()
        ]
        calls = [
            (
                [
                    self._key(client, "tpm"),
                    self._key(client, f"b:{day or '-'}"),
                    self._key(client, f"b:{month or '-'}"),
                ],
                [delta, int(has_tpm), int(day is not None), int(month is not None)],
            )
            for (client, has_tpm, day, month), delta in batch.items()
        ]
        try:
            if self.down_since is not None and self.monotonic() < self.next_try:
                raise ConnectionError("Redis is down")
            replies = await self._evalsha_all(self.settle_sha, SETTLE_SCRIPT, calls)
            replies += await self._evalsha_all(self.count_sha, COUNT_SCRIPT, counted)
            failed = next((r for r in replies if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
        except self.errors_caught as error:
            if self.down_since is None:
                self._failed(error)
            # Counted here instead, and added to Redis with the rest of the outage's counts.
            counts: dict[tuple[str, str], int] = dict(extra)
            for (client, _, day, month), delta in batch.items():
                for window in (day, month):
                    if window is not None:
                        counts[(client, window)] = counts.get((client, window), 0) + delta
            self.local.add_budget_counts(counts)

    def _track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- health ---------------------------------------------------------------------------

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        self.next_try = self.monotonic() + self.retry_seconds
        self.last_error = f"{type(error).__name__}: {error}"[:300]
        if self.down_since is None:
            self.down_since = self.local.wall()
            log.warning(
                "Redis unreachable (%s): limits are enforced by this router alone until it is "
                "back%s",
                self.last_error,
                "; clients with budgets are refused" if self.outage == "refuse" else "",
            )

    async def _recovered(self) -> None:
        counts = self.local.take_budget_counts()
        if counts:
            pipe = self.client.pipeline(transaction=False)
            for (client, window), count in counts.items():
                pipe.incrby(self._key(client, f"b:{window}"), count)
                # A day or month key with no TTL would stay forever: give it the longest.
                pipe.expire(self._key(client, f"b:{window}"), 32 * 86_400, nx=True)
            try:
                await pipe.execute()
            except BaseException:
                self.local.add_budget_counts(counts)  # not delivered: keep counting them here
                raise
        outage = self.local.wall() - (self.down_since or self.local.wall())
        log.info(
            "Redis reachable again after %.1fs: limits are shared again (%d budget counts added)",
            outage,
            len(counts),
        )
        self.down_since = None
        self.last_error = ""

    def degraded(self) -> str | None:
        """Why limits are not shared now, or ``None`` when they are."""
        return outage_reason(self.down_since, self.last_error)

    def metric_lines(self) -> Iterable[str]:
        """Exposition lines for the degradation gauge and the failure counter."""
        return outage_metric_lines(self.down_since, self.failures)

    async def close(self) -> None:
        """Send pending settles now (bounded), then close the connection pool."""
        if self.settle_task is not None:
            self.settle_task.cancel()
        if self.settles or self.extra_settles:
            self._track(asyncio.get_running_loop().create_task(self._send_settles(0)))
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2.0)
        await self.client.aclose()
