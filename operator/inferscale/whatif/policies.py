"""The autoscalers the what-if simulator compares: ours, three baselines and an oracle.

Each is a small object ticked by the simulator every ``interval`` seconds with the scrapes
taken so far and the current replica count; it returns the count it wants. They are modelled
on their systems' documented defaults (``shared/research/anchors-autoscaling.md``), with the
same bounds and, where they scale on requests, the same target per replica as ours, so the
comparison is about timing and logic, not about a better-chosen target:

- ``ours``: the real :func:`inferscale.autoscaler.policy.decide`, every 2 s, reading the scrape
  one interval old (what a Prometheus query sees), with ``time_to_ready_s`` = the cold start.
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

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from inferscale.autoscaler.policy import Decision, History, PolicyParams, Sample, decide
from inferscale.sim.model import EngineParams
from inferscale.whatif.trace import Request

POLICY_NAMES: Final = ("ours", "hpa", "keda", "kubeai", "fixed", "oracle")

HPA_SYNC_S: Final = 15.0
HPA_TOLERANCE: Final = 0.1
HPA_DOWN_STABILISATION_S: Final = 300.0
HPA_UTILISATION_WINDOW_S: Final = 30.0
KEDA_POLL_S: Final = 30.0
KEDA_COOLDOWN_S: Final = 300.0
KUBEAI_INTERVAL_S: Final = 10.0
KUBEAI_WINDOW_S: Final = 600.0
KUBEAI_DOWN_TICKS: Final = 3


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
            sample = Sample(
                at=s.at,
                in_flight=s.in_flight + s.spilled_in_flight,
                held=s.held,
                kv_cache_usage=s.kv_cache_usage,
                ready=s.ready,
                starting=s.starting,
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


def service_seconds(engine: EngineParams, request: Request, batch: float) -> float:
    """A request's time from admission to its last token with ``batch`` sequences running.

    First-order, from the latency model's step formula: one prefill step, then one decode
    step per further output token, each decoding sequence's context taken as the request's
    own prompt plus half its output. Used for how long a spilled request stays in flight at
    the provider.
    """
    prompt = max(request.prompt_tokens, 1)
    context = prompt + request.output_tokens / 2
    decode_step = (
        engine.step_base_seconds
        + engine.decode_seconds_per_seq * batch
        + engine.decode_seconds_per_context_token * context * batch
    )
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
