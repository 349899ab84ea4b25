"""The autoscalers the what-if simulator compares: ours, three baselines and an oracle.

Each is a small object ticked by the simulator every ``interval`` seconds with the scrapes
taken so far and the current replica count; it returns the count it wants. They are modelled
on their systems' documented defaults (``shared/research/anchors-autoscaling.md``), with the
same bounds and, where they scale on requests, the same target per replica as ours, so the
comparison is about timing and logic, not about a better-chosen target:

- ``ours``: the real :func:`inferscale.autoscaler.policy.decide`, every 2 s, reading the scrape
  one interval old (what a Prometheus query sees), with ``time_to_ready_s`` = the cold start
  and ``prompt_tokens_per_replica`` = the preset's prefill rate within the SLO (the prompt
  tokens waiting are the router's gauge), and the share of the tokens spilled over the last
  :data:`~inferscale.autoscaler.spillcost.SPILL_SHARE_WINDOW_S` (:func:`spilled_token_share`,
  what the operator reads from the routers' and engines' counters).
- ``hpa``: Kubernetes HPA on GPU utilisation (duty cycle, as ``DCGM_FI_DEV_GPU_UTIL``, averaged
  over 30 s): 15 s sync, tolerance 0.1, up by at most max(100 %, 4 pods) per sync, down to the
  highest recommendation of the last 300 s; never below one replica.
- ``keda``: KEDA with a Prometheus trigger on the model's request queue (requests in flight at
  the engines plus held and spilled ones at the router), target value = our target: the HPA
  above on that metric, plus KEDA's own 30 s polling that activates 0 -> 1 and deactivates
  1 -> 0 after a 300 s cooldown.
- ``kubeai``: KubeAI's autoscaler: every 10 s, the in-flight count at its proxy, a simple
  moving average over 600 s, ``ceil(avg / target)``; down only after 3 consecutive ticks
  (30 s) that want fewer; 0 -> 1 at once when its proxy holds a request.
- ``dynamo``: NVIDIA Dynamo's SLA planner (throughput-based mode): every 180 s it predicts
  the next interval's request count and mean prompt and output lengths with its ``constant``
  predictor (the next interval is the last one; Dynamo also offers ARIMA, its default,
  Prophet and Kalman), corrects with the last interval's measured/expected TTFT and ITL, and
  sizes from the replica's profiled capacity (:func:`planner_replicas`). Bounded by
  ``max(1, min_replicas)`` (its ``--min-endpoint`` 1) and ``max_replicas``.
- ``fixed``: the best fixed fleet in hindsight: the fewest replicas that, standing from the
  start and never changed, meet the SLO goal on the whole trace (found by replaying it). What a
  user could have picked from last week's traffic; an autoscaler that spends more has failed.
- ``oracle``: knows the future load. A first replay with ``max_replicas`` always ready
  records the load (requests in flight) at every scrape, that is the load the trace places on
  a cluster that never queues; the oracle then keeps ``ceil(load / target)`` replicas for
  every moment of ``[t, t + cold start]``, so each replica is ready exactly when it is needed
  and goes as soon as it is not needed again within a cold start (restarting it would cost
  more).

Pure: no clock, no I/O.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from inferscale.autoscaler.policy import Decision, History, PolicyParams, Sample, decide
from inferscale.autoscaler.spillcost import SPILL_SHARE_WINDOW_S
from inferscale.sim.model import EngineParams
from inferscale.whatif.trace import Request

POLICY_NAMES: Final = ("ours", "hpa", "keda", "kubeai", "dynamo", "fixed", "oracle")
OUR_PRESET_POLICIES: Final = ("ours-economy", "ours-balanced", "ours-latency")
"""Ours with a named API preset, whatever ``--ours-preset`` says (for the Pareto table)."""
ALL_POLICY_NAMES: Final = POLICY_NAMES + OUR_PRESET_POLICIES
FIXED_N_PREFIX: Final = "fixed-"
"""``fixed-N``: N replicas standing from the start, never changed (the fixed fleets' frontier
beside the best one; bench/autoscale's best-case rows)."""


def fixed_count(name: str) -> int | None:
    """N of a ``fixed-N`` policy name (N >= 1), else None."""
    digits = name.removeprefix(FIXED_N_PREFIX)
    if digits == name or not digits.isdigit() or int(digits) < 1:
        return None
    return int(digits)


def known_policy(name: str) -> bool:
    """A name ``compare.build_policy`` builds: one of ``ALL_POLICY_NAMES`` or ``fixed-N``."""
    return name in ALL_POLICY_NAMES or fixed_count(name) is not None


HPA_SYNC_S: Final = 15.0
HPA_TOLERANCE: Final = 0.1
HPA_DOWN_STABILISATION_S: Final = 300.0
HPA_UTILISATION_WINDOW_S: Final = 30.0
KEDA_POLL_S: Final = 30.0
KEDA_COOLDOWN_S: Final = 300.0
KUBEAI_INTERVAL_S: Final = 10.0
KUBEAI_WINDOW_S: Final = 600.0
KUBEAI_DOWN_TICKS: Final = 3
DYNAMO_INTERVAL_S: Final = 180.0
"""The SLA planner's default ``--adjustment-interval``."""
DYNAMO_ITL_S: Final = 0.05
"""The SLA planner's default ITL target (``--itl 50`` ms)."""


@dataclass(frozen=True, slots=True)
class Scrape:
    """What a Prometheus scrape of the model's pods and routers returns at ``at``."""

    at: float
    in_flight: int
    """Requests running or waiting in the engines (all replicas)."""
    held: int
    """Requests held by the router (no ready replica)."""
    spilled_in_flight: int
    """Requests at the spillover provider at some time since the previous scrape (a short one
    is demand too)."""
    kv_cache_usage: float | None
    """Mean over ready replicas; None when none is ready."""
    busy: tuple[bool, ...]
    """Per ready replica: a forward step is running (the GPU duty cycle, sampled)."""
    ready: int
    starting: int
    pending_prompt_tokens: int = 0
    """Prompt tokens without a first token yet: at the replicas (queued or in prefill) and
    held by the router."""
    # Counters since the start of the run, as the router's and engines' Prometheus counters and
    # histograms (``_sum``/``_count``) give them: what the Dynamo-like planner reads.
    arrived: int = 0
    """Requests the router received (served, held or spilled; not those rejected as too long)."""
    arrived_prompt_tokens: int = 0
    arrived_output_tokens: int = 0
    """Output tokens of the requests received (a real router learns them as they finish)."""
    spilled_tokens: int = 0
    """Prompt plus output tokens of the requests spilled (the routers' spilled-token
    counters)."""
    ttft_sum: float = 0.0
    ttft_count: int = 0
    """Seconds to first token of the requests the replicas have begun answering."""
    itl_sum: float = 0.0
    itl_count: int = 0
    """Seconds between output tokens of the requests the replicas finished, and the gaps."""


class Autoscaler(Protocol):
    """What the simulator drives."""

    name: str
    interval: float
    """Seconds between ticks."""

    def tick(self, now: float, current: int, scrapes: Sequence[Scrape]) -> int:
        """The replica count wanted now (the simulator applies it)."""

    def on_held(self, now: float, current: int) -> int | None:
        """Called when the router starts holding a request; a count to set at once, or None."""


def _latest(scrapes: Sequence[Scrape], not_after: float) -> Scrape | None:
    for s in reversed(scrapes):
        if s.at <= not_after:
            return s
    return None


def spilled_token_share(
    scrapes: Sequence[Scrape], latest: Scrape, window_s: float = SPILL_SHARE_WINDOW_S
) -> tuple[float | None, float | None]:
    """The share of the tokens spilled over the ``window_s`` before ``latest``, and their rate.

    The rate is the tokens per second of all that arrived. Both come from the counters'
    increase since the newest scrape at least ``window_s`` older (the first one while the run
    is younger), as a ``rate()`` over the window gives it; None when no token arrived in it.
    """
    i = bisect.bisect_right(scrapes, latest.at - window_s, key=lambda s: s.at)
    start = scrapes[max(i - 1, 0)]
    arrived = (
        latest.arrived_prompt_tokens
        + latest.arrived_output_tokens
        - start.arrived_prompt_tokens
        - start.arrived_output_tokens
    )
    if arrived <= 0 or latest.at <= start.at:
        return None, None
    share = min(max((latest.spilled_tokens - start.spilled_tokens) / arrived, 0.0), 1.0)
    return share, arrived / (latest.at - start.at)


def _clamp(n: int, low: int, high: int) -> int:
    return max(low, min(high, n))


@dataclass(slots=True)
class Ours:
    """The real policy, as the operator runs it (2 s loop, samples one scrape old)."""

    params: PolicyParams
    staleness_s: float = 2.0
    interval: float = 2.0
    name: str = "ours"
    history: History = field(default_factory=History)
    decisions: list[Decision] = field(default_factory=list)

    def tick(self, now: float, current: int, scrapes: Sequence[Scrape]) -> int:
        """``decide`` on the newest scrape at least ``staleness_s`` old."""
        s = _latest(scrapes, now - self.staleness_s)
        sample = None
        if s is not None:
            share, rate = spilled_token_share(scrapes, s)
            sample = Sample(
                at=s.at,
                in_flight=s.in_flight + s.spilled_in_flight,
                held=s.held,
                kv_cache_usage=s.kv_cache_usage,
                ready=s.ready,
                starting=s.starting,
                pending_prompt_tokens=s.pending_prompt_tokens,
                spilled_token_share=share,
                token_rate=rate,
            )
        d = decide(self.params, self.history, sample, now, current)
        self.history = d.history
        if d.action != "hold":
            self.decisions.append(d)
        return d.replicas

    def on_held(self, now: float, current: int) -> int | None:
        """Nothing: ours sees held requests in the next scrape."""
        return None


@dataclass(slots=True)
class _HpaCore:
    """The HPA's arithmetic, shared by the HPA-like and KEDA-like baselines."""

    min_replicas: int
    max_replicas: int
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)

    def step(self, now: float, current: int, usage_ratio: float | None) -> int:
        """HPA's next count from ``metric / target`` per current replica (None: no metric)."""
        if current == 0:
            return 0  # a scaled-to-zero target is left alone by the HPA (KEDA activates it)
        if usage_ratio is None:
            wanted = current
        elif abs(usage_ratio - 1.0) <= HPA_TOLERANCE:
            wanted = current
        else:
            wanted = math.ceil(usage_ratio * current - 1e-9)
        wanted = _clamp(wanted, max(self.min_replicas, 1), self.max_replicas)
        self.recommendations.append((now, wanted))
        while self.recommendations and self.recommendations[0][0] < now - HPA_DOWN_STABILISATION_S:
            self.recommendations.popleft()
        if wanted > current:
            return min(wanted, max(2 * current, current + 4))
        # Scale-down stabilisation: the highest recommendation of the window, never above now.
        return min(current, max(n for _, n in self.recommendations))


