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

from inferscale.protocol.budgets import TEAM_PREFIX

LimitName = Literal[
    "requests",
    "tokens",
    "tokens_per_day",
    "tokens_per_month",
    "usd_per_day",
    "usd_per_month",
    "team_tokens_per_day",
    "team_tokens_per_month",
    "team_usd_per_day",
    "team_usd_per_month",
    "unavailable",
]
"""Which limit refused a request (a metric label, and the error's ``type``); ``unavailable``:
the shared store is down and budgets are refused meanwhile (503, not 429)."""

MICRO_USD: Final = 1_000_000
"""Money is counted in micro-dollars: integers, so Redis's INCRBY keeps it exact."""


class CountersUnavailable(Exception):
    """The shared store's budget counters cannot be read now (Redis unreachable)."""


def micro_usd(usd: float) -> int:
    """``usd`` in whole micro-dollars (what money counters hold)."""
    return round(usd * MICRO_USD)


@dataclass(frozen=True, slots=True)
class Budget:
    """A budget beyond the client's own token budgets: money, or its team's."""

    holder: str
    """Whose counter: the client id, or ``team:<namespace>/<team>``."""
    money: bool
    """Counted in micro-dollars of provider prices (else in tokens)."""
    month: bool
    """Per calendar month (else per UTC day)."""
    limit: int
    """Tokens, or micro-dollars."""
    name: LimitName


def counter_id(window: str, money: bool) -> str:
    """The counter of a window: ``YYYY-MM-DD`` or ``YYYY-MM``, ``$`` appended for money."""
    return window + "$" if money else window


_EXTRA_NAMES: Final[dict[tuple[bool, bool, bool], LimitName]] = {
    # (team, money, month) -> the limit's name
    (False, True, False): "usd_per_day",
    (False, True, True): "usd_per_month",
    (True, False, False): "team_tokens_per_day",
    (True, False, True): "team_tokens_per_month",
    (True, True, False): "team_usd_per_day",
    (True, True, True): "team_usd_per_month",
}


def extra_budgets(
    client: str,
    team: str,
    usd: tuple[float | None, float | None],
    team_tokens: tuple[int | None, int | None],
    team_usd: tuple[float | None, float | None],
) -> tuple[Budget, ...]:
    """The money budgets of a client and the budgets of its team (each a (day, month) pair)."""
    out: list[Budget] = []
    for month in (False, True):
        usd_limit, tokens_limit, team_usd_limit = usd[month], team_tokens[month], team_usd[month]
        if usd_limit is not None:
            name = _EXTRA_NAMES[(False, True, month)]
            out.append(Budget(client, True, month, micro_usd(usd_limit), name))
        if not team:
            continue
        holder = TEAM_PREFIX + team
        if tokens_limit is not None:
            out.append(
                Budget(holder, False, month, tokens_limit, _EXTRA_NAMES[(True, False, month)])
            )
        if team_usd_limit is not None:
            name = _EXTRA_NAMES[(True, True, month)]
            out.append(Budget(holder, True, month, micro_usd(team_usd_limit), name))
    return tuple(out)


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
    team: str = ""
    """``<namespace>/<team>`` of the client's team; empty: none."""
    extra: tuple[Budget, ...] = ()
    """Money budgets and the team's budgets (:func:`extra_budgets`)."""
    limited: bool = field(init=False, repr=False, compare=False)
    """Whether any rate or budget applies (else admission is free)."""
    budgeted: bool = field(init=False, repr=False, compare=False)
    """Whether a token budget applies."""

    def __post_init__(self) -> None:
        # Computed once per credentials version, read on every request.
        budgeted = (
            self.tokens_per_day is not None or self.tokens_per_month is not None or bool(self.extra)
        )
        limited = (
            budgeted or self.requests_per_minute is not None or self.tokens_per_minute is not None
        )
        object.__setattr__(self, "budgeted", budgeted)
        object.__setattr__(self, "limited", limited)


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
class Bounds:
    """A UTC day and its month, with their ends (Unix time)."""

    day: str
    """``YYYY-MM-DD``."""
    day_start: float
    day_end: float
    month: str
    """``YYYY-MM``."""
    month_end: float


