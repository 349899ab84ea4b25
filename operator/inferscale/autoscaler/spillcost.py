"""The cost-aware mode's arithmetic: when spilling is cheaper, and how many replicas to keep.

With a hosted provider to spill to, a burst shorter than a cold start is served either by
replicas that stand through it (and through the quiet between bursts) or by the provider: a
replica asked for when it starts is ready only after it. The policy's cost-aware mode keeps
standing only as many replicas as keep the spilled share of the load within a budget, lets
every burst above them spill, and scales up only for an excess that has lasted a start-up.

Its prices (:class:`SpillPrices`, both per hour and in the same currency):
``replica_hour_price`` (one replica's accelerators) and ``spill_price_per_replica_hour`` (the
provider's price for the tokens one replica serves in an hour at its target load). The mode
runs only with both known and sane (:func:`cost_mode_problem`); the spill price also bounds
the standing count by the route's spend cap.

How many to keep (:func:`standing_for_budget`): the load's recent history is a histogram over
``k``, the replicas each sample wanted at the spill threshold, of decayed sample weight and
decayed load. With ``n`` replicas standing, what spills at a sample of load ``L`` is
``max(0, L - n x threshold)``; summed over the histogram that is exact for every bucket above
``n``. The count kept is the fewest whose spilled share of the load is within
``spill_share_budget`` and whose spill spend is within the route's cap per hour
(:func:`hourly_spend_cap`: the tighter of ``spend.maxPerHour`` and ``spend.maxPerDay / 24``).

The histogram counts load in requests in flight (or their work), but the route also spills a
prompt that no replica can prefill within the SLO (``spillover.promptTokensPerReplica``), and
those are the long ones: the share of the *tokens* spilled can be twice the share of the load
the histogram predicts (Mooncake's conversation trace: 6.66 % of the requests, 13.3 % of the
tokens). So the routers' spilled-token counters correct it (:func:`token_floor`), on two
horizons: the share of the tokens spilled over the recent window
(:data:`SPILL_SHARE_WINDOW_S`: what the replicas set now spill) and the budget's own, the
recent shares weighted by their tokens and decayed with the histogram's half-life
(:func:`remember_tokens`). While both exceed the budget, and the recent window saw no fewer
replicas than are set now, one more replica stands, and stays while the long-run share is
above :data:`TOKEN_SHARE_RELEASE` of the budget; while the recent share is above that
fraction, none goes; otherwise the histogram's count rules. A burst that spills over the
budget for a few minutes of an hour within it raises nothing, and a past excess no longer
spilling holds nothing but a count raised for it. Without the counters (no router, an older
one) the histogram alone rules.

A gap in the observations adds nothing and a lost history has no bucket: the count is then
the ordinary floor (``max(minReplicas, 1)``), and the stable window still scales up for a load
that lasts; so a gap never scales a loaded model to zero.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

LoadHist = tuple[tuple[int, float, float], ...]
"""``(k, decayed samples, decayed load)`` per bucket, ``k`` ascending."""

TokenSpill = tuple[float, float]
"""``(decayed spilled tokens, decayed tokens)``: the recent windows' tokens per second, summed
per sample (:func:`remember_tokens`)."""

MAX_PRICE_PER_HOUR: Final = 1_000_000.0
"""A price per hour above this is taken for a unit mistake (cents for dollars, per token for
per million) and ignored: the mode falls back to the ordinary policy."""

MIN_WEIGHT: Final = 1e-9
"""Buckets whose decayed weight falls below this are dropped."""

SPILL_SHARE_WINDOW_S: Final = 600.0
"""The recent window of the observed spilled token share (the routers' and the engines' token
counters as rates over it, the window of the cost-aware mode's throughput reads; the what-if
simulator's scrapes over the same span): long enough to hold a few bursts."""

TOKEN_SHARE_RELEASE: Final = 0.5
"""The observed spilled token share is well within the budget below this fraction of it: the
hysteresis that keeps one replica from coming and going at the budget's edge."""


@dataclass(frozen=True, slots=True)
class SpillPrices:
    """What the cost-aware mode weighs: the route's provider, the model's accelerators.

    Any of them may be missing or wrong: :func:`cost_mode_problem` says so.
    """

    replica_hour_price: float | None
    spill_price_per_replica_hour: float | None
    spend_cap_per_hour: float | None = None


HOURS_PER_DAY: Final = 24.0


def hourly_spend_cap(
    max_per_hour: float | None, max_per_day: float | None
) -> tuple[float | None, str]:
    """The spill spend per hour the mode plans within, and which cap set it (None: no cap).

    The tighter of the route's ``maxPerHour`` and ``maxPerDay / 24``. The router stops
    spillover once either cap is reached (the hour and the day on the UTC clock), and the
    mode's standing count is planned from the recent load's mean spend per hour, so the day
    cap enters as the mean hourly spend that keeps a whole day within it. Planning a busy hour
    at that mean is the safe side: a day whose busy hours stay within ``maxPerDay / 24``
    spends no more than ``maxPerDay``, so spillover is still there for the day's last bursts
    instead of stopping at noon with too few replicas standing (they would then queue).
    """
    candidates: list[tuple[float, str]] = []
    if max_per_hour is not None:
        candidates.append((max_per_hour, f"spend.maxPerHour {max_per_hour:g}"))
    if max_per_day is not None:
        per_hour = max_per_day / HOURS_PER_DAY
        candidates.append((per_hour, f"spend.maxPerDay {max_per_day:g} / 24"))
    if not candidates:
        return None, ""
    return min(candidates, key=lambda c: c[0])


def _valid_price(value: float | None) -> bool:
    return (
        value is not None
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_PRICE_PER_HOUR
    )


def cost_mode_problem(
    replica_hour_price: float | None, spill_price_per_replica_hour: float | None
) -> str | None:
    """Why the cost-aware mode cannot run with these prices (None: it runs).

    A price that is missing, not a number, negative or above :data:`MAX_PRICE_PER_HOUR` is
    not trusted; nor is a replica that costs nothing (every replica is then free to keep).
    """
    for name, value in (
        ("replica-hour price", replica_hour_price),
        ("spill price per replica-hour", spill_price_per_replica_hour),
    ):
        if value is None:
            return f"no {name}"
        if not _valid_price(value):
            return f"{name} {value} is not a sane price (0 to {MAX_PRICE_PER_HOUR:g})"
    assert replica_hour_price is not None
    if replica_hour_price <= 0:
        return "a replica-hour costs nothing"
    return None


def remember_load(
    hist: LoadHist, elapsed_s: float, load: float, threshold: float, half_life_s: float
) -> LoadHist:
    """``hist`` decayed over ``elapsed_s`` with one sample of ``load`` added.

    ``elapsed_s`` is the time since the previous sample; the caller passes 0 after a gap (a
    gap is not evidence of anything, and decaying every bucket by the same factor would not
    change a share anyway).
    """
    decay = 0.5 ** (max(elapsed_s, 0.0) / half_life_s)
    k = max(0, math.ceil(load / threshold - 1e-9))
    merged: dict[int, tuple[float, float]] = {}
    for bucket, weight, weighted_load in hist:
        if weight * decay >= MIN_WEIGHT:
            merged[bucket] = (weight * decay, weighted_load * decay)
    weight, weighted_load = merged.get(k, (0.0, 0.0))
    merged[k] = (weight + 1.0, weighted_load + load)
    return tuple((b, w, y) for b, (w, y) in sorted(merged.items()))


def spilled_share(hist: LoadHist, standing: int, threshold: float) -> tuple[float, float]:
    """The spilled share of the load with ``standing`` replicas, and the mean load spilled."""
    total_weight = sum(w for _, w, _ in hist)
    total_load = sum(y for _, _, y in hist)
    if total_weight <= 0 or total_load <= 0:
        return 0.0, 0.0
    spilled = sum(y - standing * threshold * w for k, w, y in hist if k > standing)
    spilled = max(spilled, 0.0)
    return spilled / total_load, spilled / total_weight


def standing_for_budget(
    hist: LoadHist,
    threshold: float,
    share_budget: float,
    spill_price_per_replica_hour: float,
    spend_cap_per_hour: float | None,
) -> int:
    """The fewest replicas whose spill stays within the share budget and the spend cap.

    The mean load spilled, in replicas' worth at the threshold, times the spill price per
    replica-hour is the spend per hour the cap bounds. 0 with no history.
    """
    top = max((k for k, _, _ in hist), default=0)
    for standing in range(top + 1):
        share, mean_spilled = spilled_share(hist, standing, threshold)
        spend = mean_spilled / threshold * spill_price_per_replica_hour
        within_cap = spend_cap_per_hour is None or spend <= spend_cap_per_hour + 1e-12
        if share <= share_budget + 1e-12 and within_cap:
            return standing
    return top


def remember_tokens(
    acc: TokenSpill, elapsed_s: float, share: float, tokens_per_s: float, half_life_s: float
) -> TokenSpill:
    """``acc`` decayed over ``elapsed_s`` with one recent window's share and token rate added.

    Weighted by the tokens, a quiet window (few tokens, none spilled) does not dilute a busy
    one's spill. ``elapsed_s`` is 0 after a gap, as in :func:`remember_load`.
    """
    decay = 0.5 ** (max(elapsed_s, 0.0) / half_life_s)
    return acc[0] * decay + share * tokens_per_s, acc[1] * decay + tokens_per_s


def token_floor(
    recent: float | None,
    overall: float | None,
    budget: float,
    current: int,
    since_settled: float | None,
    raised: int = 0,
    window_s: float = SPILL_SHARE_WINDOW_S,
) -> tuple[int, str, int]:
    """The standing count the observed spilled token shares ask for (0: none), why, and more.

    The third value is the ``raised`` count to keep.

    ``recent`` is the share of the model's tokens (prompt and output) spilled over the last
    ``window_s`` (None: unknown, the histogram alone rules), ``overall`` the share over the
    budget's horizon (:func:`remember_tokens`; None: not known yet, so no raise);
    ``since_settled`` the seconds since a replica last was missing or starting (None: never);
    ``raised`` the count the last raise set (0: none).

    - Both over the budget, and every count the recent window saw at least ``current``
      (``since_settled >= window_s``, so ``current`` alone would spill at least as much):
      ``current + 1``, one more replica.
    - ``recent`` above :data:`TOKEN_SHARE_RELEASE` of the budget: ``current``, none goes (a
      step down would spill more, and a past excess no longer spilling holds nothing).
    - ``raised``, the count the last raise set, stays while ``overall`` is above that fraction
      of the budget: the recent share is low at that count because of the raise, and one
      quiet window is no evidence that the count below it would do. Once ``overall`` is well
      within too, it is let go (``raised`` 0).
    - Otherwise 0: the histogram's count rules.
    """
    if recent is None or current < 1:
        return 0, "", raised
    spilled = f"{recent:.1%} of the tokens spilled in the last {window_s:.0f} s"
    if overall is not None:
        spilled += f", {overall:.1%} over the last hours"
    settled = since_settled is None or since_settled >= window_s
    if overall is not None and min(recent, overall) > budget and settled:
        return current + 1, f"{spilled}, over the {budget:.0%} budget: one more stands", current + 1
    floor, why = 0, ""
    if recent > budget * TOKEN_SHARE_RELEASE:
        floor, why = current, f"{spilled}, not well within the {budget:.0%} budget"
    if overall is None or overall <= budget * TOKEN_SHARE_RELEASE:
        return floor, why, 0
    if raised > floor:
        floor, why = raised, f"{spilled}: raised to {raised} for the {budget:.0%} budget"
    return floor, why, raised