@dataclass(slots=True)
class HpaLike:
    """Kubernetes HPA on GPU utilisation (duty cycle)."""

    min_replicas: int
    max_replicas: int
    target_utilization: float = 0.8
    staleness_s: float = 2.0
    interval: float = HPA_SYNC_S
    name: str = "hpa"
    core: _HpaCore = field(init=False)

    def __post_init__(self) -> None:
        self.core = _HpaCore(max(self.min_replicas, 1), self.max_replicas)

    def tick(self, now: float, current: int, scrapes: Sequence[Scrape]) -> int:
        """One HPA sync on the mean duty cycle of the ready replicas over the last 30 s."""
        until = now - self.staleness_s
        latest = _latest(scrapes, until)
        busy = samples = 0
        for s in reversed(scrapes):
            if s.at > until:
                continue
            if s.at <= until - HPA_UTILISATION_WINDOW_S:
                break
            busy += sum(s.busy)
            samples += len(s.busy)
        ratio = None
        ready_now = 0 if latest is None else latest.ready
        if samples and ready_now:
            # Replicas not ready yet count as idle (the HPA's rule for scale-up with unready
            # pods), so a starting replica is capacity on its way for the HPA too.
            utilisation_sum = busy / samples * ready_now
            ratio = utilisation_sum / (self.target_utilization * max(current, 1))
        return self.core.step(now, max(current, 1), ratio)

    def on_held(self, now: float, current: int) -> int | None:
        """Nothing: the HPA never leaves one replica."""
        return None


