"""The routers' metrics as ``inferscale top`` shows them: summed snapshots and what changed.

Pure: exposition text in (from any number of router pods), per-model gauges, TTFT quantiles
between two snapshots and counter rates out. The metric names are the router's
(``router/metrics.py``); a unit test renders the router's own metrics and reads them back with
these, so a rename there fails here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from inferscale.loadtest.promtext import (
    Sample,
    histogram_buckets,
    histogram_quantile,
    parse_samples,
    sum_by,
)

IN_FLIGHT = "inferscale_router_in_flight"
HELD = "inferscale_router_held_requests"
TTFT = "inferscale_router_time_to_first_token_seconds"
REQUESTS = "inferscale_router_requests_total"
SPILLOVER = "inferscale_router_spillover_total"
"""Requests sent to spillover backends, per model: read when the router exports it."""


@dataclass
class RouterSnapshot:
    """The routers' metrics at one moment, summed over every router scraped, by model label."""

    at: float
    in_flight: dict[str, float] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)
    ttft_buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    spillover: dict[str, float] = field(default_factory=dict)
    requests: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    """Why a router could not be read (one entry per router that failed)."""
    has_spillover: bool = False
    """Whether any router exports the spillover counter."""


def router_snapshot(texts: Iterable[str], at: float, errors: Sequence[str] = ()) -> RouterSnapshot:
    """Sum the expositions of several routers into one snapshot."""
    samples: list[Sample] = []
    for text in texts:
        samples.extend(parse_samples(text))
    return RouterSnapshot(
        at=at,
        in_flight=sum_by(samples, IN_FLIGHT, "model"),
        held=sum_by(samples, HELD, "model"),
        ttft_buckets=histogram_buckets(samples, TTFT, "model"),
        spillover=sum_by(samples, SPILLOVER, "model"),
        requests=sum_by(samples, REQUESTS, "model"),
        errors=list(errors),
        has_spillover=any(s.name == SPILLOVER for s in samples),
    )


def ttft_quantiles(
    newer: RouterSnapshot, older: RouterSnapshot | None, model: str
) -> tuple[float | None, float | None]:
    """(p50, p95) of the TTFT observed between two snapshots.

    Since the routers started when ``older`` is None; (None, None) when no stream started in
    between.
    """
    now = newer.ttft_buckets.get(model)
    if not now:
        return None, None
    before = older.ttft_buckets.get(model, {}) if older is not None else {}
    # A counter that went down means a router restarted: use its counts since then.
    delta = [(le, n - before.get(le, 0.0)) for le, n in now.items()]
    if any(n < 0 for _, n in delta):
        delta = list(now.items())
    return histogram_quantile(0.5, delta), histogram_quantile(0.95, delta)


def counter_rate(
    newer: RouterSnapshot, older: RouterSnapshot | None, table: str, model: str
) -> float | None:
    """Per-second increase of a per-model counter (``requests`` or ``spillover``)."""
    if older is None or newer.at <= older.at:
        return None
    counts: dict[str, float] = getattr(newer, table)
    now = counts.get(model)
    if now is None:
        return None
    before: float = getattr(older, table).get(model, 0.0)
    return max(now - before, 0.0) / (newer.at - older.at)
