"""Money spent on hosted providers, per route, per UTC hour and day (pure).

The router prices each provider answer from its ``usage`` (prompt tokens x the input price +
completion tokens x the output price, per million) and adds it to the route's current hour and
day. Caps compare against this router's own spend plus what the other routers spent in the same
windows, which the operator sums from every router (``GET /admin/v1/spend``) and sends back
(``PUT /admin/v1/spend``). Without the operator each router still enforces the cap on its own
spend, so an outage can at most multiply the spend by the number of routers, never lift the cap.

Windows are UTC clock hours and days: a window starts at a multiple of 3,600 or 86,400 seconds
since the epoch. Spend from an earlier window is forgotten when the next one starts.

Pure: no I/O; callers pass the wall-clock time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from pydantic import Field

from inferscale.api.meta import ApiModel
from inferscale.api.v1alpha1.inference_route import SpendCaps

HOUR: Final = 3600
DAY: Final = 86400


class RouteSpend(ApiModel):
    """Spend of one route in the current hour and day."""

    hour: float = Field(default=0, ge=0)
    day: float = Field(default=0, ge=0)


class ElsewhereSpend(ApiModel):
    """``PUT /admin/v1/spend``: what the other routers spent, per route, in these windows."""

    hour_start: int = Field(ge=0)
    """Start of the hour window (epoch seconds, a multiple of 3600)."""
    day_start: int = Field(ge=0)
    """Start of the day window (epoch seconds, a multiple of 86400)."""
    routes: dict[str, RouteSpend] = Field(default_factory=dict, max_length=100_000)
    """Route id (``<namespace>/<name>``) -> its spend on the other routers."""


class RouteReport(ApiModel):
    """One route in a router's report: its spend here, and when it last spilled over."""

    hour: float = Field(default=0, ge=0)
    """Spent by this router in the current UTC hour."""
    day: float = Field(default=0, ge=0)
    """Spent by this router in the current UTC day."""
    last_spill_at: float | None = Field(default=None, ge=0)
    """Epoch seconds of the last request this router sent to a spillover backend first."""


class ProviderReport(ApiModel):
    """What one router saw of a provider (no key, no request content)."""

    failures: dict[str, int] = Field(default_factory=dict, max_length=64)
    """Failed calls since the router started, by reason (``status_429``, ``auth``, ...)."""
    last_error: str | None = Field(default=None, max_length=2048)
    """The last failure, in words."""
    last_reason: str | None = Field(default=None, max_length=64)
    """The last failure's reason."""
    last_error_at: float | None = Field(default=None, ge=0)
    """Epoch seconds of the last failure."""
    last_ok_at: float | None = Field(default=None, ge=0)
    """Epoch seconds of the last call the provider answered."""
    ejected_until: float | None = Field(default=None, ge=0)
    """Epoch seconds until which the router's circuit breaker skips the provider (``None``:
    the breaker is closed)."""


class SpendReport(ApiModel):
    """``GET /admin/v1/spend``: one router process's spend, spillover and provider health."""

    process: str = Field(min_length=1, max_length=64)
    """Identifies the router process (a restarted router is a new one)."""
    now: float = Field(ge=0)
    """The router's clock when it answered (epoch seconds)."""
    hour_start: int = Field(ge=0)
    """Start of the hour window the spend belongs to."""
    day_start: int = Field(ge=0)
    """Start of the day window the spend belongs to."""
    routes: dict[str, RouteReport] = Field(default_factory=dict, max_length=100_000)
    """Route id -> its spend and spillover on this router."""
    providers: dict[str, ProviderReport] = Field(default_factory=dict, max_length=10_000)
    """Provider id -> what this router saw of it."""


def window_start(now: float, length: int) -> int:
    """Start (epoch seconds) of the window of ``length`` seconds that holds ``now``."""
    return int(now // length) * length


def cost(usage: object, input_price: float, output_price: float) -> float:
    """What ``usage`` (OpenAI's shape) cost at prices per million tokens; 0 when unknown."""
    if not isinstance(usage, dict):
        return 0.0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    total = 0.0
    if isinstance(prompt, int) and not isinstance(prompt, bool) and prompt > 0:
        total += prompt * input_price / 1_000_000
    if isinstance(completion, int) and not isinstance(completion, bool) and completion > 0:
        total += completion * output_price / 1_000_000
    return total


@dataclass
class Windows:
    """Spend in one hour and one day window (starts in epoch seconds)."""

    hour_start: int = 0
    hour: float = 0.0
    day_start: int = 0
    day: float = 0.0

    def roll(self, now: float) -> None:
        """Forget windows that ended before ``now``."""
        hour, day = window_start(now, HOUR), window_start(now, DAY)
        if hour != self.hour_start:
            self.hour_start, self.hour = hour, 0.0
        if day != self.day_start:
            self.day_start, self.day = day, 0.0

    def current(self, now: float) -> tuple[float, float]:
        """(hour, day) spend in the windows that hold ``now`` (0 for a window that ended)."""
        hour = self.hour if self.hour_start == window_start(now, HOUR) else 0.0
        day = self.day if self.day_start == window_start(now, DAY) else 0.0
        return hour, day


@dataclass
class SpendLedger:
    """Per route: this router's spend, and the other routers' as last reported."""

    own: dict[str, Windows] = field(default_factory=dict)
    elsewhere: dict[str, Windows] = field(default_factory=dict)

    def add(self, route: str, amount: float, now: float) -> None:
        """Count ``amount`` spent now on ``route``."""
        if amount <= 0:
            return
        windows = self.own.get(route)
        if windows is None:
            windows = self.own[route] = Windows()
        windows.roll(now)
        windows.hour += amount
        windows.day += amount

    def mine(self, route: str, now: float) -> tuple[float, float]:
        """(hour, day) spent by this router."""
        windows = self.own.get(route)
        return windows.current(now) if windows is not None else (0.0, 0.0)

    def total(self, route: str, now: float) -> tuple[float, float]:
        """(hour, day) spent by every router, as far as this one knows."""
        hour, day = self.mine(route, now)
        other = self.elsewhere.get(route)
        if other is not None:
            other_hour, other_day = other.current(now)
            hour, day = hour + other_hour, day + other_day
        return hour, day

    def set_elsewhere(
        self, hour_start: int, day_start: int, amounts: dict[str, tuple[float, float]]
    ) -> None:
        """Replace the other routers' spend: route -> (hour, day) in the windows given."""
        self.elsewhere = {
            route: Windows(hour_start, max(0.0, hour), day_start, max(0.0, day))
            for route, (hour, day) in amounts.items()
        }

    def capped(self, route: str, caps: SpendCaps, now: float) -> bool:
        """Whether a cap of ``caps`` is reached."""
        if caps.max_per_hour is None and caps.max_per_day is None:
            return False
        hour, day = self.total(route, now)
        return (caps.max_per_hour is not None and hour >= caps.max_per_hour) or (
            caps.max_per_day is not None and day >= caps.max_per_day
        )

    def retry_after(self, route: str, caps: SpendCaps, now: float) -> int:
        """Seconds until the reached cap's window ends (the day's when both are reached)."""
        hour, day = self.total(route, now)
        if caps.max_per_day is not None and day >= caps.max_per_day:
            end = window_start(now, DAY) + DAY
        else:
            end = window_start(now, HOUR) + HOUR
        return max(1, math.ceil(end - now))

    def routes(self) -> list[str]:
        """Every route this router has spent on."""
        return sorted(self.own)
