"""One what-if comparison: build each named policy for a run's config and replay the trace.

Pure (no I/O): the CLI reads the trace and writes the table, JSON and plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from inferscale.autoscaler.policy import DEFAULT_SCALE_TO_ZERO_DELAY_S, PolicyParams
from inferscale.autoscaler.presets import PRESETS
from inferscale.autoscaler.spillcost import SpillPrices
from inferscale.sim.model import EngineParams
from inferscale.whatif.cluster import RunResult, SimConfig, simulate
from inferscale.whatif.policies import (
    ALL_POLICY_NAMES,
    OUR_PRESET_POLICIES,
    Autoscaler,
    DynamoLike,
    HpaLike,
    KedaLike,
    KubeAiLike,
    Oracle,
    Ours,
    Static,
    fixed_count,
    known_policy,
    service_seconds,
)
from inferscale.whatif.report import summarize
from inferscale.whatif.trace import Trace


def our_params(
    config: SimConfig, trace: Trace | None = None, preset: str | None = None
) -> PolicyParams:
    """Our policy's params for a run: an API preset, the run's bounds, target and cold start.

    ``time_to_ready_s`` is the cold start, which the operator measures on a real cluster;
    ``prompt_tokens_per_replica`` the preset's prefill within the SLO
    (:func:`prompt_token_budget`), a property of the GPU and the SLO, not of the workload.
    ``preset`` (default ``config.ours_preset``) sets the learned floor (unless
    ``config.learned_floor_quantile`` is set) and, with spillover on, the cost-aware mode,
    priced by :func:`spill_prices` on ``trace``.

    Raises:
        ValueError: an unknown preset.
    """
    name = config.ours_preset if preset is None else preset
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    chosen = PRESETS[name]
    to_zero = config.scale_to_zero_delay_s
    if config.min_replicas == 0 and to_zero is None:
        to_zero = DEFAULT_SCALE_TO_ZERO_DELAY_S
    floor = config.learned_floor_quantile
    spill = spill_prices(trace, config) if config.spillover and trace is not None else None
    return PolicyParams(
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
        target_in_flight_per_replica=config.target,
        scale_to_zero_delay_s=to_zero if config.min_replicas == 0 else None,
        time_to_ready_s=config.cold_start_s,
        prompt_tokens_per_replica=prompt_token_budget(config.engine, config.slo_ttft_s),
        learned_floor_quantile=chosen.learned_floor_quantile if floor is None else floor,
        cost_aware=chosen.cost_aware and spill is not None,
        replica_hour_price=None if spill is None else spill.replica_hour_price,
        spill_price_per_replica_hour=None if spill is None else spill.spill_price_per_replica_hour,
        spill_share_budget=chosen.spill_share_budget,
        spill_spend_cap_per_hour=config.spill_spend_cap_per_hour,
    )


def spill_prices(trace: Trace, config: SimConfig) -> SpillPrices:
    """The cost-aware mode's prices for a run: a replica-hour, and one replica's load spilled.

    The second is the provider's price for the tokens one replica serves in an hour at the
    target. That load is ``target`` requests in flight, each for the trace's mean service time at a
    batch of ``target`` (:func:`~inferscale.whatif.policies.service_seconds`), at the trace's
    mean prompt and output lengths. A price left unset stays None (the mode then falls back).
    """
    replica_hour = config.gpu_hour_price
    per_replica: float | None = None
    requests = trace.requests
    if config.spill_price_in is not None and config.spill_price_out is not None and requests:
        service = sum(service_seconds(config.engine, r, config.target) for r in requests)
        mean_service = service / len(requests)
        per_request = (
            sum(r.prompt_tokens for r in requests) * config.spill_price_in
            + sum(r.output_tokens for r in requests) * config.spill_price_out
        ) / (1e6 * len(requests))
        if mean_service > 0:
            per_replica = config.target / mean_service * 3600 * per_request
    return SpillPrices(replica_hour, per_replica, config.spill_spend_cap_per_hour)


def build_policy(name: str, trace: Trace, config: SimConfig) -> Autoscaler:
    """A fresh autoscaler named ``name`` (one of ``ALL_POLICY_NAMES``, or ``fixed-N``).

    Raises:
        ValueError: an unknown name.
    """
    if name == "ours":
        return Ours(our_params(config, trace))
    if name in OUR_PRESET_POLICIES:
        return Ours(our_params(config, trace, name.removeprefix("ours-")), name=name)
    if name == "hpa":
        return HpaLike(config.min_replicas, config.max_replicas)
    if name == "keda":
        return KedaLike(config.min_replicas, config.max_replicas, config.target)
    if name == "kubeai":
        return KubeAiLike(config.min_replicas, config.max_replicas, config.target)
    if name == "dynamo":
        return DynamoLike(config.engine, config.min_replicas, config.max_replicas)
    if name == "oracle":
        return oracle_for(trace, config)
    if name == "fixed":
        return Static(best_fixed_fleet(trace, config), name="fixed")
    count = fixed_count(name)
    if count is not None:
        return Static(count, name=name)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(ALL_POLICY_NAMES)}")


def foreseen_load(trace: Trace, config: SimConfig) -> list[float]:
    """The load at every scrape of a replay with ``max_replicas`` always ready."""
    ample = replace(config, initial_replicas=config.max_replicas, spillover=False)
    run = simulate(trace, Static(config.max_replicas), ample)
    buckets = int(trace.span // config.scrape_interval_s) + 2
    load = [0.0] * buckets
    for point in run.timeline:
        b = int(point.at // config.scrape_interval_s)
        if b < buckets:
            load[b] = float(point.load)
    return load


def sized_by_slo(trace: Trace, config: SimConfig) -> SimConfig:
    """``config`` with ``oracle_target`` set, unless it is set already.

    The largest target at which the oracle meets :data:`SLO_GOAL` (:func:`calibrate_target`).

    A run calls this once and passes the result on, so the calibration's replays are paid once.
    """
    return replace(config, oracle_target=oracle_target(trace, config))


def oracle_target(trace: Trace, config: SimConfig) -> float:
    """``config.oracle_target``, or when unset the target calibrated from the SLO."""
    if config.oracle_target is not None:
        return config.oracle_target
    return float(calibrate_target(trace, config))


def oracle_for(trace: Trace, config: SimConfig) -> Oracle:
    """The perfect-foresight oracle of this trace and config, sized by the SLO.

    Its replicas per unit of load come from ``config.oracle_target`` (calibrated here when
    unset), never from ``config.target``: with a target too large for the workload the oracle
    would keep too few replicas, miss the SLO and void every ratio to it.
    """
    return Oracle.from_load(
        foreseen_load(trace, config),
        target=oracle_target(trace, config),
        cold_start_s=config.cold_start_s,
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
        interval=config.scrape_interval_s,
    )


def initial_replicas(trace: Trace, config: SimConfig) -> int:
    """Replicas running when the trace starts: what the oracle wants then (a warm start)."""
    return oracle_for(trace, config).wanted_at(0.0)


def run_policy(trace: Trace, config: SimConfig, name: str) -> RunResult:
    """Replay ``trace`` under the policy ``name``; a fixed fleet stands from the start."""
    policy = build_policy(name, trace, config)
    if isinstance(policy, Static):
        config = replace(config, initial_replicas=policy.replicas)
    return simulate(trace, policy, config)


def compare(trace: Trace, config: SimConfig, names: Sequence[str]) -> list[RunResult]:
    """Replay ``trace`` once per policy name, in the order given."""
    for name in names:
        if not known_policy(name):
            raise ValueError(f"unknown policy {name!r}; known: {', '.join(ALL_POLICY_NAMES)}")
    return [run_policy(trace, config, name) for name in names]


SLO_GOAL: Final = 0.99
"""Share of requests within the TTFT SLO that sizing by the SLO aims at (calibration, fixed)."""


def fixed_fleet_attainment(trace: Trace, config: SimConfig, replicas: int) -> float:
    """SLO attainment of ``replicas`` replicas standing from the start to the end."""
    standing = replace(config, initial_replicas=replicas)
    return summarize(simulate(trace, Static(replicas), standing)).slo_attainment


def best_fixed_fleet(trace: Trace, config: SimConfig, goal: float = SLO_GOAL) -> int:
    """The fewest replicas that, never changed, meet ``goal`` on the trace (hindsight).

    A binary search between ``max(1, min_replicas)`` and ``max_replicas``: more standing
    replicas never queue a request longer, so attainment does not fall as the fleet grows.
    ``max_replicas`` when no fleet within the bound meets the goal (its row shows by how much).
    """
    lo, hi = max(1, config.min_replicas), config.max_replicas
    best = hi
    while lo <= hi:
        mid = (lo + hi) // 2
        if fixed_fleet_attainment(trace, config, mid) >= goal:
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    return best


PREFILL_HEADROOM: Final = 0.8
"""Share of the TTFT budget the queued prefill may take; the rest is for the decode steps that
vLLM's chunked prefill interleaves with it."""

