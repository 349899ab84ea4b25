"""Money spent on hosted providers, per route, per UTC hour and day: the router's ledger (pure).

The router prices each provider answer from its ``usage`` (prompt tokens x the input price +
completion tokens x the output price, per million) and adds it to the route's current hour and
day. Caps compare against this router's own spend plus what the other routers spent in the same
windows, which the operator sums from every router (``GET /admin/v1/spend``) and sends back
(``PUT /admin/v1/spend``; the documents are :mod:`inferscale.protocol.spend`). Without the
operator each router still enforces the cap on its own spend, so an outage can at most multiply
the spend by the number of routers, never lift the cap. Spend from an earlier window is
forgotten when the next one starts.

Pure: no I/O; callers pass the wall-clock time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from inferscale.api.v1alpha1.inference_route import SpendCaps
from inferscale.protocol.spend import DAY, HOUR, window_start


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