def _bounds(wall: float) -> Bounds:
    now = datetime.fromtimestamp(wall, UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    next_month = (
        month_start.replace(year=month_start.year + 1, month=1)
        if month_start.month == 12
        else month_start.replace(month=month_start.month + 1)
    )
    start = day_start.timestamp()
    return Bounds(
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
        self._bounds: Bounds | None = None

    def at(self, wall: float) -> Windows:
        """The windows of ``wall``."""
        b = self.bounds(wall)
        return Windows(b.day, b.day_end - wall, b.month, b.month_end - wall)

    def bounds(self, wall: float) -> Bounds:
        """The day and month of ``wall`` with their ends: :meth:`at` without an allocation."""
        b = self._bounds
        if b is None or not b.day_start <= wall < b.day_end:
            b = self._bounds = _bounds(wall)
        return b


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


@dataclass(slots=True)
class Charge:
    """What an admission took, so :meth:`LocalLimiter.settle` can correct it.

    Not frozen: one is made per admitted request, and a frozen dataclass pays an
    ``object.__setattr__`` call per field to be built. Nothing changes one after it is made.
    """

    client: str
    tokens: int
    """Estimate taken from the token bucket and the budgets."""
    day: str | None
    month: str | None
    shared: bool = False
    """Taken in the shared store (Redis), not in this process."""
    windows: tuple[str, str] | None = None
    """(day, month) the policy's extra budgets (money, team) were checked in; ``None``: none."""


def token_correction(charge: Charge, used: int | None, failed: bool) -> int:
    """Tokens to add to what ``charge`` took: real usage minus the estimate, or a refund.

    0 when the usage is unknown (the estimate stays charged).
    """
    if used is not None:
        return used - charge.tokens
    return -charge.tokens if failed else 0


def bucket_admit(
    tokens: float, stamp: float, now: float, capacity: float, cost: float
) -> tuple[float, float, float]:
    """One token bucket: (tokens left, new stamp, wait).

    ``wait`` is 0 when ``cost`` was taken; otherwise the seconds until the bucket holds it
    (and nothing was taken). ``stamp`` is when ``tokens`` was last computed.
    """
    rate = capacity / WINDOW_SECONDS
    # min() and max() written out: this runs twice per request of a limited client.
    elapsed = now - stamp
    level = tokens + elapsed * rate if elapsed > 0 else tokens
    if level > capacity:
        level = capacity
    if level >= cost:
        return level - cost, now, 0.0
    return level, now, (cost - level) / rate


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class _ClientState:
    requests: _Bucket | None = None
    tokens: _Bucket | None = None
    budgets: dict[str, int] = field(default_factory=dict)
    """Counter id (``YYYY-MM-DD`` or ``YYYY-MM``, ``$`` appended for money) -> tokens, or
    micro-dollars, counted."""
    day: str = ""
    """The day last counted in: another one means older counters can go."""


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
        degraded router counts from, so an outage never restarts a budget at zero. Only the
        current day's and month's windows are kept (:meth:`set_counter` prunes the others)."""
        self.shared_day = ""
        """The latest day :attr:`shared` holds counters of (``YYYY-MM-DD``)."""

    def admit(self, policy: Policy, estimate: int) -> tuple[Verdict, Charge | None]:
        """Check every limit of ``policy``; take the request and its estimate only if all pass."""
        # Runs on every request of a limited client: one clock read per kind, and no allocation
        # but the Charge (and a new client's state).
        now = self.monotonic()
        client = policy.client
        state = self.clients.get(client)
        if state is None:
            state = self.clients[client] = _ClientState()
        rpm, tpm = policy.requests_per_minute, policy.tokens_per_minute
        cost = estimate if tpm is None or estimate <= tpm else tpm
        # Check all, then take: a request refused by one limit must not use up another.
        requests = tokens = None
        if rpm is not None:
            bucket = state.requests
            if bucket is None:
                requests = (rpm - 1.0, now, 0.0)  # a new client starts with a full bucket
            else:
                requests = bucket_admit(bucket.tokens, bucket.stamp, now, rpm, 1)
                if requests[2] > 0:
                    return Verdict(False, "requests", requests[2], rpm), None
        if tpm is not None:
            bucket = state.tokens
            if bucket is None:
                tokens = bucket_admit(float(tpm), now, now, tpm, cost)
            else:
                tokens = bucket_admit(bucket.tokens, bucket.stamp, now, tpm, cost)
            if tokens[2] > 0:
                return Verdict(False, "tokens", tokens[2], tpm), None
        day = month = None
        budgets = state.budgets
        if policy.budgeted:
            wall = self.wall()
            bounds = self.calendar.bounds(wall)
            per_day, per_month = policy.tokens_per_day, policy.tokens_per_month
            if per_day is not None:
                day = bounds.day
                if self.used(client, state, day) >= per_day:
                    return Verdict(False, "tokens_per_day", bounds.day_end - wall, per_day), None
            if per_month is not None:
                month = bounds.month
                if self.used(client, state, month) >= per_month:
                    left = bounds.month_end - wall
                    return Verdict(False, "tokens_per_month", left, per_month), None
            for budget in policy.extra:
                window = bounds.month if budget.month else bounds.day
                holder = self.clients.get(budget.holder)
                if (
                    self.used(budget.holder, holder, counter_id(window, budget.money))
                    >= budget.limit
                ):
                    left = (bounds.month_end if budget.month else bounds.day_end) - wall
                    return Verdict(False, budget.name, left, budget.limit), None
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
        if day is not None:
            budgets[day] = budgets.get(day, 0) + cost
        if month is not None:
            budgets[month] = budgets.get(month, 0) + cost
        if day is not None and state.day != day:
            self._drop_old_windows(state, day, month)
        if not policy.extra:
            return ALLOWED, Charge(client, cost, day, month)
        windows = (bounds.day, bounds.month)
        self._count_extra(policy, windows, cost, 0)
        return ALLOWED, Charge(client, cost, day, month, windows=windows)

    def _count_extra(
        self, policy: Policy, windows: tuple[str, str], tokens: int, micro: int
    ) -> None:
        """Add ``tokens`` to the policy's extra token budgets, ``micro`` to its money ones."""
        for budget in policy.extra:
            amount = micro if budget.money else tokens
            if not amount:
                continue
            state = self.clients.get(budget.holder)
            if state is None:
                state = self.clients[budget.holder] = _ClientState()
            counter = counter_id(windows[budget.month], budget.money)
            state.budgets[counter] = state.budgets.get(counter, 0) + amount
            if state.day != windows[0]:
                self._drop_old_windows(state, windows[0], windows[1])

    def used(self, client: str, state: _ClientState | None, window: str) -> int:
        """Tokens counted in ``window``: the shared floor plus this process's own count."""
        own = state.budgets.get(window, 0) if state is not None else 0
        shared = self.shared  # empty unless a shared store set floors: skip the key's tuple
        return own + shared.get((client, window), 0) if shared else own

    def settle(
        self, policy: Policy, charge: Charge, used: int | None, failed: bool, usd: float = 0.0
    ) -> int:
        """Correct a charge: the real ``used`` tokens, or a refund if the request ``failed``.

        ``usd`` is what the answer cost, counted against the money budgets. Returns the
        correction applied (tokens; negative for a refund).
        """
        delta = token_correction(charge, used, failed)
        if charge.windows is not None:
            self._count_extra(policy, charge.windows, delta, micro_usd(usd) if usd > 0 else 0)
        if delta == 0:
            return 0
        state = self.clients.get(charge.client)
        if state is None:
            state = self.clients[charge.client] = _ClientState()
        bucket, tpm = state.tokens, policy.tokens_per_minute
        if bucket is not None and tpm is not None:
            level = bucket.tokens - delta
            bucket.tokens = level if level < tpm else float(tpm)  # a refund fills up to full
        budgets = state.budgets
        if charge.day is not None:
            budgets[charge.day] = budgets.get(charge.day, 0) + delta
        if charge.month is not None:
            budgets[charge.month] = budgets.get(charge.month, 0) + delta
        return delta

    def set_bucket(self, client: str, tokens: bool, level: float, stamp: float) -> None:
        """Overwrite a client's request (or ``tokens``) bucket: a shared store's level."""
        state = self.clients.get(client)
        if state is None:
            state = self.clients[client] = _ClientState()
        bucket = state.tokens if tokens else state.requests
        if bucket is None:
            bucket = _Bucket(level, stamp)
            if tokens:
                state.tokens = bucket
            else:
                state.requests = bucket
        bucket.tokens, bucket.stamp = level, stamp

    def set_counter(self, holder: str, counter: str, shared: int, own: int) -> None:
        """Overwrite a budget counter: ``shared`` as the store holds it, ``own`` not sent yet."""
        state = self.clients.get(holder)
        if state is None:
            state = self.clients[holder] = _ClientState()
        state.budgets[counter] = own
        window = counter.rstrip("$")
        if len(window) == 10 and window > self.shared_day:
            self._prune_shared(window)
        if window < self.shared_day[: len(window)]:
            return  # a window already past (a sync that straddled midnight): no admission reads it
        self.shared[(holder, counter)] = shared

    def _prune_shared(self, day: str) -> None:
        """Forget the shared floors of windows before ``day`` and its month (bounded memory)."""
        self.shared_day = day
        month = day[:7]
        for key in [k for k in self.shared if k[1].rstrip("$") not in (day, month)]:
            del self.shared[key]

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
        state.day = day or ""
        keep = {day, month, counter_id(day or "", True), counter_id(month or "", True)}
        for window in [w for w in state.budgets if w not in keep]:
            del state.budgets[window]
