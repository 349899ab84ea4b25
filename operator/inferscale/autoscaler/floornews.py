"""Why replicas stand that the load does not want: the ``ScalingLimited`` condition (pure).

The balanced and latency presets keep a learned floor (:mod:`inferscale.autoscaler.floor`),
and the cost-aware mode a standing count from its spill budget: after a burst, replicas stay
although the load wants fewer, by design (the next burst is shorter than a start-up). Without
a word in the status that looks like a stuck autoscaler, so while a floor stands above
``max(minReplicas, 1)`` the model says so:

- ``status.learnedFloor``: the floor in force (0: none), for ``kubectl get -o wide``;
- ``ScalingLimited`` True, reason ``LearnedFloor`` (or ``SpillBudget`` in the cost-aware
  mode): the floor, how it is learned (percentile, half-life), what the load wants now, when
  the floor would fall if the load stayed as it is (:func:`~inferscale.autoscaler.floor.
  floor_falls`), and the preset or field to change for replicas that follow the load down;
- False, reason ``FloorAtMinimum``, when no floor stands above the minimum.

No I/O, no clock: the time of the decision comes in with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from inferscale.api.meta import ConditionStatus
from inferscale.autoscaler.floor import Peaks, floor_falls
from inferscale.autoscaler.policy import Decision, PolicyParams
from inferscale.autoscaler.presets import PRESETS

CONDITION_SCALING_LIMITED: Final = "ScalingLimited"
"""True while a floor keeps replicas standing above ``max(minReplicas, 1)``."""

REASON_LEARNED_FLOOR: Final = "LearnedFloor"
REASON_SPILL_BUDGET: Final = "SpillBudget"
REASON_AT_MINIMUM: Final = "FloorAtMinimum"

PRESETS_DOC: Final = "docs/autoscaling.md, Presets"


@dataclass(frozen=True, slots=True)
class FloorNews:
    """One decision's floor, with what its words need."""

    floor: int
    """The floor in force (0: none)."""
    lowest: int
    """``max(minReplicas, 1)``: what scale-downs go to without a floor."""
    wanted: int
    """What the load's peaks want now."""
    at: float
    """When the decision was made (epoch seconds)."""
    preset: str
    percentile_set: bool
    """``learnedFloorPercentile`` is set (it, not the preset, sets the quantile)."""
    params: PolicyParams
    peaks: Peaks

    @property
    def holding(self) -> bool:
        """A floor stands above the minimum."""
        return self.floor > self.lowest

    def known(self) -> tuple[object, ...]:
        """What a stored status must match for no news.

        The condition's state, the floor, and what the load wants below it (the message's
        figures; a load above the floor is one state, so a burst does not rewrite it).
        """
        return (self.condition_state(), self.floor, min(self.wanted, self.floor))

    def condition_state(self) -> tuple[ConditionStatus, str]:
        """``ScalingLimited`` as (status, reason), without the (costlier) message."""
        if not self.holding:
            return "False", REASON_AT_MINIMUM
        return "True", REASON_SPILL_BUDGET if self.params.cost_mode else REASON_LEARNED_FLOOR

    def condition(self) -> tuple[ConditionStatus, str, str]:
        """``ScalingLimited`` as (status, reason, message)."""
        status, reason = self.condition_state()
        if not self.holding:
            return status, reason, self._at_minimum()
        if self.wanted < self.floor:
            stand = (
                f"{self.floor} replicas stand although the load's peaks want {self.wanted} now: "
            )
        else:
            stand = f"at least {self.floor} replicas will stand after the load falls: "
        if self.params.cost_mode:
            return status, reason, stand + self._spill_budget()
        return status, reason, stand + self._learned()

    def _at_minimum(self) -> str:
        if self.params.learned_floor_quantile is None and not self.params.cost_mode:
            return (
                f"no learned floor (the {self.preset} preset): replicas follow the load down "
                "after the scale-down delay"
            )
        return (
            f"the floor is at max(minReplicas, 1) = {self.lowest}: replicas follow the load "
            "down after the scale-down delay"
        )

    def _learned(self) -> str:
        p = self.params
        q = f"{(p.learned_floor_quantile or 0) * 100:g}"
        who = (
            f"the learned floor of learnedFloorPercentile {q}"
            if self.percentile_set
            else f"the {self.preset} preset's learned floor"
        )
        steps = (
            floor_falls(
                self.peaks,
                self.at,
                p.learned_floor_quantile or 1.0,
                p.learned_floor_half_life_s,
                p.learned_floor_bucket_s,
                want=self.wanted,
                floor=self.floor,
                lowest=self.lowest,
            )
            if self.wanted < self.floor
            else ()
        )
        if steps:
            when = f"at this load it falls to {steps[0][1]} at about {_minute(steps[0][0])}"
            if len(steps) > 1:
                when += f" and to {steps[-1][1]} at about {_minute(steps[-1][0])}"
        else:
            when = "it falls as the bursts age"
        change = (
            "lower or remove learnedFloorPercentile, or set preset: economy"
            if self.percentile_set
            else "set spec.autoscaling.preset: economy (no floor) or a lower learnedFloorPercentile"
        )
        return (
            f"{who}, the {q}th percentile of the replicas recent bursts wanted (a burst counts "
            f"half after {_duration(p.learned_floor_half_life_s)}), kept so that the next burst "
            f"meets standing replicas; {when} (if no burst comes). For replicas that follow the "
            f"load down, {change} ({PRESETS_DOC})"
        )

    def _spill_budget(self) -> str:
        p = self.params
        cap = "" if p.spill_spend_cap_per_hour is None else " within the route's spend cap"
        economy = PRESETS["economy"].spill_share_budget
        return (
            f"the cost-aware mode keeps the fewest replicas that spill at most "
            f"{p.spill_share_budget:.0%} of the recent load{cap} (the load's history counts "
            f"half after {_duration(p.spill_history_half_life_s)}). preset: economy lets up to "
            f"{economy:.0%} spill ({PRESETS_DOC})"
        )


def floor_news(
    params: PolicyParams, decision: Decision, at: float, preset: str, percentile_set: bool
) -> FloorNews | None:
    """The floor of a decision made at ``at``; None when it was a hold on bad data."""
    if decision.peak_want is None:
        return None
    return FloorNews(
        floor=decision.floor,
        lowest=max(params.min_replicas, 1),
        wanted=decision.peak_want,
        at=at,
        preset=preset,
        percentile_set=percentile_set,
        params=params,
        peaks=decision.history.peaks,
    )


def _minute(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
