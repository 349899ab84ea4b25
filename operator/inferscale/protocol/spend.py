"""Spend windows and reports: what routers and the operator tell each other about money.

Each router prices provider answers into per-route UTC hour and day windows and reports them
(``GET /admin/v1/spend``: :class:`SpendReport`); the operator sums every router's report and
sends each the others' share (``PUT /admin/v1/spend``: :class:`ElsewhereSpend`). Windows are
UTC clock hours and days: a window starts at a multiple of :data:`HOUR` or :data:`DAY`
seconds since the epoch (:func:`window_start`). The router's ledger is
``inferscale.router.spend``.

Pure: no I/O; callers pass the wall-clock time.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field

from inferscale.api.meta import ApiModel

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
    keys: dict[str, str] = Field(default_factory=dict, max_length=64)
    """For a provider with several keys: each key's id and its state on this router (``ok``,
    ``revoked`` after a 401/403, ``backing_off`` after a 429)."""


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