MAX_PROMPT_TOKEN_BUDGET: Final = 100_000_000
"""The API's upper bound for ``promptTokensPerReplica`` (an engine with free prefill)."""


def prompt_token_budget(engine: EngineParams, slo_ttft_s: float) -> int:
    """Prompt tokens a replica can prefill within the TTFT budget, with headroom.

    The rule ``docs/providers.md`` gives users for ``spillover.promptTokensPerReplica``: the
    budget times the prefill rate times :data:`PREFILL_HEADROOM` (2 s on the L4 preset's
    3,030 tokens/s: 4,848).
    """
    per_token = engine.prefill_seconds_per_token
    if per_token <= 0:
        return MAX_PROMPT_TOKEN_BUDGET
    return max(1, min(MAX_PROMPT_TOKEN_BUDGET, int(slo_ttft_s * PREFILL_HEADROOM / per_token)))


TARGET_CANDIDATES: Final = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
"""Targets ``calibrate_target`` chooses from (whole requests, roughly 1.5x apart)."""


def calibrate_target(trace: Trace, config: SimConfig, goal: float = SLO_GOAL) -> int:
    """The largest target per replica at which the oracle meets ``goal`` SLO attainment.

    The what-if counterpart of the load test that sets ``targetInFlightPerReplica`` in
    production: with perfect foresight and this target the SLO is met, so what remains
    between a policy and the oracle is timing. A binary search over ``TARGET_CANDIDATES``
    (attainment falls as the target grows); the smallest candidate when none meets the goal.
    The replays spill nothing: a spilled request meets the SLO, so with spillover any target
    would, and the oracle would keep one replica and spill the rest; sized on replicas alone,
    the oracle (and ``--target auto``) mean the same with spillover on and off.
    """
    load = foreseen_load(trace, config)

    def attains(target: int) -> bool:
        trial = replace(config, target=float(target), spillover=False)
        oracle = Oracle.from_load(
            load,
            target=trial.target,
            cold_start_s=trial.cold_start_s,
            min_replicas=trial.min_replicas,
            max_replicas=trial.max_replicas,
            interval=trial.scrape_interval_s,
        )
        trial = replace(trial, initial_replicas=oracle.wanted_at(0.0))
        summary = summarize(simulate(trace, oracle, trial))
        return summary.slo_attainment >= goal

    lo, hi = 0, len(TARGET_CANDIDATES) - 1
    best = TARGET_CANDIDATES[0]
    while lo <= hi:
        mid = (lo + hi) // 2
        if attains(TARGET_CANDIDATES[mid]):
            best = TARGET_CANDIDATES[mid]
            lo = mid + 1
        else:
            hi = mid - 1
    return best