@dataclass(slots=True)
class KedaLike:
    """KEDA's ScaledObject on the request queue: activation by polling, 1..N by its HPA."""

    min_replicas: int
    max_replicas: int
    target: float
    staleness_s: float = 2.0
    interval: float = HPA_SYNC_S
    name: str = "keda"
    core: _HpaCore = field(init=False)
    last_poll: float = -math.inf
    last_active: float = -math.inf

    def __post_init__(self) -> None:
        self.core = _HpaCore(self.min_replicas, self.max_replicas)

    def tick(self, now: float, current: int, scrapes: Sequence[Scrape]) -> int:
        """An HPA sync; every 30 s also KEDA's poll for (de)activation."""
        s = _latest(scrapes, now - self.staleness_s)
        metric = None if s is None else s.in_flight + s.held + s.spilled_in_flight
        if now - self.last_poll >= KEDA_POLL_S - 1e-9:
            self.last_poll = now
            if metric is not None and metric > 0:
                self.last_active = now
                if current == 0:
                    return _clamp(1, self.min_replicas, self.max_replicas)
            elif (
                current > 0
                and self.min_replicas == 0
                and metric is not None
                and now - self.last_active >= KEDA_COOLDOWN_S
            ):
                return 0
        if current == 0:
            return _clamp(0, self.min_replicas, self.max_replicas)
        ratio = None if metric is None else metric / (self.target * current)
        return self.core.step(now, current, ratio)

    def on_held(self, now: float, current: int) -> int | None:
        """Nothing: KEDA notices at its next poll."""
        return None


