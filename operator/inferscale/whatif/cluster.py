"""The simulated cluster: replicas, the router and one autoscaler, in virtual time.

One :func:`simulate` call replays a trace against one policy. Time jumps from event to event
(arrival, scrape, policy tick, replica ready), nothing sleeps, and every replica is a
:class:`~inferscale.sim.model.LatencyModel` advanced to the event's time, so an hour of trace
takes seconds. What happens, in the order a real deployment does it:

- **Router**: a request goes to a ready replica chosen by the router's own picker for the
  run's ``strategy`` (:func:`~inferscale.router.picking.pick`: ``leastInFlight`` or
  ``leastPrefill``); with none ready it is held (FIFO) until one is, or spilled to the
  provider when spillover is on. With spillover on, a request is also spilled when every
  ready replica is saturated by the router's own rules
  (:func:`~inferscale.router.roles.saturated`, :func:`~inferscale.router.roles.prefill_saturated`):
  ``spill_in_flight_per_replica`` in flight (the route's ``spillover.inFlightPerReplica``,
  defaulting to the autoscaling target) or, when ``spill_prompt_tokens_per_replica`` is set,
  more prompt tokens without a first token than that once this request's are added (the
  route's ``spillover.promptTokensPerReplica``). The simulator counts exact prompt tokens
  where the router estimates them from the body's size.
  Requests longer than the engine accepts are rejected, as the engine would with a 400.
- **Scrapes** every ``scrape_interval_s``: in-flight, held, spilled, KV-cache use, GPU busy
  per ready replica, ready and starting counts, and the counters (arrivals, their tokens, the
  tokens spilled: the router's ``inferscale_router_spillover_tokens_total``). Policies read
  these (with their own lag).
- **Replicas**: a new one holds a GPU from the moment it is created and serves after
  ``cold_start_s``. One removed stops taking requests at once and finishes those it has
  (a graceful drain), holding its GPU until then; starting replicas go first (newest first),
  then the least busy ready ones, as a ReplicaSet picks them.
- **GPU-hours** count every replica's GPU time inside the trace's span (first to last
  arrival), so policies are charged over the same interval.

Pure: no clock, no I/O, deterministic (the picker's rotation is the request's index).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from inferscale.api.v1alpha1.inference_route import Strategy
from inferscale.protocol.defaults import IN_FLIGHT_PER_REPLICA
from inferscale.router import picking
from inferscale.router.roles import prefill_saturated, saturated
from inferscale.sim.model import EngineParams, LatencyModel, Seq
from inferscale.whatif.policies import Autoscaler, Scrape, service_seconds
from inferscale.whatif.trace import MOONCAKE_BLOCK_TOKENS, Request, Trace

# Outcomes of a request.
SERVED: Final = 0
SPILLED: Final = 1
REJECTED: Final = 2
UNFINISHED: Final = 3

_READY, _SCRAPE, _TICK = 0, 1, 2  # event kinds; at equal times they run in this order

SIM_STRATEGIES: Final[tuple[Strategy, ...]] = ("leastInFlight", "leastPrefill")
"""The router strategies the simulator replays (the others need prompts' text or weights)."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything about a what-if run except the trace and the policy."""

    engine: EngineParams
    """The replica's latency model; its own ``startup_delay_seconds`` is replaced."""
    cold_start_s: float = 60.0
    slo_ttft_s: float = 2.0
    target: float = float(IN_FLIGHT_PER_REPLICA)
    """In-flight requests per replica that the request-based policies aim at."""
    oracle_target: float | None = None
    """In-flight requests per replica the oracle keeps: sized by the SLO, never by ``target``
    (None: found on first use by ``compare.calibrate_target``; a run computes it once and
    sets it here so that every use reuses it)."""
    min_replicas: int = 1
    max_replicas: int = 20
    scale_to_zero_delay_s: float | None = None
    spillover: bool = False
    spill_in_flight_per_replica: float | None = None
    """Spill when every ready replica has this many in flight (None: ``target``)."""
    spill_prompt_tokens_per_replica: int | None = None
    """Also spill when every ready replica would have more prompt tokens than this waiting
    for their first token, this request's included (None: off)."""
    strategy: Strategy = "leastInFlight"
    """The router's picker: ``leastInFlight`` or ``leastPrefill``."""
    scrape_interval_s: float = 2.0
    initial_replicas: int = 1
    """Replicas ready at the start (the system was running before the trace begins)."""
    learned_floor_quantile: float | None = None
    """Our policy's ``learned_floor_quantile``, over its preset's (None: the preset's)."""
    ours_preset: str = "balanced"
    """The API preset the ``ours`` policy runs (``spec.autoscaling.preset``)."""
    gpu_hour_price: float | None = None
    """Per replica-hour, for our cost-aware mode (None: not priced, the mode falls back)."""
    spill_price_in: float | None = None
    spill_price_out: float | None = None
    """The provider's prices per million prompt and output tokens (None: not priced)."""
    spill_spend_cap_per_hour: float | None = None
    """The route's ``spend.maxPerHour`` for our cost-aware mode (None: no cap)."""
    drain_s: float | None = None
    """How long after the last arrival the run may go on finishing requests (None: the larger
    of 600 s and three cold starts)."""

    def __post_init__(self) -> None:
        if self.cold_start_s < 0 or self.slo_ttft_s <= 0 or self.target <= 0:
            raise ValueError("cold_start_s must be >= 0, slo_ttft_s and target > 0")
        if self.oracle_target is not None and self.oracle_target <= 0:
            raise ValueError("oracle_target must be > 0")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
        if self.scrape_interval_s <= 0:
            raise ValueError("scrape_interval_s must be > 0")
        if self.strategy not in SIM_STRATEGIES:
            raise ValueError(
                f"strategy {self.strategy!r} is not simulated; use one of "
                + ", ".join(SIM_STRATEGIES)
            )
        if self.spill_prompt_tokens_per_replica is not None and (
            self.spill_prompt_tokens_per_replica < 1
        ):
            raise ValueError("spill_prompt_tokens_per_replica must be >= 1")

    @property
    def spill_threshold(self) -> float:
        """In flight per ready replica at which requests spill."""
        if self.spill_in_flight_per_replica is None:
            return self.target
        return self.spill_in_flight_per_replica


@dataclass(slots=True, eq=False)
class Replica:
    """One simulated replica; reads as a picker ``Candidate``."""

    key: str
    model: LatencyModel
    created_at: float
    ready_at: float
    draining: bool = False
    stopped_at: float | None = None
    weight: int = 1
    queued: int = 0

    @property
    def pending_prompt_tokens(self) -> int:
        """Prompt tokens of the requests sent here that have no first token yet."""
        return self.model.pending_prompt_tokens

    @property
    def in_flight(self) -> int:
        """Requests running or waiting in the engine (sent by the router, not yet finished)."""
        return self.model.num_running + self.model.num_waiting

    @property
    def kv_usage(self) -> float:
        """The engine's KV-cache use."""
        return self.model.kv_usage


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """The cluster at one scrape."""

    at: float
    load: int
    """In flight plus held plus spilled in flight."""
    replicas: int
    """Replicas set (ready or starting; draining ones excluded)."""
    ready: int
    held: int


@dataclass(slots=True)
class RunResult:
    """Everything a run produced, for ``report`` and ``plots``."""

    policy: str
    trace: Trace
    config: SimConfig
    ttft: list[float]
    """Per request (trace order): seconds to the first token; inf when it never came."""
    outcome: list[int]
    """Per request: SERVED, SPILLED, REJECTED or UNFINISHED."""
    timeline: list[TimelinePoint]
    replica_spans: list[tuple[float, float]]
    """(created, stopped) per replica ever created, clipped to the run."""
    scale_events: int
    cold_starts: int
    horizon: float
    """The trace's span: GPU time is counted over [0, horizon]."""
    decisions: list[str] = field(default_factory=list)


def _block_hashes(request: Request, block_size: int) -> tuple[int, ...]:
    """The latency model's block hashes from Mooncake's 512-token block ids."""
    if not request.prefix_blocks:
        return ()
    per = max(MOONCAKE_BLOCK_TOKENS // block_size, 1)
    # Distinct per (trace block, position inside it); the chain makes equal prefixes equal.
    return tuple(b * 1_000_003 + j for b in request.prefix_blocks for j in range(per))


class _Cluster:
    """The mutable state of one run."""

    def __init__(self, trace: Trace, policy: Autoscaler, config: SimConfig) -> None:
        self.trace = trace
        self.policy = policy
        self.config = config
        self.engine = config.engine.model_copy(
            update={"startup_delay_seconds": config.cold_start_s}
        )
        self.requests = trace.requests
        n = len(self.requests)
        self.ttft = [math.inf] * n
        self.outcome = [UNFINISHED] * n
        self.seqs: dict[int, Seq] = {}
        self.alive: list[Replica] = []
        self.all_replicas: list[Replica] = []
        self.held: deque[int] = deque()
        self.spilled_until: list[float] = []
        self.scrapes: list[Scrape] = []
        self.timeline: list[TimelinePoint] = []
        self.events: list[tuple[float, int, int, Replica | None]] = []
        self.event_seq = 0
        self.scale_events = 0
        self.cold_starts = 0
        # The counters a scrape reports (see Scrape): arrivals, and the latencies of requests
        # as they get their first token (awaiting_first) and then finish (decoding).
        self.arrived = self.arrived_prompt_tokens = self.arrived_output_tokens = 0
        self.spilled_tokens = 0
        self.ttft_sum = self.itl_sum = 0.0
        self.ttft_count = self.itl_count = 0
        self.awaiting_first: list[int] = []
        self.decoding: list[int] = []
        self.horizon = trace.requests[-1].arrival
        drain = config.drain_s
        if drain is None:
            drain = max(600.0, 3 * config.cold_start_s)
        self.end = self.horizon + drain

    # ----- replicas ---------------------------------------------------------------------------

    def push(self, at: float, kind: int, replica: Replica | None = None) -> None:
        self.event_seq += 1
        heapq.heappush(self.events, (at, kind, self.event_seq, replica))

    def create(self, now: float, *, warm: bool = False) -> None:
        start = now - self.config.cold_start_s if warm else now
        model = LatencyModel(self.engine, start=start, seed=len(self.all_replicas))
        replica = Replica(f"r{len(self.all_replicas)}", model, now, model.ready_at)
        self.alive.append(replica)
        self.all_replicas.append(replica)
        if not warm:
            self.cold_starts += 1
        self.push(replica.ready_at, _READY, replica)

    def active(self) -> list[Replica]:
        return [r for r in self.alive if not r.draining]

    def ready(self, now: float) -> list[Replica]:
        return [r for r in self.alive if not r.draining and r.ready_at <= now]

    def stop(self, replica: Replica, now: float) -> None:
        replica.stopped_at = now
        self.alive.remove(replica)

    def apply(self, now: float, wanted: int) -> None:
        wanted = max(0, wanted)
        active = self.active()
        if wanted == len(active):
            return
        self.scale_events += 1
        if wanted > len(active):
            for _ in range(wanted - len(active)):
                self.create(now)
            return
        # A ReplicaSet removes pods not ready first (newest first), then the least busy.
        order = sorted(
            active,
            key=lambda r: (r.ready_at <= now, r.in_flight, -r.created_at),
        )
        for replica in order[: len(active) - wanted]:
            replica.draining = True
            if replica.in_flight == 0:
                self.stop(replica, now)

    def advance(self, now: float) -> None:
        for replica in list(self.alive):
            step_end = replica.model.next_event_time()
            if step_end is not None and step_end <= now:
                replica.model.advance(now)
            if replica.draining and replica.in_flight == 0:
                self.stop(replica, now)

    # ----- requests ---------------------------------------------------------------------------

    def fits(self, r: Request) -> bool:
        total = max(r.prompt_tokens, 1) + r.output_tokens
        return total <= self.engine.max_model_len and total <= self.engine.kv_capacity_tokens

    def dispatch(self, index: int, now: float, candidates: Sequence[Replica]) -> None:
        r = self.requests[index]
        replica = picking.pick(self.config.strategy, candidates, counter=index)
        hashes = _block_hashes(r, self.engine.block_size)
        self.seqs[index] = replica.model.submit(
            now, max(r.prompt_tokens, 1), r.output_tokens, hashes
        )
        self.outcome[index] = SERVED
        self.awaiting_first.append(index)

    def spill(self, index: int, now: float) -> None:
        r = self.requests[index]
        self.outcome[index] = SPILLED
        self.ttft[index] = 0.0
        # The router's spilled-token counters (the provider's usage: prompt and output).
        self.spilled_tokens += r.prompt_tokens + r.output_tokens
        # The provider holds it about as long as a replica at the target batch would.
        heapq.heappush(
            self.spilled_until, now + service_seconds(self.engine, r, self.config.target)
        )

    def arrive(self, index: int, now: float) -> None:
        r = self.requests[index]
        if not self.fits(r):
            self.outcome[index] = REJECTED
            self.ttft[index] = math.nan
            return
        self.arrived += 1
        self.arrived_prompt_tokens += r.prompt_tokens
        self.arrived_output_tokens += r.output_tokens
        candidates = self.ready(now)
        config = self.config
        if config.spillover and (
            not candidates
            or saturated([c.in_flight for c in candidates], math.ceil(config.spill_threshold))
            or prefill_saturated(
                [c.pending_prompt_tokens for c in candidates],
                max(r.prompt_tokens, 1),
                config.spill_prompt_tokens_per_replica,
            )
        ):
            self.spill(index, now)
            return
        if candidates:
            self.release_held(now)  # first come, first served
            self.dispatch(index, now, candidates)
            return
        self.held.append(index)
        if len(self.held) == 1:
            wanted = self.policy.on_held(now, len(self.active()))
            if wanted is not None:
                self.apply(now, wanted)

    def release_held(self, now: float) -> None:
        candidates = self.ready(now)
        while self.held and candidates:
            self.dispatch(self.held.popleft(), now, candidates)

    # ----- scrapes and ticks ------------------------------------------------------------------

    def observe_latencies(self) -> None:
        """Count the first tokens and the finished requests since the last scrape."""
        awaiting: list[int] = []
        for index in self.awaiting_first:
            seq = self.seqs[index]
            if seq.first_token_at is not None:
                self.ttft_sum += seq.first_token_at - self.requests[index].arrival
                self.ttft_count += 1
                self.decoding.append(index)
            elif seq.finished_at is None:
                awaiting.append(index)
        self.awaiting_first = awaiting
        decoding: list[int] = []
        for index in self.decoding:
            seq = self.seqs[index]
            if seq.finished_at is None:
                decoding.append(index)
            elif seq.first_token_at is not None and seq.output_tokens > 1:
                self.itl_sum += seq.finished_at - seq.first_token_at
                self.itl_count += seq.output_tokens - 1
        self.decoding = decoding

    def scrape(self, now: float) -> None:
        # A spilled request counts if it was in flight at any time since the last scrape, as a
        # rate over the scrape interval would see it: a short one is demand all the same.
        since = self.scrapes[-1].at if self.scrapes else now
        self.observe_latencies()
        while self.spilled_until and self.spilled_until[0] <= since:
            heapq.heappop(self.spilled_until)
        active = self.active()
        ready = [r for r in active if r.ready_at <= now]
        in_flight = sum(r.in_flight for r in self.alive)
        # What the router's inferscale_router_pending_prompt_tokens gauge sums (exact here),
        # plus the held requests' prompts: they wait for a first token too.
        pending = sum(r.pending_prompt_tokens for r in self.alive) + sum(
            max(self.requests[i].prompt_tokens, 1) for i in self.held
        )
        kv = sum(r.kv_usage for r in ready) / len(ready) if ready else None
        busy = tuple(r.model.next_event_time() is not None for r in ready)
        scrape = Scrape(
            at=now,
            in_flight=in_flight,
            held=len(self.held),
            spilled_in_flight=len(self.spilled_until),
            pending_prompt_tokens=pending,
            kv_cache_usage=kv,
            busy=busy,
            ready=len(ready),
            starting=len(active) - len(ready),
            arrived=self.arrived,
            arrived_prompt_tokens=self.arrived_prompt_tokens,
            arrived_output_tokens=self.arrived_output_tokens,
            spilled_tokens=self.spilled_tokens,
            ttft_sum=self.ttft_sum,
            ttft_count=self.ttft_count,
            itl_sum=self.itl_sum,
            itl_count=self.itl_count,
        )
        self.scrapes.append(scrape)
        load = in_flight + len(self.held) + len(self.spilled_until)
        self.timeline.append(TimelinePoint(now, load, len(active), len(ready), len(self.held)))

    def drained(self, next_arrival: int) -> bool:
        return (
            next_arrival >= len(self.requests)
            and not self.held
            and all(r.in_flight == 0 for r in self.alive)
        )

    # ----- the loop ---------------------------------------------------------------------------

    def run(self) -> RunResult:
        config = self.config
        for _ in range(config.initial_replicas):
            self.create(0.0, warm=True)
        self.push(0.0, _SCRAPE)
        self.push(0.0, _TICK)
        next_arrival = 0
        n = len(self.requests)
        while True:
            t_arrival = self.requests[next_arrival].arrival if next_arrival < n else math.inf
            t_event = self.events[0][0] if self.events else math.inf
            now = min(t_arrival, t_event)
            if now > self.end or (now > self.horizon and self.drained(next_arrival)):
                break
            self.advance(now)
            if t_event <= t_arrival:
                _, kind, _, replica = heapq.heappop(self.events)
                if kind == _READY:
                    if replica is not None and replica.stopped_at is None:
                        self.release_held(now)
                elif kind == _SCRAPE:
                    self.scrape(now)
                    self.push(now + config.scrape_interval_s, _SCRAPE)
                else:
                    wanted = self.policy.tick(now, len(self.active()), self.scrapes)
                    self.apply(now, wanted)
                    self.release_held(now)  # a policy may only now have left some replica
                    self.push(now + self.policy.interval, _TICK)
            else:
                self.arrive(next_arrival, now)
                next_arrival += 1
        return self.result(now)

    def result(self, now: float) -> RunResult:
        last = min(now, self.end)
        self.advance(last)
        for index, seq in self.seqs.items():
            if seq.first_token_at is not None:
                self.ttft[index] = seq.first_token_at - self.requests[index].arrival
            elif seq.output_tokens == 0 and seq.finished_at is not None:
                self.ttft[index] = seq.finished_at - self.requests[index].arrival
            else:
                self.outcome[index] = UNFINISHED
        spans = [
            (r.created_at, r.stopped_at if r.stopped_at is not None else last)
            for r in self.all_replicas
        ]
        decisions = [d.reason for d in getattr(self.policy, "decisions", [])]
        return RunResult(
            policy=self.policy.name,
            trace=self.trace,
            config=self.config,
            ttft=self.ttft,
            outcome=self.outcome,
            timeline=self.timeline,
            replica_spans=spans,
            scale_events=self.scale_events,
            cold_starts=self.cold_starts,
            horizon=self.horizon,
            decisions=decisions,
        )


def simulate(trace: Trace, policy: Autoscaler, config: SimConfig) -> RunResult:
    """Replay ``trace`` against ``policy``; deterministic for the same inputs."""
    return _Cluster(trace, policy, config).run()
