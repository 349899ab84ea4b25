"""Per-client rate limits and token budgets: the rules, and the in-process implementation.

Rates (requests and tokens per minute) are **token buckets**: a bucket holds up to one minute's
allowance and refills continuously at the limit per minute, so a client may burst a minute's
worth and then runs at the sustained rate. Compared with the alternatives: a fixed per-minute
window lets twice the limit through around a window edge and makes everyone retry at the same
second; a sliding log is exact but stores every request; a bucket is two numbers per client,
exact about the sustained rate, and tells a refused client precisely when it may retry
(``Retry-After``), which is what OpenAI's own limits do.

Tokens are known only when a response ends, so the token bucket runs on credit: a request is
admitted when the bucket holds its *estimate* (body bytes / 4 plus ``max_tokens``, at most a
full bucket so no request waits forever), the estimate is taken at once, and :meth:`settle`
corrects it with the real ``usage`` (the bucket may go below zero: the next requests wait until
it refills). A request that failed gets its estimate back; one whose usage is unknown (a stream
without ``include_usage``) keeps the estimate charged.

Budgets (tokens per UTC day and calendar month) are plain counters per window: a request is
admitted while the window's count is below the budget, takes its estimate, and is settled the
same way, so a budget is overshot by at most the requests in flight when it runs out.

Everything here is pure and synchronous: the clocks are passed in. The Redis-backed limiter
(:mod:`inferscale.router.limits_redis`) applies the same rules atomically in Redis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

LimitName = Literal["requests", "tokens", "tokens_per_day", "tokens_per_month", "unavailable"]
"""Which limit refused a request (a metric label, and the error's ``type``); ``unavailable``:
the shared store is down and budgets are refused meanwhile (503, not 429)."""

WINDOW_SECONDS: Final = 60.0
"""Rates are per minute: a full bucket refills in this long."""


@dataclass(frozen=True, slots=True)
class Policy:
    """What one client may do; ``None`` means unlimited."""

    client: str
    """``<namespace>/<name>`` of the InferenceClient."""
    allowed_models: frozenset[str] | None = None
    """Served names this client may use; ``None``: every model."""
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    @property
    def limited(self) -> bool:
        """Whether any rate or budget applies (else admission is free)."""
        return (
            self.requests_per_minute is not None
            or self.tokens_per_minute is not None
            or self.tokens_per_day is not None
            or self.tokens_per_month is not None
        )

    @property
    def budgeted(self) -> bool:
        """Whether a token budget applies."""
        return self.tokens_per_day is not None or self.tokens_per_month is not None


@dataclass(frozen=True, slots=True)
class Windows:
    """The budget windows a moment falls in, and how long each has left."""

    day: str
    """``YYYY-MM-DD`` (UTC)."""
    day_left: float
    """Seconds until the next UTC midnight."""
    month: str
    """``YYYY-MM`` (UTC)."""
    month_left: float
    """Seconds until the first of the next month, 00:00 UTC."""


@dataclass(frozen=True, slots=True)
class _Bounds:
    day: str
    day_start: float
    day_end: float
    month: str
    month_end: float


def _bounds(wall: float) -> _Bounds:
    now = datetime.fromtimestamp(wall, UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    next_month = (
        month_start.replace(year=month_start.year + 1, month=1)
        if month_start.month == 12
        else month_start.replace(month=month_start.month + 1)
    )
    start = day_start.timestamp()
    return _Bounds(
        day_start.strftime("%Y-%m-%d"),
        start,
        start + 86_400,
        month_start.strftime("%Y-%m"),
        next_month.timestamp(),
    )


def windows(wall: float) -> Windows:
    """The UTC day and month of the Unix time ``wall``."""
    return Calendar().at(wall)


class Calendar:
    """:func:`windows`, recomputed only when ``wall`` leaves the current day.

    The date arithmetic costs tens of microseconds; a request must not pay it.
    """

    def __init__(self) -> None:
        """Nothing computed yet."""
        self._bounds: _Bounds | None = None

    def at(self, wall: float) -> Windows:
        """The windows of ``wall``."""
        b = self._bounds
        if b is None or not b.day_start <= wall < b.day_end:
            b = self._bounds = _bounds(wall)
        return Windows(b.day, b.day_end - wall, b.month, b.month_end - wall)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up, at least 1 (a client must wait that long)."""
    return str(max(1, math.ceil(seconds - 1e-9)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one admission."""

    allowed: bool
    limit: LimitName | None = None
    """The limit that refused it."""
    retry_after: float = 0.0
    """Seconds until it would be admitted (refused only)."""
    limit_value: int = 0
    """The refusing limit's value, for the error message."""


ALLOWED: Final = Verdict(True)


@dataclass(frozen=True, slots=True)
class Charge:
    """What an admission took, so :meth:`LocalLimiter.settle` can correct it."""

    client: str
    tokens: int
    """Estimate taken from the token bucket and the budgets."""
    day: str | None
    month: str | None
    shared: bool = False
    """Taken in the shared store (Redis), not in this process."""


def bucket_admit(
    tokens: float, stamp: float, now: float, capacity: float, cost: float
) -> tuple[float, float, float]:
    """One token bucket: (tokens left, new stamp, wait).

    ``wait`` is 0 when ``cost`` was taken; otherwise the seconds until the bucket holds it
    (and nothing was taken). ``stamp`` is when ``tokens`` was last computed.
    """
    rate = capacity / WINDOW_SECONDS
    level = min(capacity, tokens + max(0.0, now - stamp) * rate)
    if level >= cost:
        return level - cost, now, 0.0
    return level, now, (cost - level) / rate


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class _ClientState:
    requests: _Bucket | None = None
    tokens: _Bucket | None = None
    budgets: dict[str, int] = field(default_factory=dict)
    """Window id (``YYYY-MM-DD`` or ``YYYY-MM``) -> tokens counted."""


class LocalLimiter:
    """The rules of this module, held in this process (one router's view)."""

    def __init__(self, monotonic: Callable[[], float], wall: Callable[[], float]) -> None:
        """Clocks are injected: ``monotonic`` for rates, ``wall`` (Unix time) for budgets."""
        self.monotonic = monotonic
        self.wall = wall
        self.calendar = Calendar()
        self.clients: dict[str, _ClientState] = {}
        """State per client. Only clients of the credentials get here (a request with an
        unknown key is refused first), so its size is bounded by the InferenceClients."""
        self.shared: dict[tuple[str, str], int] = {}
        """(client, window) -> budget use last read from a shared store (Redis), the floor a
        degraded router counts from, so an outage never restarts a budget at zero."""

    def admit(self, policy: Policy, estimate: int) -> tuple[Verdict, Charge | None]:
        """Check every limit of ``policy``; take the request and its estimate only if all pass."""
        now = self.monotonic()
        state = self.clients.get(policy.client)
        if state is None:
            state = self.clients[policy.client] = _ClientState()
        rpm, tpm = policy.requests_per_minute, policy.tokens_per_minute
        cost = min(estimate, tpm) if tpm is not None else estimate
        # Check all, then take: a request refused by one limit must not use up another.
        requests = tokens = None
        if rpm is not None:
            bucket = state.requests
            requests = (
                bucket_admit(bucket.tokens, bucket.stamp, now, rpm, 1)
                if bucket is not None
                else (rpm - 1.0, now, 0.0)
            )
            if requests[2] > 0:
                return Verdict(False, "requests", requests[2], rpm), None
        if tpm is not None:
            bucket = state.tokens
            tokens = (
                bucket_admit(bucket.tokens, bucket.stamp, now, tpm, cost)
                if bucket is not None
                else bucket_admit(float(tpm), now, now, tpm, cost)
            )
            if tokens[2] > 0:
                return Verdict(False, "tokens", tokens[2], tpm), None
        day = month = None
        if policy.budgeted:
            at = self.calendar.at(self.wall())
            budgets: tuple[tuple[int | None, str, float, LimitName], ...] = (
                (policy.tokens_per_day, at.day, at.day_left, "tokens_per_day"),
                (policy.tokens_per_month, at.month, at.month_left, "tokens_per_month"),
            )
            for budget, window, left_s, name in budgets:
                if budget is not None and self.used(policy.client, state, window) >= budget:
                    return Verdict(False, name, left_s, budget), None
            day = at.day if policy.tokens_per_day is not None else None
            month = at.month if policy.tokens_per_month is not None else None
        if requests is not None:
            if state.requests is None:
                state.requests = _Bucket(requests[0], requests[1])
            else:
                state.requests.tokens, state.requests.stamp = requests[0], requests[1]
        if tokens is not None:
            if state.tokens is None:
                state.tokens = _Bucket(tokens[0], tokens[1])
            else:
                state.tokens.tokens, state.tokens.stamp = tokens[0], tokens[1]
        for taken in (day, month):
            if taken is not None:
                state.budgets[taken] = state.budgets.get(taken, 0) + cost
        self._drop_old_windows(state, day, month)
        return ALLOWED, Charge(policy.client, cost, day, month)

    def used(self, client: str, state: _ClientState | None, window: str) -> int:
        """Tokens counted in ``window``: the shared floor plus this process's own count."""
        own = state.budgets.get(window, 0) if state is not None else 0
        return self.shared.get((client, window), 0) + own

    def settle(self, policy: Policy, charge: Charge, used: int | None, failed: bool) -> int:
        """Correct a charge: the real ``used`` tokens, or a refund if the request ``failed``.

        Returns the correction applied (tokens; negative for a refund).
        """
        if used is not None:
            delta = used - charge.tokens
        elif failed:
            delta = -charge.tokens
        else:
            return 0  # usage unknown: the estimate stays charged
        if delta == 0:
            return 0
        state = self.clients.get(charge.client)
        if state is None:
            state = self.clients[charge.client] = _ClientState()
        if state.tokens is not None and policy.tokens_per_minute is not None:
            state.tokens.tokens = min(float(policy.tokens_per_minute), state.tokens.tokens - delta)
        for window in (charge.day, charge.month):
            if window is not None:
                state.budgets[window] = state.budgets.get(window, 0) + delta
        return delta

    def add_budget_counts(self, counts: dict[tuple[str, str], int]) -> None:
        """Count these again (a hand-over that could not be delivered)."""
        for (client, window), count in counts.items():
            state = self.clients.setdefault(client, _ClientState())
            state.budgets[window] = state.budgets.get(window, 0) + count

    def take_budget_counts(self) -> dict[tuple[str, str], int]:
        """Hand over (and forget) every budget count: what a recovered shared store adds."""
        out = {
            (client, window): count
            for client, state in self.clients.items()
            for window, count in state.budgets.items()
            if count
        }
        for state in self.clients.values():
            state.budgets.clear()
        return out

    def _drop_old_windows(self, state: _ClientState, day: str | None, month: str | None) -> None:
        if len(state.budgets) > 2:
            keep = {day, month}
            for window in [w for w in state.budgets if w not in keep]:
                del state.budgets[window]