@dataclass(slots=True)
class KubeAiLike:
    """KubeAI: moving average of its proxy's in-flight count."""

    min_replicas: int
    max_replicas: int
    target: float
    interval: float = KUBEAI_INTERVAL_S
    name: str = "kubeai"
    window: deque[float] = field(default_factory=deque)
    down_ticks: int = 0

    def tick(self, now: float, current: int, scrapes: Sequence[Scrape]) -> int:
        """Add the proxy's count now (it reads its own proxy: no scrape lag)."""
        s = _latest(scrapes, now)
        if s is not None:
            self.window.append(s.in_flight + s.held + s.spilled_in_flight)
        while len(self.window) > KUBEAI_WINDOW_S / self.interval:
            self.window.popleft()
        if not self.window:
            return _clamp(current, self.min_replicas, self.max_replicas)
        average = sum(self.window) / len(self.window)
        wanted = _clamp(
            math.ceil(average / self.target - 1e-9), self.min_replicas, self.max_replicas
        )
        if wanted >= current:
            self.down_ticks = 0
            return wanted
        self.down_ticks += 1
        if self.down_ticks >= KUBEAI_DOWN_TICKS:
            self.down_ticks = 0
            return wanted
        return current

    def on_held(self, now: float, current: int) -> int | None:
        """KubeAI's proxy scales 0 -> 1 as soon as it holds a request."""
        return _clamp(1, self.min_replicas, self.max_replicas) if current == 0 else None


def decode_step_seconds(engine: EngineParams, batch: float, context: float) -> float:
    """One decode step with ``batch`` sequences of ``context`` tokens each (the model's step)."""
    return (
        engine.step_base_seconds
        + engine.decode_seconds_per_seq * batch
        + engine.decode_seconds_per_context_token * context * batch
    )


def prefill_seconds(engine: EngineParams, prompt_tokens: float) -> float:
    """Time to first token of one request alone on a replica: the profiler's prefill point."""
    return (
        decode_step_seconds(engine, 1, prompt_tokens)
        + engine.prefill_overhead_seconds
        + engine.prefill_seconds_per_token * prompt_tokens
    )


