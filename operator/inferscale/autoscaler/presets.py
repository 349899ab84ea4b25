"""The autoscaling presets: three named settings a user picks instead of tuning windows.

``spec.autoscaling.preset`` names one; each maps to the policy's parameters below, and a field
the user sets explicitly (``learnedFloorPercentile``) wins over its preset. The figures behind
each choice are in ``docs/autoscaling.md`` ("Presets") and ``bench/autoscale/README.md``.

- ``balanced`` (the default): a learned standing floor at the 80th percentile of recent
  bursts' wants, so bursts shorter than a cold start meet standing capacity; with spillover
  priced, the cost-aware mode instead (the floor and spilling work against each other: a floor
  keeps for bursts the replicas that spilling them saves).
- ``economy``: no learned floor; with spillover priced, the cost-aware mode with a budget of
  40 % of the load: the fewest GPU-hours, and where spilling is the cheaper answer (short
  bursts at hosted small-model prices) it spills far more than ``balanced``'s 8 %. Without
  spillover, bursts queue.
- ``latency``: a learned floor at the 90th percentile and never the cost-aware mode: bursts
  meet standing replicas, whatever spilling would have cost.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

PresetName = Literal["economy", "balanced", "latency"]

DEFAULT_PRESET: Final[PresetName] = "balanced"


@dataclass(frozen=True, slots=True)
class Preset:
    """What one preset sets in the policy."""

    learned_floor_quantile: float | None
    """The learned floor (None: none)."""
    cost_aware: bool
    """Use the cost-aware mode where spillover is available and priced."""
    spill_share_budget: float
    """The cost-aware mode's most spilled share of the load."""


PRESETS: Final[dict[PresetName, Preset]] = {
    "economy": Preset(learned_floor_quantile=None, cost_aware=True, spill_share_budget=0.40),
    "balanced": Preset(learned_floor_quantile=0.8, cost_aware=True, spill_share_budget=0.08),
    "latency": Preset(learned_floor_quantile=0.9, cost_aware=False, spill_share_budget=0.08),
}