def decode_tokens_per_second(engine: EngineParams, itl_s: float, context: float) -> float:
    """One replica's best decode throughput with steps within ``itl_s`` at ``context`` tokens.

    Dynamo's ``find_best_throughput_per_gpu``: the largest batch whose step stays within the
    ITL (and whose context fits the KV cache), or one sequence when even one is slower.
    Infinite for an engine with free steps.
    """
    per_seq = engine.decode_seconds_per_seq + engine.decode_seconds_per_context_token * context
    room = itl_s - engine.step_base_seconds
    if room <= 0:
        batch = 1
    elif per_seq <= 0:
        batch = engine.max_num_seqs
    else:
        batch = max(1, math.floor(room / per_seq))
    fits = max(1, int(engine.kv_capacity_tokens // max(context, 1.0)))
    batch = min(batch, engine.max_num_seqs, fits)
    step = decode_step_seconds(engine, batch, context)
    return math.inf if step <= 0 else batch / step


def planner_itl_s(engine: EngineParams) -> float:
    """The planner's ITL target: Dynamo's 50 ms, or twice a lone sequence's step.

    The second on a replica slower than 50 ms alone (the L4 preset's 68 ms), where no fleet
    could meet Dynamo's default.
    """
    return max(DYNAMO_ITL_S, 2 * decode_step_seconds(engine, 1, 0.0))


@dataclass(frozen=True, slots=True)
class Interval:
    """What the planner measured over its last adjustment interval (from two scrapes)."""

    seconds: float
    requests: int
    prompt_tokens: float
    """Mean per request received."""
    output_tokens: float
    ttft_s: float | None
    """Mean measured time to first token (None: no first token in the interval)."""
    itl_s: float | None
    """Mean measured time between tokens of the requests finished in the interval."""
    batch: float
    """Mean requests in flight per ready replica."""


def measure(start: Scrape, end: Scrape, scrapes: Sequence[Scrape]) -> Interval:
    """The interval ``(start.at, end.at]`` from the counters and the scrapes inside it."""
    requests = end.arrived - start.arrived
    ttfts = end.ttft_count - start.ttft_count
    gaps = end.itl_count - start.itl_count
    per_replica = [
        s.in_flight / s.ready for s in scrapes if start.at < s.at <= end.at and s.ready > 0
    ]
    return Interval(
        seconds=end.at - start.at,
        requests=requests,
        prompt_tokens=(end.arrived_prompt_tokens - start.arrived_prompt_tokens) / requests
        if requests
        else 0.0,
        output_tokens=(end.arrived_output_tokens - start.arrived_output_tokens) / requests
        if requests
        else 0.0,
        ttft_s=(end.ttft_sum - start.ttft_sum) / ttfts if ttfts else None,
        itl_s=(end.itl_sum - start.itl_sum) / gaps if gaps else None,
        batch=sum(per_replica) / len(per_replica) if per_replica else 0.0,
    )


def planner_replicas(engine: EngineParams, last: Interval) -> float:
    """Replicas (fractional) Dynamo's planner sizes for the next interval.

    The ``constant`` predictor: the next interval's request rate and mean lengths are the
    last's. Prefill: ``rate x prompt x min(1, measured/expected TTFT)`` tokens per second over
    a replica's profiled prefill throughput (a request alone). Decode: ``rate x output`` tokens
    per second over the best throughput whose step stays within the ITL target divided by
    measured/expected ITL (expected: the decode-only profile at the measured batch), at a
    context of prompt + output / 2. Dynamo sizes separate prefill and decode pools; our
    replicas do both, so their shares of a replica add up, and the ITL correction is what
    sees the prefill steps that delay every decoding sequence on an aggregated replica.
    """
    if last.requests == 0 or last.seconds <= 0:
        return 0.0
    rate = last.requests / last.seconds
    isl, osl = max(last.prompt_tokens, 1.0), last.output_tokens
    alone = prefill_seconds(engine, isl)
    p_correction = last.ttft_s / alone if last.ttft_s is not None and alone > 0 else 1.0
    context = isl + osl / 2
    expected_itl = decode_step_seconds(engine, max(last.batch, 1.0), context)
    d_correction = last.itl_s / expected_itl if last.itl_s is not None and expected_itl > 0 else 1.0
    prefill_capacity = isl / alone if alone > 0 else math.inf
    decode_capacity = decode_tokens_per_second(
        engine, planner_itl_s(engine) / max(d_correction, 1e-6), context
    )
    return rate * isl * min(1.0, p_correction) / prefill_capacity + rate * osl / decode_capacity


@dataclass(slots=True)
class DynamoLike:
    """NVIDIA Dynamo's SLA planner (throughput-based), every 180 s (module docstring)."""

    engine: EngineParams
    min_replicas: int
    max_replicas: int
    staleness_s: float = 2.0
    interval: float = DYNAMO_INTERVAL_S
    name: str = "dynamo"
    previous: Scrape | None = None
    """The scrape the last adjustment ended on (the first scrape before any)."""

    def tick(self, now: float, current: int, scrapes: Sequence[Scrape]) -> int:
        """Measure the interval since the last adjustment and size the next one."""
        low = max(self.min_replicas, 1)
        end = _latest(scrapes, now - self.staleness_s)
        start = self.previous if self.previous is not None else (scrapes[0] if scrapes else None)
        if end is None or start is None or end.at <= start.at:
            return _clamp(current, low, self.max_replicas)
        self.previous = end
        last = measure(start, end, scrapes)
        wanted = math.ceil(planner_replicas(self.engine, last) - 1e-9)
        return _clamp(wanted, low, self.max_replicas)

    def on_held(self, now: float, current: int) -> int | None:
        """Nothing: the planner acts only at its interval."""
        return None


def service_seconds(engine: EngineParams, request: Request, batch: float) -> float:
    """A request's time from admission to its last token with ``batch`` sequences running.

    First-order, from the latency model's step formula: one prefill step, then one decode
    step per further output token, each decoding sequence's context taken as the request's
    own prompt plus half its output. Used for how long a spilled request stays in flight at
    the provider.
    """
    prompt = max(request.prompt_tokens, 1)
    decode_step = decode_step_seconds(engine, batch, prompt + request.output_tokens / 2)
    prefill = (
        decode_step + engine.prefill_overhead_seconds + engine.prefill_seconds_per_token * prompt
    )
    return prefill + max(request.output_tokens - 1, 0) * decode_step


@dataclass(slots=True)
class Static:
    """A fixed replica count (the oracle's first replay, and the ``fixed`` baseline)."""

    replicas: int
    interval: float = 60.0
    name: str = "static"

    def tick(self, now: float, current: int, scrapes: Sequence[Scrape]) -> int:
        """Always the same."""
        return self.replicas

    def on_held(self, now: float, current: int) -> int | None:
        """Nothing."""
        return None


@dataclass(slots=True)
class Oracle:
    """Perfect foresight of the load (see the module docstring)."""

    needed: list[int]
    """Replicas the load needs in each ``interval``-second bucket."""
    cold_start_s: float
    min_replicas: int
    max_replicas: int
    interval: float = 2.0
    name: str = "oracle"

    @classmethod
    def from_load(
        cls,
        load: Sequence[float],
        *,
        target: float,
        cold_start_s: float,
        min_replicas: int,
        max_replicas: int,
        interval: float = 2.0,
    ) -> Oracle:
        """The oracle for a load foreseen per ``interval``-second bucket."""
        needed = [math.ceil(x / target - 1e-9) for x in load]
        return cls(needed, cold_start_s, min_replicas, max_replicas, interval)

    def wanted_at(self, now: float) -> int:
        """Replicas to have (ready or starting) at ``now``."""
        first = max(int(now // self.interval), 0)
        last = int((now + self.cold_start_s) // self.interval) + 1
        window = self.needed[first : last + 1]
        want = max(window) if window else 0
        return _clamp(want, self.min_replicas, self.max_replicas)

    def tick(self, now: float, current: int, scrapes: Sequence[Scrape]) -> int:
        """What the future needs."""
        return self.wanted_at(now)

    def on_held(self, now: float, current: int) -> int | None:
        """Nothing: the oracle was there first."""
        return None
